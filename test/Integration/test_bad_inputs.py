"""Every bad input to a model executable: one message naming the file, the
place (tensor, key) and the problem, exit status 1 (2 for a bad command
line), no partial output file, and no finding from AddressSanitizer or
UndefinedBehaviorSanitizer: the executable links the sanitized runtime
(`moec --sanitize`).
"""

import json
import os
import pathlib
import re
import resource
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from artifacts import moec, run, safetensors_bytes  # noqa: E402

MODEL = """\
name: tiny
d_model: 8
seq_len: 4
blocks:
  - layer: moe
    norm: rms
    experts: 4
    d_ff: 16
    top_k: 2
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(sanitized executable, good weights {name: array}, workdir)."""
    work = tmp_path_factory.mktemp("bad-inputs")
    (work / "tiny.yaml").write_text(MODEL)
    exe = work / "tiny"
    moec(work / "tiny.yaml", "-o", exe, "--sanitize")
    proc = run(exe, "--save-weights", work / "good.safetensors", sanitized=True)
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(0)
    weights = {
        "blocks.0.norm.weight": np.ones(8, np.float32),
        "blocks.0.router.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "blocks.0.experts.w1": rng.standard_normal((4, 8, 16)).astype(np.float32),
        "blocks.0.experts.w2": rng.standard_normal((4, 16, 8)).astype(np.float32),
    }
    return exe, weights, work


def expect_error(proc, *fragments, code=1):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


def check_no_outputs(work, *names):
    for name in names:
        assert not (work / name).exists()
        assert not list(work.glob(name + ".tmp-*"))


def expect_bad_file(exe, work, flag, name, data, fragments):
    """Runs `exe flag FILE --output ...` on a FILE holding `data`: one error
    naming FILE and each of `fragments`, and no output left behind."""
    path = work / name
    path.write_bytes(data)
    out = f"{name}-out.npy"
    proc = run(exe, flag, path, "--output", work / out, sanitized=True)
    expect_error(proc, f"'{path}'", *fragments)
    check_no_outputs(work, out)


def _bytes_without(weights, name):
    return safetensors_bytes({k: v for k, v in weights.items() if k != name})


def _bytes_with(weights, name, value):
    return safetensors_bytes({**weights, name: value})


def _with_trailing_bytes(weights, junk):
    data = safetensors_bytes(weights)
    return data + junk


