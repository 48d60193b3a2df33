"""The switchyard Python package: building models (with moec's checks and
messages), compiling (stage IR, the passes, the IR after every pass), running
every routing kind against the float64 reference at any batch, bf16, errors
(a failing pipeline names the moe-opt command that reproduces it), and a
round trip through save/load."""

import gc
import multiprocessing
import pathlib
import re
import pickle
import shlex
import subprocess
import sys
import threading

import ml_dtypes
import numpy as np
import pytest

import switchyard as sy

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "reference"))
sys.path.insert(0, str(ROOT / "test" / "Integration"))

import moe_reference as ref  # noqa: E402
from artifacts import BUILD, MOEC, draw_weights, rel_error  # noqa: E402

SWITCH = ROOT / "examples" / "switch-base-8.yaml"


def random_weights(compiled, rng):
    return draw_weights(rng, compiled.weights)


# -- building ----------------------------------------------------------------

def test_model_from_yaml_path_text_and_keywords():
    from_path = sy.Model.from_yaml(SWITCH)
    from_str_path = sy.Model.from_yaml(str(SWITCH))
    from_text = sy.Model.from_yaml(SWITCH.read_text())
    for m in (from_path, from_str_path, from_text):
        assert (m.name, m.d_model, m.seq_len, m.dtype) == ("switch-base-8", 768, 512, "f32")
        assert m.blocks[0]["layer"] == "moe" and m.blocks[0]["capacity_factor"] == 1.25
    kw = sy.Model(d_model=768, seq_len=512, name="switch-base-8",
                  blocks=[dict(layer="moe", norm="rms", experts=8, d_ff=3072)])
    assert kw.description == from_path.description  # the YAML's values are the defaults
    assert "blocks=[moe]" in repr(kw)


def test_model_errors_are_moecs_messages(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_model: 8\nseq_len: 4\nblocks:\n  - layer: moe\n    experts: 2\n"
                   "    d_ff: 4\n    top_k: 3\n")
    moec = subprocess.run([MOEC, bad, "-o", tmp_path / "x"], capture_output=True, text=True)
    with pytest.raises(sy.ModelError) as error:
        sy.Model.from_yaml(bad)
    assert str(error.value) == moec.stderr.rstrip("\n") or str(error.value) == moec.stderr
    assert "bad.yaml:7:12: error: 'top_k' (3) cannot exceed the number of experts (2)" in str(error.value)
    with pytest.raises(sy.ModelError, match="did you mean 'top_k'"):
        sy.Model(d_model=8, seq_len=4, blocks=[dict(layer="moe", experts=2, d_ff=4, top_kk=1)])
    with pytest.raises(sy.ModelError, match="unknown key 'expertz'"):
        sy.Model(d_model=8, seq_len=4, blocks=[dict(layer="moe", expertz=2, d_ff=4)])
    with pytest.raises(sy.ModelError, match="'experts' must be between 1 and"):
        sy.Model(d_model=8, seq_len=4, blocks=[dict(layer="moe", experts=0, d_ff=4)])
    with pytest.raises(sy.ModelError, match="'blocks' is empty"):
        sy.Model(d_model=8, seq_len=4, blocks=[])
    with pytest.raises(sy.ModelError, match="unknown key 'batch' in the model"):
        sy.Model(d_model=8, seq_len=4, blocks=[dict(layer="ffn", d_ff=4)], batch=2)
    assert issubclass(sy.ModelError, ValueError)


# -- compiling ---------------------------------------------------------------

