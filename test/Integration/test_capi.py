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


def test_out_of_memory_with_openmp_levels(tmp_path):
    """An allocation that fails at the run's top level is an error even when
    the host calls the run from its own OpenMP region; one that fails inside
    the compiled code's parallel region, even a region of one thread, aborts
    with a message (oom_test.c)."""
    (tmp_path / "capi.yaml").write_text(MODEL)
    lib = tmp_path / "libmodel.so"
    moec(tmp_path / "capi.yaml", "--emit=lib", "-o", lib)
    exe = tmp_path / "oom_test"
    subprocess.run(["clang-22", "-std=c11", "-Wall", "-Werror", "-g", "-fopenmp",
                    "-I", tmp_path, HERE / "oom_test.c", lib, f"-Wl,-rpath,{tmp_path}",
                    "-ldl", "-o", exe], check=True)
    host = subprocess.run([exe, "host"], capture_output=True, text=True)
    assert host.returncode == 0, host.stderr
    region = subprocess.run([exe, "region"], capture_output=True, text=True)
    assert region.returncode == -6, (region.returncode, region.stderr)  # SIGABRT
    assert region.stderr.startswith("switchyard: out of memory: the compiled code could "
                                    "not allocate"), region.stderr
    assert region.stderr.rstrip().endswith("bytes in a parallel region"), region.stderr


UNLOAD = """\
import ctypes, _ctypes, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                "keepcost".split()]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2


def in_use():
    # Bytes malloc has handed out and not had back (not the resident set,
    # which keeps what glibc's arenas do not return to the system).
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd

vp = ctypes.c_void_p
x = np.random.default_rng(0).standard_normal((1, 2048, 64)).astype(np.float32)
y = np.empty_like(x)
for cycle in range(9):
    lib = ctypes.CDLL(sys.argv[1])
    lib.sy_model_create_random.argtypes = [ctypes.c_uint64, ctypes.POINTER(vp), vp]
    lib.sy_model_run.argtypes = [vp, ctypes.c_int64, vp, vp, vp, vp]
    lib.sy_model_destroy.argtypes = [vp]
    model = vp()
    assert lib.sy_model_create_random(0, ctypes.byref(model), None) == 0
    assert lib.sy_model_run(model, 1, x.ctypes.data, y.ctypes.data, None, None) == 0
    lib.sy_model_destroy(model)
    _ctypes.dlclose(lib._handle)
    del lib
    if cycle == 0:
        first = in_use()
print(in_use() - first)
"""


def test_unloading_a_library_returns_its_cache(tmp_path):
    """A server that unloads and reloads a model (dlclose) gets the freed
    buffers the library's allocator kept back: they are not lost with it."""
    (tmp_path / "big.yaml").write_text(
        "name: big\nd_model: 64\nseq_len: 2048\nblocks:\n  - layer: ffn\n    d_ff: 4096\n")
    lib = tmp_path / "libbig.so"
    moec(tmp_path / "big.yaml", "--emit=lib", "-o", lib)
    (tmp_path / "unload.py").write_text(UNLOAD)
    proc = subprocess.run([sys.executable, tmp_path / "unload.py", lib], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    # Each reload that lost the cache left its buffers (the hidden
    # activations and the rest of a run's) allocated and unreachable: 8
    # reloads grew by 309 MiB; with the cache released, by 18 KiB.
    growth = int(proc.stdout)
    assert growth < 16 << 20, growth