WEIGHT_CASES = {
    "missing-weight": (lambda w: _bytes_without(w, "blocks.0.router.weight"),
                       ["weight 'blocks.0.router.weight' is missing"]),
    "mis-shaped": (lambda w: _bytes_with(w, "blocks.0.experts.w1", np.zeros((4, 16, 8), np.float32)),
                   ["weight 'blocks.0.experts.w1' has shape [4, 16, 8], expected [4, 8, 16]"]),
    "wrong-dtype": (lambda w: _bytes_with(w, "blocks.0.router.weight", np.zeros((8, 4), np.float16)),
                    ["weight 'blocks.0.router.weight' has dtype F16, expected F32"]),
    "truncated": (lambda w: safetensors_bytes(w)[:-100],
                  ["tensor 'blocks.0.", "lie outside the"]),
    "shorter-than-header-length": (lambda w: b"\x10\x00\x00",
                                   ["truncated: a safetensors file starts with an 8-byte header length"]),
    "header-length-past-end": (lambda w: (10**6).to_bytes(8, "little") + b"{}",
                               ["the header length (1000000 bytes) runs past the end of the file (10 bytes)"]),
    "bad-json": (lambda w: (9).to_bytes(8, "little") + b'{"a": [1,',
                 ["bad JSON header"]),
    "header-not-object": (lambda w: (2).to_bytes(8, "little") + b"[]",
                          ["the JSON header is not an object"]),
    "offsets-outside-data": (lambda w: safetensors_bytes(w, {"blocks.0.norm.weight": {
        "dtype": "F32", "shape": [8], "data_offsets": [10**9, 10**9 + 32]}}),
        ["tensor 'blocks.0.norm.weight': data_offsets [1000000000, 1000000032] lie outside"]),
    "offsets-reversed": (lambda w: safetensors_bytes(w, {"blocks.0.norm.weight": {
        "dtype": "F32", "shape": [8], "data_offsets": [32, 0]}}),
        ["tensor 'blocks.0.norm.weight': data_offsets must be [begin, end]"]),
    "offsets-disagree-with-shape": (lambda w: safetensors_bytes(w, {"blocks.0.norm.weight": {
        "dtype": "F32", "shape": [9], "data_offsets": [0, 32]}}),
        ["tensor 'blocks.0.norm.weight': data_offsets cover 32 bytes, but shape [9] of F32 needs 36"]),
    "unknown-dtype": (lambda w: safetensors_bytes(w, {"blocks.0.norm.weight": {
        "dtype": "F99", "shape": [8], "data_offsets": [0, 32]}}),
        ["tensor 'blocks.0.norm.weight': unknown dtype 'F99'"]),
    "negative-dimension": (lambda w: safetensors_bytes(w, {"blocks.0.norm.weight": {
        "dtype": "F32", "shape": [-8], "data_offsets": [0, 32]}}),
        ["tensor 'blocks.0.norm.weight': the shape must hold non-negative integers"]),
    "huge-shape": (lambda w: safetensors_bytes(w, {"blocks.0.norm.weight": {
        "dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 32]}}),
        ["tensor 'blocks.0.norm.weight': shape is too large"]),
    # The format's own rule: the tensors tile the data, no overlaps or holes.
    "overlapping-tensors": (lambda w: safetensors_bytes(w, {"blocks.0.router.weight": {
        "dtype": "F32", "shape": [8, 4], "data_offsets": [0, 128]}}),
        ["tensor 'blocks.0.router.weight': data_offsets [0, 128] overlap another tensor's"]),
    "bytes-after-the-tensors": (lambda w: _with_trailing_bytes(w, b"junk"),
                                ["4 bytes of data after the last tensor"]),
    "metadata-not-strings": (lambda w: safetensors_bytes(w, {"__metadata__": {"step": 1}}),
                             ["__metadata__ must map names to strings"]),
}


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_bad_weights(tiny, case):
    exe, weights, work = tiny
    make, fragments = WEIGHT_CASES[case]
    expect_bad_file(exe, work, "--weights", f"{case}.safetensors", make(weights), fragments)


def test_missing_weights_file(tiny):
    exe, _, work = tiny
    proc = run(exe, "--weights", work / "nope.safetensors", sanitized=True)
    expect_error(proc, f"cannot read weights '{work / 'nope.safetensors'}'",
                 "No such file or directory")


def test_good_weights_file_runs(tiny):
    exe, weights, work = tiny
    path = work / "crafted.safetensors"
    path.write_bytes(safetensors_bytes(weights))
    proc = run(exe, "--weights", path, "--batch", 2, sanitized=True)
    assert proc.returncode == 0, proc.stderr
    assert "tiny: y [2, 4, 8] f32" in proc.stdout


def _npy(array, **kwargs):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def _npy_with_header(header, array):
    # Version 1.0: magic, version, header length, header padded with spaces
    # and a newline to a multiple of 64 bytes.
    text = header + " " * (-(10 + len(header) + 1) % 64) + "\n"
    return (b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()
            + array.tobytes())


NPY_CASES = {
    "wrong-shape": (lambda: _npy(np.zeros((1, 5, 8), np.float32)),
                    ["input has shape [1, 5, 8], expected [B, 4, 8] with B >= 1"]),
    "wrong-rank": (lambda: _npy(np.zeros((4, 8), np.float32)),
                   ["input has shape [4, 8], expected [B, 4, 8]"]),
    "empty-batch": (lambda: _npy(np.zeros((0, 4, 8), np.float32)),
                    ["input has shape [0, 4, 8]"]),
    "wrong-dtype": (lambda: _npy(np.zeros((1, 4, 8), np.float64)),
                    ["unsupported dtype '<f8'"]),
    "integer-dtype": (lambda: _npy(np.zeros((1, 4, 8), np.int32)),
                      ["unsupported dtype '<i4'"]),
    "big-endian": (lambda: _npy(np.zeros((1, 4, 8), ">f4")),
                   ["big-endian data ('>f4') is not supported"]),
    "truncated-data": (lambda: _npy(np.zeros((1, 4, 8), np.float32))[:-7],
                       ["truncated: shape [1, 4, 8] needs 128 bytes of data, the file has 121"]),
    "trailing-data": (lambda: _npy(np.zeros((1, 4, 8), np.float32)) + b"xx",
                      ["2 bytes of trailing data"]),
    "truncated-header": (lambda: _npy(np.zeros((1, 4, 8), np.float32))[:40],
                         ["truncated: the header claims"]),
    "not-npy": (lambda: b"hello, world",
                ["not an npy file"]),
    "bad-header": (lambda: b"\x93NUMPY\x01\x00\x10\x00{'descr': 1234}\n",
                   ["bad npy header: 'descr' must be a string"]),
    "fortran-order": (lambda: _npy(np.asfortranarray(np.zeros((1, 4, 8), np.float32))),
                      ["Fortran-order arrays are not supported"]),
    "unknown-version": (lambda: b"\x93NUMPY\x07\x00" + b"\x00" * 16,
                        ["unsupported npy version 7"]),
    "duplicate-key": (lambda: _npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 8), 'shape': (1, 4, 8), }",
        np.zeros((1, 4, 8), np.float32)),
        ["bad npy header: duplicate key 'shape'"]),
    "huge-dimension": (lambda: _npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 4503599627370496), }",
        np.zeros(0, np.float32)),
        ["'shape' has a dimension too large (4503599627370496)"]),
}