def test_stage_ir_and_passes():
    model = sy.Model.from_yaml(SWITCH)
    expect = {"layer": "moe.token_choice", "routing": "moe.token_choice_route",
              "fused": "moe.routed_experts",
              "linalg": "linalg.generic", "loops": "memref.alloc", "llvm": "llvm.func"}
    for stage, marker in expect.items():
        lowered = sy.compile(model, stage=stage)
        assert marker in lowered.ir, stage
    assert sy.compile(model, stage="layer").passes == []
    assert sy.compile(model, stage="routing").passes == ["moe-inline", "moe-decompose",
                                                         "canonicalize"]
    assert sy.compile(model, stage="fused").passes == ["moe-inline", "moe-decompose", "canonicalize",
                                                       "moe-fuse-router", "moe-fuse-experts",
                                                       "moe-fuse-soft"]
    unfused = sy.compile(model, stage="fused", fusion=False)
    assert unfused.passes == ["moe-inline", "moe-decompose", "canonicalize"]
    assert "moe.dispatch" in unfused.ir and "moe.routed_experts" not in unfused.ir
    full = sy.compile(model, stage="llvm").passes
    assert full[:7] == ["moe-inline", "moe-decompose", "canonicalize", "moe-fuse-router",
                        "moe-fuse-experts", "moe-fuse-soft", "convert-moe-to-linalg"]
    assert full[-2:] == ["reconcile-unrealized-casts",
                         "switchyard-bf16-vectors-through-memory-as-i16"]


def test_ir_after_every_pass_is_moecs_text(tmp_path):
    model = sy.Model.from_yaml(SWITCH)
    lowered = sy.compile(model, stage="linalg", print_ir_after_all=True)
    moec = subprocess.run([MOEC, SWITCH, "--emit=mlir", "--stage=linalg",
                           "--mlir-print-ir-after-all", "-o", tmp_path / "out.mlir"],
                          capture_output=True, text=True, check=True)
    assert lowered.ir_after_all_text == moec.stderr
    assert [p for p, _ in lowered.ir_after_all][:3] == ["MoEInline (moe-inline)",
                                                       "MoEDecompose (moe-decompose)",
                                                       "Canonicalizer (canonicalize)"]
    assert "moe.token_choice_route" in lowered.ir_after_all[1][1]
    compiled = sy.compile(model, print_ir_after_all=True)
    assert compiled.ir_after_all[-1][0] == ("SwitchyardBF16VectorsThroughMemoryAsI16 "
                                            "(switchyard-bf16-vectors-through-memory-as-i16)")


def test_compile_errors():
    model = sy.Model.from_yaml(SWITCH)
    with pytest.raises(ValueError, match="unknown target 'cuda'"):
        sy.compile(model, target="cuda")
    with pytest.raises(ValueError, match="unknown stage 'fusion'"):
        sy.compile(model, stage="fusion")
    with pytest.raises(TypeError, match="takes a switchyard.Model or the path"):
        sy.compile(42)
    for level in (-1, 4, "3", True):
        with pytest.raises(ValueError, match="opt_level must be an integer from 0 to 3"):
            sy.compile(model, opt_level=level)
    with pytest.raises(TypeError, match="blocks must be a list"):
        sy.Model(d_model=16, seq_len=8, blocks=dict(layer="ffn", d_ff=32))
    # UTF-8 bytes are YAML text too.
    assert sy.Model.from_yaml(pathlib.Path(SWITCH).read_bytes()).d_model == model.d_model
    with pytest.raises(ValueError, match="is not a Switchyard library"):
        sy.load(sy._switchyard.__file__)  # a shared library, but not a model


def test_mlir_without_an_entry_is_a_model_error(tmp_path):
    body = ("(%x: tensor<?x4x8xf32>) -> tensor<?x4x8xf32> {\n"
            "  return %x : tensor<?x4x8xf32>\n}\n")
    for text, fragment in (
            (f"func.func @a{body}func.func @b{body}",
             "no entry function: expected a function named 'forward' or exactly one public "
             "function (found 2)"),
            (f"func.func private @forward{body}",
             "the entry function 'forward' is private: make it public")):
        source = tmp_path / "entry.mlir"
        source.write_text(text)
        with pytest.raises(sy.ModelError, match=re.escape(fragment)):
            sy.compile(source)


