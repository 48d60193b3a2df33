"""The element functions as compiled: exp and erf, which the CPU pipeline
expands into polynomials (switchyard-approximate-math), against float64.

Each runs as an all-parallel linalg.generic over a [rows, 64] tensor, so the
vectorized epilogue path computes it, and over a [n] tensor of odd length,
whose scalar loop takes the element-by-element path; both must give the
same bits and stay within a few ulp of the exact value, with NaN, the
infinities and the signs of zero as libm gives them.
"""

import math
import pathlib
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import compile_function  # noqa: E402

FUNCTION = """
func.func @apply(%x: tensor<{shape}xf32>) -> tensor<{shape}xf32>
    attributes {{llvm.emit_c_interface}} {{
  %init = tensor.empty() : tensor<{shape}xf32>
  %y = linalg.generic {{indexing_maps = [{map}, {map}],
                       iterator_types = [{iterators}]}}
      ins(%x : tensor<{shape}xf32>) outs(%init : tensor<{shape}xf32>) {{
  ^bb0(%a: f32, %b: f32):
    %r = math.{op} %a : f32
    linalg.yield %r : f32
  }} -> tensor<{shape}xf32>
  return %y : tensor<{shape}xf32>
}}
"""

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 88.7, -87.3,
                     100.0, -100.0, 3.75, -3.75, 0.8, 2.0], dtype=np.float32)


def exact(op, x):
    fn = {"exp": math.exp, "erf": math.erf}[op]

    def one(v):
        try:
            return fn(float(v))
        except OverflowError:
            return math.inf
    return np.vectorize(one, otypes=[np.float64])(x)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    functions = {}
    for op in ("exp", "erf"):
        for shape, map_, iterators in (
                ("1024x64", "affine_map<(i, j) -> (i, j)>", '"parallel", "parallel"'),
                ("1001", "affine_map<(i) -> (i)>", '"parallel"')):
            text = FUNCTION.format(shape=shape, map=map_, iterators=iterators, op=op)
            functions[op, shape] = compile_function(
                text, "apply", [(len(shape.split("x")), np.float32)],
                tmp_path_factory.mktemp(f"{op}-{shape}"))
    return functions


def inputs(op):
    rng = np.random.default_rng(0)
    low, high = (-87.0, 88.0) if op == "exp" else (-5.0, 5.0)
    x = rng.uniform(low, high, 1024 * 64 - SPECIALS.size).astype(np.float32)
    return np.concatenate([SPECIALS, x])


@pytest.mark.parametrize("op", ["exp", "erf"])
def test_within_a_few_ulp_of_float64(compiled, op):
    x = inputs(op)
    y = compiled[op, "1024x64"](x.reshape(1024, 64))[0].reshape(-1)
    want = exact(op, x)
    f32 = np.finfo(np.float32)
    finite = np.isfinite(want) & (np.abs(want) >= f32.tiny) & (np.abs(want) <= f32.max)
    # Beyond f32's range: inf; below its normals: zero (subnormals flush).
    assert np.all(y[np.abs(want) > f32.max] == np.inf)
    assert np.all(np.abs(y[np.abs(want) < f32.tiny]) <= f32.tiny)
    if op == "exp":
        # Relative: exp's range reduction keeps it under 2^-22.5.
        err = np.abs(y[finite] - want[finite]) / np.abs(want[finite])
        assert err.max() < 4e-7, f"exp: max relative error {err.max():.3g}"
    else:
        # Absolute: erf's rational fits are good to about 2.5e-7.
        err = np.abs(y[finite] - want[finite])
        assert err.max() < 4e-7, f"erf: max absolute error {err.max():.3g}"
    # NaN in, NaN out; the limits exact.
    assert np.isnan(y[0])
    assert (y[1], y[2]) == ((np.inf, 0.0) if op == "exp" else (1.0, -1.0))
    assert y[3] == (1.0 if op == "exp" else 0.0)
    if op == "exp":
        assert y[9] == np.inf and y[10] == 0.0
    else:
        assert y[9] == 1.0 and y[10] == -1.0
        # erf is odd: the sign of zero kept, and relative accuracy near zero,
        # where an absolute bound says nothing (erf(1e-30) ~ 1.13e-30).
        assert not np.signbit(y[3]) and np.signbit(y[4])
        small = finite & (np.abs(x) < 1e-3) & (x != 0)
        assert small.sum() > 2
        rel = np.abs(y[small] - want[small]) / np.abs(want[small])
        assert rel.max() < 4e-7, f"erf near zero: max relative error {rel.max():.3g}"


@pytest.mark.parametrize("op", ["exp", "erf"])
def test_vector_and_scalar_paths_agree(compiled, op):
    x = inputs(op)[:1001]
    vector = compiled[op, "1024x64"](np.resize(x, (1024, 64)))[0].reshape(-1)[:1001]
    scalar = compiled[op, "1001"](x)[0]
    np.testing.assert_array_equal(vector.view(np.uint32), scalar.view(np.uint32))