@pytest.mark.parametrize("case", sorted(NPY_CASES))
def test_bad_input_npy(tiny, case):
    exe, _, work = tiny
    make, fragments = NPY_CASES[case]
    expect_bad_file(exe, work, "--input", f"{case}.npy", make(), fragments)


def test_missing_input_file(tiny):
    exe, _, work = tiny
    proc = run(exe, "--input", work / "nope.npy", sanitized=True)
    expect_error(proc, f"cannot read '{work / 'nope.npy'}'", "No such file or directory")


@pytest.mark.parametrize("flag, what", [("--weights", "weights "), ("--input", "")])
def test_devices_are_refused_and_pipes_read(tiny, flag, what):
    # /dev/zero would be read until memory runs out; a pipe is read until
    # its writer closes it.
    exe, _, work = tiny
    expect_error(run(exe, flag, "/dev/zero", sanitized=True),
                 f"cannot read {what}'/dev/zero': not a regular file or a pipe")
    source = work / "good.safetensors"
    if flag == "--input":
        source = work / "piped.npy"
        np.save(source, np.random.default_rng(2).standard_normal((3, 4, 8)).astype(np.float32))
    direct = run(exe, flag, source, "--output", work / "direct.npy", sanitized=True)
    assert direct.returncode == 0, direct.stderr
    with open(source, "rb") as f:
        piped = subprocess.run([str(exe), flag, "/dev/stdin", "--output", str(work / "piped.npy")],
                               stdin=f, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    np.testing.assert_array_equal(np.load(work / "piped.npy"), np.load(work / "direct.npy"))


def test_outputs_into_pipes_and_devices(tiny):
    # Written in place: a temporary file and a rename would replace the pipe
    # (or /dev/null) with a regular file.
    exe, _, work = tiny
    fifo = work / "out.fifo"
    os.mkfifo(fifo)
    received = {}
    reader = threading.Thread(target=lambda: received.update(data=fifo.read_bytes()))
    reader.start()
    proc = run(exe, "--batch", 2, "--output", fifo, "--stats", "/dev/null",
               "--save-weights", "/dev/null", sanitized=True)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    direct = run(exe, "--batch", 2, "--output", work / "direct.npy", sanitized=True)
    assert direct.returncode == 0, direct.stderr
    assert received["data"] == (work / "direct.npy").read_bytes()


@pytest.mark.parametrize("flag", ["--output", "--stats", "--save-weights"])
def test_unwritable_outputs(tiny, flag):
    exe, _, work = tiny
    missing_dir = work / "no-such-dir" / "file"
    proc = run(exe, flag, missing_dir, sanitized=True)
    expect_error(proc, f"cannot write '{missing_dir}'", "No such file or directory")
    # A directory in the way; the other outputs must not appear either.
    others = [f for f in ("--output", "--stats", "--save-weights") if f != flag]
    names = [f"dir-case{flag}{i}" for i in range(len(others))]
    extra = [arg for f, n in zip(others, names) for arg in (f, work / n)]
    proc = run(exe, flag, work, *extra, sanitized=True)
    expect_error(proc, f"cannot write '{work}'", "Is a directory")
    check_no_outputs(work, *names)


@pytest.mark.parametrize("args, fragment", [
    (["--batch", "0"], "option '--batch' needs an integer >= 1, got '0'"),
    (["--batch", "x"], "option '--batch' needs an integer >= 1, got 'x'"),
    (["--bench"], "option '--bench' needs a value"),
    (["--frobnicate", "1"], "unknown option '--frobnicate'"),
    (["stray"], "unexpected argument 'stray'"),
    (["--weights", "w", "--seed", "1"], "--weights and --seed exclude each other"),
    (["--input", "x.npy", "--batch", "2"], "--input and --batch exclude each other"),
])
def test_bad_command_lines(tiny, args, fragment):
    exe, _, _ = tiny
    expect_error(run(exe, *args, sanitized=True), fragment, code=2)


@pytest.mark.parametrize("args, fragment", [
    (["--weights", ""], "option '--weights' needs a non-empty path"),
    (["--output", ""], "option '--output' needs a non-empty path"),
    (["--batch", "1", "--batch", "2"], "option '--batch' is given twice"),
    (["--threads", "100000"], "option '--threads' needs an integer in [1, 1024], got '100000'"),
    (["--frob"], "unknown option '--frob'"),
    (["--seed", "18446744073709551616"],
     "option '--seed' needs an integer in [0, 2^64), got '18446744073709551616'"),
    (["--seed", "-1"], "option '--seed' needs an integer in [0, 2^64), got '-1'"),
    (["--output", "o.npy", "--stats", "./o.npy"],
     "options '--output' and '--stats' name the same file './o.npy'"),
    (["--stats", "s.json", "--save-weights", "s.json"],
     "options '--stats' and '--save-weights' name the same file 's.json'"),
])
def test_more_bad_command_lines(tiny, args, fragment):
    exe, _, _ = tiny
    expect_error(run(exe, *args, sanitized=True), fragment, code=2)


BIG = """\
name: big
d_model: 1
seq_len: 1048576
blocks:
  - layer: ffn
    d_ff: 16777216
"""


def test_out_of_memory_is_an_error_not_a_crash(tmp_path):
    # Under a 2 GiB address-space limit (no sanitizer, which needs more): the
    # compiled code's allocation of the hidden activations [2^20, 2^24] fails,
    # and so does the runtime's own of an input of 10^12 sequences.
    def limited(*cmd):
        def cap():
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              preexec_fn=cap)
    (tmp_path / "big.yaml").write_text(BIG)
    moec(tmp_path / "big.yaml", "-o", tmp_path / "big")
    expect_error(limited(tmp_path / "big", "--batch", "1"),
                 "out of memory: the run could not allocate")
    (tmp_path / "tiny.yaml").write_text(MODEL)
    moec(tmp_path / "tiny.yaml", "-o", tmp_path / "tiny")
    expect_error(limited(tmp_path / "tiny", "--batch", "1000000000000"), "out of memory")
    # A batch whose input is more bytes than 64 bits count.
    expect_error(limited(tmp_path / "tiny", "--batch", str(2**60)),
                 f"out of memory: an input of {2**60} sequences [4, 8] is more bytes than")


