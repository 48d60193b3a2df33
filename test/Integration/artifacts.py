"""Helpers for the tests of moec and its artifacts: running moec, reading and
writing safetensors files with numpy, and the parsed model description the
reference's `model_forward` takes."""

import json
import os
import pathlib
import subprocess

import ml_dtypes
import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("SWITCHYARD_BUILD_DIR", ROOT / "build"))
MOEC = BUILD / "bin" / "moec"
EXAMPLES = ROOT / "examples"

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16,
                      "BF16": ml_dtypes.bfloat16, "I64": np.int64}
# Sanitizer reports get their own exit codes, so a test can tell a clean
# error exit (1) from a sanitizer finding.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "exitcode=86:detect_leaks=1:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:exitcode=87:print_stacktrace=1",
}


def moec(*args, check=True):
    proc = subprocess.run([str(MOEC), *map(str, args)], capture_output=True,
                          text=True)
    if check and proc.returncode:
        raise AssertionError(f"moec {' '.join(map(str, args))} failed:\n"
                             f"{proc.stderr}")
    return proc


def run(exe, *args, sanitized=False):
    env = dict(os.environ)
    if sanitized:
        env.update(SANITIZER_ENV)
    return subprocess.run([str(exe), *map(str, args)], capture_output=True,
                          text=True, env=env)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        out[name] = np.asarray(data[begin:end]).view(dtype).reshape(info["shape"])
    return out


def safetensors_bytes(tensors, header_override=None):
    """A safetensors file of `tensors` (name -> array); `header_override`
    replaces entries of the JSON header to craft broken files."""
    names = {np.dtype(v): k for k, v in SAFETENSORS_DTYPES.items()}
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.asarray(array)  # (ascontiguousarray makes 0-d arrays 1-d)
        raw = array.tobytes(order="C")
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header.update(header_override or {})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def load_model(path):
    """The parsed YAML, with the importer's defaults made explicit where the
    reference's defaults differ (none today)."""
    return yaml.safe_load(pathlib.Path(path).read_text())


NUMPY_DTYPES = {"f32": np.float32, "bf16": ml_dtypes.bfloat16, "f16": np.float16}


def parse_weight_list(lines):
    """`moec --list-weights` output -> {name: (shape, dtype)}."""
    specs = {}
    for line in lines:
        name, rest = line.split(" [", 1)
        shape_text, dtype = rest.rsplit("] ", 1)
        specs[name] = (tuple(int(d) for d in shape_text.split(", ") if d), dtype)
    return specs


def draw_weights(rng, specs):
    """Random weights {name: array} for {name: (shape, dtype)}, scaled like an
    initialized model so activations stay O(1)."""
    weights = {}
    for name, (shape, dtype) in specs.items():
        fan_in = shape[-2] if len(shape) >= 2 else 1
        if name.endswith("soft.scale"):
            value = rng.uniform(0.5, 2.0, size=shape)
        elif name.endswith("norm.weight"):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        weights[name] = np.asarray(value, np.float32).astype(NUMPY_DTYPES[dtype])
    return weights


def rel_error(y, expected):
    y = np.asarray(y, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    denom = np.linalg.norm(expected)
    return np.linalg.norm(y - expected) / (denom if denom else 1.0)