def test_failing_pipeline_names_the_moe_opt_command(tmp_path):
    # Verifies, but the CPU pipeline cannot bufferize TOSA ops.
    source = tmp_path / "tosa.mlir"
    source.write_text(
        "func.func @forward(%x: tensor<?x4x8xf32>) -> tensor<?x4x8xf32> {\n"
        "  %s = tosa.reduce_sum %x {axis = 2 : i32} : (tensor<?x4x8xf32>) -> tensor<?x4x1xf32>\n"
        "  %y = tosa.add %x, %s : (tensor<?x4x8xf32>, tensor<?x4x1xf32>) -> tensor<?x4x8xf32>\n"
        "  return %y : tensor<?x4x8xf32>\n}\n")
    with pytest.raises(sy.CompileError) as error:
        sy.compile(source)
    message = str(error.value)
    assert "tosa.mlir:2:8: error: op was not bufferized" in message
    command = message.rsplit("reproduce with: ", 1)[1].strip()
    assert command.startswith("moe-opt ")
    args = shlex.split(command)
    proc = subprocess.run([BUILD / "bin" / "moe-opt", *args[1:]], capture_output=True, text=True)
    assert proc.returncode != 0
    first_error = message.split("error: ", 1)[1].splitlines()[0]
    assert first_error in proc.stderr


# -- running -----------------------------------------------------------------

