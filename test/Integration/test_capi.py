"""The shared library (`moec --emit=lib`) through its generated header: a C
program (capi_test.c) creates models from buffers, files and seeds, runs them
(also from four threads at once), reads statistics and checks every error
path; its output with the buffer weights is compared with the reference.
Both the library's runtime and the program are built with AddressSanitizer
and UndefinedBehaviorSanitizer.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "reference"))

import moe_reference as ref  # noqa: E402
from artifacts import SANITIZER_ENV, load_model, moec, rel_error  # noqa: E402

MODEL = """\
name: capi
d_model: 16
seq_len: 8
blocks:
  - layer: ffn
    norm: rms
    d_ff: 32
    activation: gelu
  - layer: moe
    norm: layer
    experts: 4
    d_ff: 16
    top_k: 2
    capacity_factor: 1.0
"""


def test_library_through_its_header(tmp_path):
    (tmp_path / "capi.yaml").write_text(MODEL)
    lib = tmp_path / "libmodel.so"
    moec(tmp_path / "capi.yaml", "--emit=lib", "--sanitize", "-o", lib)
    assert (tmp_path / "libmodel.h").exists()
    exe = tmp_path / "capi_test"
    subprocess.run(["clang-22", "-std=c11", "-Wall", "-Werror", "-g",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-I", tmp_path, HERE / "capi_test.c", lib,
                    f"-Wl,-rpath,{tmp_path}", "-lpthread", "-lm", "-o", exe],
                   check=True)
    env = dict(os.environ, **SANITIZER_ENV)
    proc = subprocess.run([exe, tmp_path], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the library never prints

    # The buffer weights, as capi_test.c computes them.
    listed = moec(tmp_path / "capi.yaml", "--list-weights").stdout.splitlines()
    weights = {}
    for w, line in enumerate(listed):
        name, rest = line.split(" [", 1)
        shape = tuple(int(d) for d in rest.rsplit("] ", 1)[0].split(", ") if d)
        i = np.arange(int(np.prod(shape)), dtype=np.float64)
        weights[name] = (0.25 * np.sin(0.37 * i + w)).astype(np.float32).reshape(shape)
    x = np.fromfile(tmp_path / "x.bin", dtype=np.float32).reshape(3, 8, 16)
    expected_x = np.cos(0.11 * np.arange(3 * 8 * 16)).astype(np.float32).reshape(3, 8, 16)
    np.testing.assert_array_equal(x, expected_x)
    y = np.fromfile(tmp_path / "y.bin", dtype=np.float32).reshape(3, 8, 16)
    expected, stats = ref.model_forward(load_model(tmp_path / "capi.yaml"), weights, x)
    assert rel_error(y, expected) < 1e-5
    # The moe block's statistics, as sy_stats_get returned them.
    fields = (tmp_path / "stats.txt").read_text().split()
    capacity, dropped, unrouted = map(int, fields[:3])
    aux, z, usage = map(float, fields[3:6])
    counts = [int(c) for c in fields[6:]]
    assert capacity == stats[1]["capacity"] == 4  # ceil(2 * 8 * 1.0 / 4)
    assert dropped == stats[1]["dropped"] and unrouted == stats[1]["unrouted"]
    assert counts == list(stats[1]["kept_per_expert"])
    assert aux == pytest.approx(stats[1]["aux_loss"], rel=1e-5)
    assert z == pytest.approx(stats[1]["z_loss"], rel=1e-5)
    assert usage == pytest.approx(sum(counts) / (4 * capacity * 3), rel=1e-8)