def test_non_finite_input_gives_nan_rows_not_a_crash(tiny):
    exe, _, work = tiny
    x = np.random.default_rng(1).standard_normal((2, 4, 8)).astype(np.float32)
    x[1, 2, 3] = np.nan
    np.save(work / "nan.npy", x)
    proc = run(exe, "--input", work / "nan.npy", "--output", work / "nan-out.npy",
               "--stats", work / "nan-stats.json", sanitized=True)
    assert proc.returncode == 0, proc.stderr
    y = np.load(work / "nan-out.npy")
    assert np.isnan(y[1, 2]).all()
    assert np.isfinite(np.delete(y.reshape(8, 8), 6, axis=0)).all()
    assert re.search(r"\b8 non-finite", proc.stdout), proc.stdout
    # The losses (averaged over the sequences) are NaN, null in JSON; the
    # token is unrouted; the other sequence is routed exactly as without it.
    block, = json.loads((work / "nan-stats.json").read_text())["blocks"]
    assert block["aux_loss"] is None and block["z_loss"] is None, block
    assert block["unrouted"] == 1, block
    clean = x.copy()
    clean[1, 2, 3] = 0.0
    np.save(work / "clean.npy", clean)
    proc = run(exe, "--input", work / "clean.npy", "--output", work / "clean-out.npy",
               sanitized=True)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(y[0], np.load(work / "clean-out.npy")[0])