KINDS = {
    "moe": dict(layer="moe", norm="rms", experts=4, d_ff=24, top_k=2, capacity_factor=1.0,
                activation="silu"),
    "moe-dropless": dict(layer="moe", experts=4, d_ff=24, capacity_factor=None, bias=True),
    "expert_choice": dict(layer="expert_choice", norm="layer", experts=4, d_ff=24,
                          capacity_factor=1.5, router_bias=True),
    # Every option at its default: the importer's defaults against the
    # reference's (SEMANTICS.md), each filled in on its own side.
    "moe-defaults": dict(layer="moe", experts=4, d_ff=24),
    "expert_choice-defaults": dict(layer="expert_choice", experts=4, d_ff=24),
    "soft_moe": dict(layer="soft_moe", experts=3, slots_per_expert=2, d_ff=24,
                     activation="gelu"),
    "ffn": dict(layer="ffn", norm="rms", d_ff=24, activation="swiglu"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_routing_kind_against_the_reference(kind, tmp_path):
    model = sy.Model(d_model=16, seq_len=8, blocks=[KINDS[kind]], name=kind)
    compiled = sy.compile(model)
    rng = np.random.default_rng(3)
    weights = random_weights(compiled, rng)
    for batch in (1, 2, 5):  # one compiled model, any batch
        x = rng.standard_normal((batch, 8, 16)).astype(np.float32)
        result = compiled(x, weights=weights)
        # The user's own description: the reference fills in its defaults.
        expected, stats = ref.model_forward({"blocks": [KINDS[kind]]}, weights, x)
        assert result.output.shape == x.shape and result.output.dtype == np.float32
        assert rel_error(result.output, expected) < 1e-5
        got = result.stats["blocks"][0]
        assert got["kind"] == KINDS[kind]["layer"]
        if stats[0].get("kept_per_expert") is not None:
            np.testing.assert_array_equal(got["expert_counts"], stats[0]["kept_per_expert"])
            assert got["capacity"] == stats[0]["capacity"]
            assert got["unrouted"] == stats[0]["unrouted"]
            assert got["z_loss"] == pytest.approx(stats[0]["z_loss"], rel=1e-5)
            assert result.stats["z_loss"] == pytest.approx(got["z_loss"])
            # Expert usage (SEMANTICS.md section 6): kept over E * C * groups.
            assert got["usage"] == pytest.approx(stats[0]["usage"], rel=1e-12)
        else:
            assert got["capacity"] is None and got["expert_counts"] is None
            assert got["usage"] is None
            # No block reports a z-loss: no sum either.
            assert got["z_loss"] is None and result.stats["z_loss"] is None
        if kind.startswith("moe"):
            assert got["aux_loss"] == pytest.approx(stats[0]["aux_loss"], rel=1e-5)
            assert result.stats["aux_loss"] == pytest.approx(got["aux_loss"])
            assert got["dropped"] == stats[0]["dropped"]
        else:
            assert got["aux_loss"] is None and result.stats["aux_loss"] is None
        assert result.useful_flops > 0


def test_bf16_model_with_ml_dtypes_arrays(tmp_path):
    model = sy.Model(d_model=16, seq_len=8, dtype="bf16",
                     blocks=[dict(layer="moe", norm="rms", experts=4, d_ff=24, top_k=2)])
    compiled = sy.compile(model)
    rng = np.random.default_rng(4)
    weights = random_weights(compiled, rng)
    assert weights["blocks.0.router.weight"].dtype == np.float32  # the router stays f32
    x = rng.standard_normal((2, 8, 16)).astype(ml_dtypes.bfloat16)
    result = compiled(x, weights=weights)
    assert result.output.dtype == ml_dtypes.bfloat16
    expected, _ = ref.model_forward(
        {"blocks": [dict(layer="moe", norm="rms", experts=4, d_ff=24, top_k=2)]}, weights, x)
    assert rel_error(result.output.astype(np.float32), expected) < 2e-2
    # float32 inputs are converted to the model's dtype.
    again = compiled(x.astype(np.float32), weights=weights)
    np.testing.assert_array_equal(again.output, result.output)


def check_against_fmas(model, compiled, seed, batches):
    """`compiled`, a bf16 model whose expert products take another path than
    the default FMAs, against the reference and against the FMAs: the same
    f32 sums in another order, at most a rounding of the bf16 results apart."""
    fma = sy.compile(model, bf16_amx=False)
    rng = np.random.default_rng(seed)
    weights = random_weights(compiled, rng)
    for batch in batches:
        x = rng.standard_normal((batch, 8, model.d_model)).astype(ml_dtypes.bfloat16)
        got = compiled(x, weights=weights).output.astype(np.float32)
        expected, _ = ref.model_forward(model.description, weights, x)
        assert rel_error(got, expected) < 2e-2
        np.testing.assert_allclose(got, fma(x, weights=weights).output.astype(np.float32),
                                   rtol=2 ** -7, atol=2 ** -7)


def host_has_bf16_dot_products():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    return cpuinfo.exists() and "avx512_bf16" in cpuinfo.read_text().split()


@pytest.mark.skipif(not host_has_bf16_dot_products(), reason="the host has no avx512bf16")
@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe", "ffn"])
def test_bf16_dot_products(kind):
    # Widths that are multiples of 32, so that the expert products are
    # packed, here in pairs.
    model = sy.Model(d_model=32, seq_len=8, dtype="bf16", name=kind,
                     blocks=[dict(KINDS[kind], d_ff=64)])
    # Asking for dot products turns the default AMX tiles off.
    linalg = sy.compile(model, stage="linalg", bf16_dot_products=True).ir
    assert "permutation = [0, 3, 1, 4, 2]" in linalg and "x8x2xbf16>" in linalg
    assert "x8x2xbf16>" not in sy.compile(model, stage="linalg", bf16_amx=False).ir
    assert "x86vector.avx512.dot" in sy.compile(model, stage="loops",
                                                bf16_dot_products=True).ir
    check_against_fmas(model, sy.compile(model, bf16_dot_products=True), seed=5,
                       batches=(3,))
    # Refused before the pipeline runs: no moe-opt command would reproduce it.
    with pytest.raises(sy.CompileError, match="bf16 products take one path") as error:
        sy.compile(model, bf16_dot_products=True, bf16_amx=True)
    assert "reproduce with" not in str(error.value)
    # At every stage, as moec's command line refuses it.
    with pytest.raises(sy.CompileError, match="bf16 products take one path"):
        sy.compile(model, stage="layer", bf16_dot_products=True, bf16_amx=True)


@pytest.mark.skipif(host_has_bf16_dot_products(), reason="the host has avx512bf16")
def test_bf16_dot_products_need_the_instruction():
    model = sy.Model(d_model=32, seq_len=8, dtype="bf16", blocks=[dict(KINDS["moe"], d_ff=64)])
    with pytest.raises(sy.CompileError, match="bf16 dot products need a host with avx512bf16"):
        sy.compile(model, bf16_dot_products=True)


def host_has_amx():
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    return "amx_tile" in flags and "amx_bf16" in flags


@pytest.mark.skipif(not host_has_amx(), reason="the host has no AMX")
@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe", "ffn"])
def test_bf16_amx(kind):
    # Widths that are multiples of 32, so that the expert products are
    # packed, here for AMX tiles; the default on a host with AMX.
    model = sy.Model(d_model=64, seq_len=8, dtype="bf16", name=kind,
                     blocks=[dict(KINDS[kind], d_ff=96)])
    assert sy.compile(model, stage="loops").ir == sy.compile(model, stage="loops",
                                                            bf16_amx=True).ir
    loops = sy.compile(model, stage="loops", bf16_amx=True).ir
    assert "amx.tile_mulf" in loops and "amx.tile_mulf" not in sy.compile(
        model, stage="loops", bf16_amx=False).ir
    check_against_fmas(model, sy.compile(model), seed=6, batches=(1, 3))


@pytest.mark.skipif(host_has_amx(), reason="the host has AMX")
def test_bf16_amx_needs_the_tiles():
    model = sy.Model(d_model=32, seq_len=8, dtype="bf16", blocks=[dict(KINDS["moe"], d_ff=64)])
    assert "amx.tile_mulf" not in sy.compile(model, stage="loops").ir
    with pytest.raises(sy.CompileError, match="bf16 AMX products need a host with amx-tile"):
        sy.compile(model, bf16_amx=True)


def test_weights_from_a_safetensors_path_and_seeds(tmp_path):
    model = sy.Model(d_model=16, seq_len=8, blocks=[KINDS["moe"]])
    compiled = sy.compile(model)
    x = np.random.default_rng(5).standard_normal((2, 8, 16)).astype(np.float32)
    seeded = compiled(x, seed=7)
    compiled.save_weights(tmp_path / "w.safetensors", seed=7)
    from_file = compiled(x, weights=tmp_path / "w.safetensors")
    np.testing.assert_array_equal(seeded.output, from_file.output)
    assert not np.array_equal(compiled(x, seed=8).output, seeded.output)


def test_bindings_follow_files_and_dicts(tmp_path, monkeypatch):
    """A binding is what the file or the arrays held when it was made: a file
    rewritten since, or the same relative path in another folder, binds
    anew; in a dict, assigning a new array binds anew, and an array changed
    in place changes nothing (expert weights packed when bound, the others
    copied). Misaligned weight arrays are copied, not refused."""
    # D = 32, F = 64: the expert weights are packed when bound.
    model = sy.Model(d_model=32, seq_len=8, blocks=[dict(layer="moe", experts=4, d_ff=64)])
    compiled = sy.compile(model)
    assert compiled._prepacked == {"blocks.0.experts.w1", "blocks.0.experts.w2"}
    x = np.random.default_rng(5).standard_normal((2, 8, 32)).astype(np.float32)
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        compiled.save_weights(tmp_path / folder / "w.safetensors", seed=seed)
    monkeypatch.chdir(tmp_path / "a")
    first = compiled(x, weights="w.safetensors").output
    np.testing.assert_array_equal(first, compiled(x, seed=1).output)
    monkeypatch.chdir(tmp_path / "b")
    np.testing.assert_array_equal(compiled(x, weights="w.safetensors").output,
                                  compiled(x, seed=2).output)
    # Rewritten in place with other weights of the same size.
    path = tmp_path / "a" / "w.safetensors"
    compiled(x, weights=path)
    compiled.save_weights(tmp_path / "c.safetensors", seed=3)
    path.write_bytes((tmp_path / "c.safetensors").read_bytes())
    np.testing.assert_array_equal(compiled(x, weights=path).output, compiled(x, seed=3).output)

    weights = random_weights(compiled, np.random.default_rng(9))
    before = compiled(x, weights=weights).output
    for name in weights:  # in place: not seen, router and experts alike
        weights[name] *= 2
    np.testing.assert_array_equal(compiled(x, weights=weights).output, before)
    for name in list(weights):  # new arrays: bound anew
        weights[name] = weights[name].copy()
    fresh = {name: array.copy() for name, array in weights.items()}
    np.testing.assert_array_equal(compiled(x, weights=weights).output,
                                  compiled(x, weights=fresh).output)
    assert not np.array_equal(compiled(x, weights=weights).output, before)
    # The same dict, path or seed again binds nothing new.
    creates = []
    original = sy.CompiledModel._create
    monkeypatch.setattr(sy.CompiledModel, "_create",
                        lambda self, *args: creates.append(args) or original(self, *args))
    for bind in ({"weights": path}, {"weights": str(path)}, {"seed": 4}, {"weights": weights}):
        compiled(x, **bind)
        compiled(x, **bind)
    # The path and its string are one file.
    assert [args[0] if args[0] is not None else args[1] for args in creates] == \
        [path, 4, weights], creates
    # Misaligned: a float32 view at an odd byte offset.
    misaligned = {}
    for name, array in fresh.items():
        raw = np.empty(array.nbytes + 1, np.uint8)
        view = raw[1:].view(np.float32).reshape(array.shape)
        view[...] = array
        assert not view.flags.aligned
        misaligned[name] = view
    np.testing.assert_array_equal(compiled(x, weights=misaligned).output,
                                  compiled(x, weights=fresh).output)


FORK_SCRIPT = """\
import os, sys
import switchyard as sy
compiled = sy.compile(sy.Model(d_model=16, seq_len=8, blocks=[dict(layer="ffn", d_ff=32)]))
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit runs the finalizers the child inherited
assert os.waitpid(pid, 0)[1] == 0
assert compiled.library.is_file(), "the child removed the parent's library"
compiled.save(sys.argv[1])
os.remove(compiled.library)
try:
    compiled.save(sys.argv[1] + ".again")
except FileNotFoundError as error:
    assert "is gone" in str(error), error
else:
    raise AssertionError("saving a removed library wrote nothing and said nothing")
"""


def test_a_forked_child_leaves_the_parents_library(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(tmp_path / "libm.so")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "libm.so").is_file() and not (tmp_path / "libm.so.again").exists()


def test_saving_onto_a_directory_leaves_no_temporary(tmp_path):
    compiled = sy.compile(sy.Model(d_model=16, seq_len=8, blocks=[dict(layer="ffn", d_ff=32)]))
    (tmp_path / "libm.so").mkdir()
    with pytest.raises(OSError):
        compiled.save(tmp_path / "libm.so")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libm.so"]


def test_numpy_scalars_as_options():
    model = sy.Model(d_model=16, seq_len=8, blocks=[dict(
        layer="moe", experts=np.int64(4), d_ff=32, capacity_factor=np.float64(1.5),
        router_bias=np.bool_(True))])
    assert model.blocks[0]["capacity_factor"] == 1.5 and model.blocks[0]["experts"] == 4


def test_run_errors(tmp_path):
    model = sy.Model(d_model=16, seq_len=8, blocks=[KINDS["moe"]])
    compiled = sy.compile(model)
    rng = np.random.default_rng(6)
    weights = random_weights(compiled, rng)
    x = rng.standard_normal((2, 8, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"x has shape \[2, 9, 16\], expected \[B, 8, 16\]"):
        compiled(np.zeros((2, 9, 16), np.float32), weights=weights)
    with pytest.raises(ValueError, match="x has dtype int64"):
        compiled(np.zeros((2, 8, 16), np.int64), weights=weights)
    missing = {k: v for k, v in weights.items() if k != "blocks.0.router.weight"}
    with pytest.raises(ValueError, match="weight 'blocks.0.router.weight' is missing"):
        compiled(x, weights=missing)
    wrong = dict(weights, **{"blocks.0.experts.w1": np.zeros((4, 24, 16), np.float32)})
    with pytest.raises(ValueError, match=r"'blocks.0.experts.w1' has shape \[4, 24, 16\], "
                                         r"expected \[4, 16, 24\]"):
        compiled(x, weights=wrong)
    with pytest.raises(ValueError, match="'blocks.0.bogus' is not a weight of this model"):
        compiled(x, weights=dict(weights, **{"blocks.0.bogus": np.zeros(1)}))
    with pytest.raises(OSError, match="cannot read weights '/nonexistent.safetensors'"):
        compiled(x, weights="/nonexistent.safetensors")
    with pytest.raises(TypeError):
        compiled(x, weights=42)
    with pytest.raises(ValueError, match="pass either weights or seed, not both"):
        compiled(x, weights=weights, seed=3)
    for seed in (-1, 2**64, 1.5):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
            compiled(x, seed=seed)
    with pytest.raises(TypeError, match=r"x must be an array"):
        compiled(None, weights=weights)
    with pytest.raises(ValueError, match="would be overwritten by its header"):
        compiled.save(tmp_path / "model.h")
    # Any float dtype is converted to the model's, as astype would.
    np.testing.assert_array_equal(compiled(x.astype(np.float64), weights=weights).output,
                                  compiled(x, weights=weights).output)


def test_save_and_load_round_trip(tmp_path):
    model = sy.Model.from_yaml(SWITCH.read_text().replace("seq_len: 512", "seq_len: 16")
                               .replace("d_ff: 3072", "d_ff: 64").replace("d_model: 768", "d_model: 32"))
    compiled = sy.compile(model)
    saved = compiled.save(tmp_path / "libswitch.so")
    assert saved.exists() and (tmp_path / "libswitch.h").exists()
    assert "sy_model_run" in (tmp_path / "libswitch.h").read_text()
    loaded = sy.load(saved)
    assert (loaded.name, loaded.seq_len, loaded.d_model, loaded.dtype) == \
        ("switch-base-8", 16, 32, "f32")
    assert loaded.weights == compiled.weights
    x = np.random.default_rng(8).standard_normal((3, 16, 32)).astype(np.float32)
    weights = random_weights(compiled, np.random.default_rng(9))
    np.testing.assert_array_equal(loaded(x, weights=weights).output,
                                  compiled(x, weights=weights).output)


def _run_pickled(payload):
    compiled, x, seed = pickle.loads(payload)
    return compiled(x, seed=seed).output


def test_pickle_sends_a_model_to_another_process():
    """A CompiledModel pickles as its library: the copy loads from a folder
    of its own (removed with it), runs the same bits in this process and in
    a spawned worker, and keeps the IR dumps; weights are bound anew."""
    model = sy.Model(d_model=32, seq_len=8, name="pickled", blocks=[
        dict(layer="moe", norm="rms", experts=4, d_ff=64, top_k=2)])
    compiled = sy.compile(model, print_ir_after_all=True)
    x = np.random.default_rng(21).standard_normal((2, 8, 32)).astype(np.float32)
    expected = compiled(x, seed=3).output
    copy = pickle.loads(pickle.dumps(compiled))
    assert copy.library != compiled.library and copy.library.parent.exists()
    assert (copy.name, copy.weights, copy.manifest) == \
        (compiled.name, compiled.weights, compiled.manifest)
    assert copy.passes == compiled.passes and len(copy.passes) > 0
    assert copy.ir_after_all == compiled.ir_after_all
    np.testing.assert_array_equal(copy(x, seed=3).output, expected)
    workdir = copy.library.parent
    del copy
    gc.collect()
    assert not workdir.exists()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        output = pool.apply(_run_pickled, (pickle.dumps((compiled, x, 3)),))
    np.testing.assert_array_equal(output, expected)


def test_threads_share_a_model(monkeypatch):
    """Threads may call one CompiledModel at once (the runs go in parallel:
    ctypes releases the GIL), each with its own weights. The binding a call
    made is the one it runs with, even when another thread rebinds in the
    moment the old binding's destructor releases the GIL: that moment is
    forced here."""
    from switchyard import _compiled
    model = sy.Model(d_model=32, seq_len=8, blocks=[dict(layer="moe", experts=4, d_ff=64)])
    compiled = sy.compile(model)
    x = np.random.default_rng(22).standard_normal((2, 8, 32)).astype(np.float32)
    expected = {seed: compiled(x, seed=seed).output for seed in (0, 1)}
    assert not np.array_equal(expected[0], expected[1])

    destroy = _compiled._Weights.__del__
    armed = [True]

    def destroy_while_another_thread_rebinds(weights):
        if armed[0] and threading.current_thread().name == "first":
            armed[0] = False
            other = threading.Thread(target=compiled, args=(x,), kwargs=dict(seed=1))
            other.start()
            other.join()
        destroy(weights)

    monkeypatch.setattr(_compiled._Weights, "__del__", destroy_while_another_thread_rebinds)
    outputs = {}
    first = threading.Thread(name="first",
                             target=lambda: outputs.update(y=compiled(x, seed=0).output))
    first.start()  # compiled holds seed 1's binding: this call replaces it
    first.join()
    assert not armed[0]
    np.testing.assert_array_equal(outputs["y"], expected[0])
    monkeypatch.undo()

    errors = []

    def worker(seed):
        try:
            for _ in range(20):
                np.testing.assert_array_equal(compiled(x, seed=seed).output, expected[seed])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i % 2,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_libraries_on_disk(tmp_path, monkeypatch):
    """What an embedding process relies on: a bare relative name loads the
    file in the working folder (not one on the library path), saving over a
    loaded library leaves the loaded one working and a new load sees the new
    file, and compile's temporary folder goes with its model."""
    small = dict(d_model=16, seq_len=4)
    first = sy.compile(sy.Model(**small, name="first", blocks=[dict(layer="ffn", d_ff=16)]))
    second = sy.compile(sy.Model(**small, name="second", blocks=[dict(layer="ffn", d_ff=32)]))
    monkeypatch.chdir(tmp_path)
    first.save("libm.so")
    loaded = sy.load("libm.so")
    assert loaded.name == "first"
    x = np.ones((1, 4, 16), np.float32)
    before = loaded(x, seed=1).output
    second.save("libm.so")  # over the loaded file
    np.testing.assert_array_equal(loaded(x, seed=1).output, before)
    assert sy.load("libm.so").name == "second"
    workdir = first.library.parent
    assert workdir.exists()
    del first
    gc.collect()
    assert not workdir.exists()


def test_runs_reuse_their_buffers():
    """The compiled code's buffers stay with the runtime between runs
    (lib/Runtime/Workspace.cpp): later runs page-fault none of them in again,
    without the embedding process's malloc settings."""
    import resource
    model = sy.Model(d_model=64, seq_len=256, blocks=[
        dict(layer="moe", norm="rms", experts=4, d_ff=1024, top_k=2),
        dict(layer="soft_moe", norm="rms", experts=8, d_ff=1024)])
    compiled = sy.compile(model)
    x = np.random.default_rng(0).standard_normal((4, 256, 64), dtype=np.float32)
    first = compiled(x, seed=0)
    buffers_pages = 4 * 256 * 1024 * 4 // 4096  # one expert hidden layer's worth
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        result = compiled(x, seed=0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    np.testing.assert_array_equal(result.output, first.output)
    # Without the cache, the five runs fault about 21000 pages. The count is
    # the whole process's: numpy's output arrays and glibc's heap trims add
    # to it (659 pages in one CI worker that had run other tests, 0-18 a run
    # in a fresh process), so the bound is one hidden layer's pages.
    assert faults < buffers_pages, (faults, buffers_pages)
