"""Execution tests: compiled CPU code against the float64 reference.

Every test draws fresh random inputs; the seed is printed in the pytest
header and on failure, and SWITCHYARD_SEED=N replays a run. Tolerances are
those of SEMANTICS.md section 8: relative error 1e-5 for f32 models, 2e-2
for bf16/f16, and routing decisions (kept/dropped per expert, dropped and
unrouted counts, capacity) identical. Random draws whose routing is within
rounding of a tie are redrawn, since f32 and f64 may legitimately break
such near-ties differently; exact ties are tested separately.
"""

import hashlib
import math
import os
import pathlib
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "reference"))

import moe_reference as ref  # noqa: E402
from harness import compile_function  # noqa: E402
from layers import DTYPES, build_block, random_weights  # noqa: E402

# conftest.py draws the run's seed once (also under xdist, for every worker)
# and prints it in the pytest header.
SEED = int(os.environ["SWITCHYARD_SEED"])
TOLERANCE = {"f32": 1e-5, "bf16": 2e-2, "f16": 2e-2}
_compiled = {}


@pytest.fixture
def rng(request):
    seed = SEED + int(hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6], 16)
    print(f"seed for {request.node.nodeid}: SWITCHYARD_SEED={SEED} (test seed {seed})")
    return np.random.default_rng(seed)


def compiled(text, result_types, tmp_path_factory, pipeline_options=""):
    key = (hashlib.sha1(text.encode()).hexdigest(), pipeline_options)
    if key not in _compiled:
        workdir = tmp_path_factory.mktemp("build")
        _compiled[key] = compile_function(text, "block", result_types, workdir,
                                          pipeline_options)
    return _compiled[key]


def rel_error(y, expected):
    y = np.asarray(y, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    denom = np.linalg.norm(expected)
    return np.linalg.norm(y - expected) / (denom if denom else 1.0)


def _groups(x, group):
    tokens = np.asarray(x, dtype=np.float64)
    return tokens.reshape(1, -1, tokens.shape[-1]) if group == "batch" else tokens


def router_probs64(x, w):
    z = np.asarray(x, np.float64) @ w["router.weight"].astype(np.float64)
    if "router.bias" in w:
        z = z + w["router.bias"].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def near_tie(x, w, kind, options, normed):
    """True if f32 rounding could change a routing decision of this draw."""
    if kind not in ("moe", "expert_choice"):
        return False
    p = _groups(router_probs64(normed, w), options.get("group", "sequence"))
    p = p[np.isfinite(p).all(-1)]
    if p.size == 0:
        return False
    s = -np.sort(-p, axis=-1)
    k = options.get("top_k", 1)
    gaps = s[..., :-1] - s[..., 1:]
    if kind == "moe":
        ranks = gaps if options.get("reroute_dropped") else gaps[..., k - 1: k]
        if ranks.size and ranks.min() < 1e-4:
            return True
        if options.get("priority") == "batch":
            top1 = np.sort(s[..., 0].ravel())
            if top1.size > 1 and np.diff(top1).min() < 1e-5:
                return True
    else:
        for e in range(p.shape[-1]):
            col = np.sort(p[..., e].ravel())
            if col.size > 1 and np.diff(col).min() < 1e-5:
                return True
    return False


def reference_block(kind, x, w, norm, residual, options, activation):
    h = ref.norm(x, norm, w.get("norm.weight"), w.get("norm.bias")) if norm != "none" else np.asarray(x, np.float64)
    if kind == "moe":
        y, stats = ref.token_choice_layer(h, w, activation=activation, **options)
    elif kind == "expert_choice":
        y, stats = ref.expert_choice_layer(h, w, activation=activation, **options)
    elif kind == "soft_moe":
        y, stats = ref.soft_moe_layer(h, w, activation=activation, **options)
    else:
        y, stats = ref.ffn_layer(h, w, activation=activation), None
    if residual:
        y = np.asarray(x, np.float64) + y
    return y, stats, h


def run_block(rng, tmp_path_factory, kind, *, B=3, S=8, D=16, E=4, F=32,
              dtype="f32", activation="relu", bias=False, router_bias=False,
              norm="none", residual=False, static_batch=False, batches=None,
              x_fn=None, weights_fn=None, check_near_ties=True, fusion=True, training=None,
              **options):
    """Compiles one block (with the routing-level fusion passes, or without
    them: `fusion=False`), runs it on one or more batch sizes and checks every
    result against the reference. Returns the last (outputs, reference)."""
    text, names, result_types = build_block(
        kind, S=S, D=D, E=E, F=F, dtype=dtype, batch=B if static_batch else None,
        activation=activation, bias=bias, router_bias=router_bias, norm=norm,
        residual=residual, training=training, **options)
    fn = compiled(text, result_types, tmp_path_factory,
                  "" if fusion else "fusion=false")
    shape_options = dict(activation=activation, bias=bias, router_bias=router_bias,
                         norm=norm, slots_per_expert=options.get("slots_per_expert", 1))
    last = None
    for batch in batches or [B]:
        for _ in range(50):
            w = random_weights(rng, kind, D, E, F, dtype, **shape_options)
            if weights_fn:
                w = weights_fn(w)
            x = rng.standard_normal((batch, S, D)).astype(np.float32)
            if x_fn:
                x = x_fn(x)
            x = x.astype(DTYPES[dtype])
            w64 = {k: np.asarray(v, np.float64) for k, v in w.items()}
            normed = (ref.norm(x, norm, w64.get("norm.weight"), w64.get("norm.bias"))
                      if norm != "none" else np.asarray(x, np.float64))
            if not check_near_ties or not near_tie(x, w64, kind, options, normed):
                break
        else:
            pytest.fail("could not draw routing without near-ties")
        outs = fn(x, *[w[n] for n in names])
        expected, stats, _ = reference_block(kind, x, w64, norm, residual, options, activation)
        check_outputs(kind, outs, expected, stats, dtype)
        if residual and dtype == "f32":
            # The layer's own error, not diluted by the residual's x.
            x64 = np.asarray(x, np.float64)
            finite = np.isfinite(expected).all(-1)
            err = rel_error((outs[0] - x64)[finite], (expected - x64)[finite])
            assert err < TOLERANCE[dtype], f"relative error of the layer {err:.3e}"
        if kind in ("moe", "expert_choice") and not residual:
            # The same tokens are left with nothing: exactly zero rows.
            np.testing.assert_array_equal((outs[0] == 0).all(-1),
                                          (expected == 0).all(-1))
        last = (outs, expected, stats, x, w)
    return last


def check_outputs(kind, outs, expected, stats, dtype):
    y = outs[0].astype(np.float64)
    assert y.shape == expected.shape
    finite = np.isfinite(expected).all(-1)
    # Rows the reference makes NaN (non-finite tokens) must be NaN here too,
    # and every other row must be finite and match.
    np.testing.assert_array_equal(np.isnan(y).all(-1), ~finite)
    assert np.isfinite(y[finite]).all()
    err = rel_error(y[finite], expected[finite])
    assert err < TOLERANCE[dtype], f"relative error {err:.3e}"
    if kind == "moe":
        aux, z, counts, dropped, unrouted, capacity = outs[1:]
        assert int(capacity) == stats["capacity"]
        np.testing.assert_array_equal(counts, stats["kept_per_expert"])
        assert int(dropped) == stats["dropped"]
        assert int(unrouted) == stats["unrouted"]
        check_loss(aux, stats["aux_loss"])
        check_loss(z, stats["z_loss"])
    elif kind == "expert_choice":
        z, counts, unrouted, capacity = outs[1:]
        assert int(capacity) == stats["capacity"]
        np.testing.assert_array_equal(counts, stats["kept_per_expert"])
        assert int(unrouted) == stats["unrouted"]
        check_loss(z, stats["z_loss"])


def check_loss(value, expected):
    value = float(value)
    if expected is None or math.isnan(expected):
        assert math.isnan(value), f"loss {value}, expected NaN"
    else:
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-9)


# --- token choice -----------------------------------------------------------

@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_top_k(rng, tmp_path_factory, top_k):
    run_block(rng, tmp_path_factory, "moe", top_k=top_k)


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 4.0, None],
                         ids=["drops-many", "drops-few", "drops-none", "dropless"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_capacity_factor(rng, tmp_path_factory, capacity_factor, top_k):
    run_block(rng, tmp_path_factory, "moe", top_k=top_k, capacity_factor=capacity_factor)


@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_min_capacity(rng, tmp_path_factory, fusion):
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", capacity_factor=0.25,
                                  min_capacity=3, fusion=fusion)
    assert stats["capacity"] == 3


@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_expert_capacity(rng, tmp_path_factory, fusion):
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", expert_capacity=1,
                                  fusion=fusion)
    assert stats["capacity"] == 1


@pytest.mark.parametrize("kind", ["moe", "expert_choice"])
@pytest.mark.parametrize("group", ["sequence", "batch"])
def test_huge_capacity_factor(rng, tmp_path_factory, kind, group):
    # k * G * cf / E far beyond an i64: C is capped at G (SEMANTICS.md
    # sections 3.2 and 4), folded when G is static (a sequence), computed at
    # run time when it is not (the batch).
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, kind, capacity_factor=1e300,
                                  min_capacity=2, group=group)
    assert stats["capacity"] == (8 if group == "sequence" else 3 * 8)


@pytest.mark.parametrize("top_k", [2, 4])
def test_normalize_gates(rng, tmp_path_factory, top_k):
    run_block(rng, tmp_path_factory, "moe", top_k=top_k, normalize_gates=True,
              capacity_factor=1.0)


@pytest.mark.parametrize("top_k", [1, 2])
def test_batch_priority(rng, tmp_path_factory, top_k):
    run_block(rng, tmp_path_factory, "moe", top_k=top_k, priority="batch",
              capacity_factor=0.75)


@pytest.mark.parametrize("capacity_factor", [1.0, 0.5])
@pytest.mark.parametrize("priority", ["sequence", "batch"])
@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_reroute_dropped(rng, tmp_path_factory, priority, capacity_factor, fusion):
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", reroute_dropped=True,
                                  capacity_factor=capacity_factor, priority=priority, S=16,
                                  fusion=fusion)
    # Rerouting fills every free row before a token stays dropped
    # (SEMANTICS.md section 3.5): with cf 1 all 16 tokens of a sequence find
    # one, with cf 0.5 the 8 rows (C = 2, E = 4) fill and 8 tokens stay dropped.
    C = stats["capacity"]
    assert C == (4 if capacity_factor == 1.0 else 2)
    assert sum(stats["kept_per_expert"]) == 3 * 4 * C
    assert stats["dropped"] == 3 * (16 - 4 * C)


@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe"])
def test_group_batch(rng, tmp_path_factory, kind):
    options = {"capacity_factor": 1.0} if kind == "moe" else {}
    run_block(rng, tmp_path_factory, kind, group="batch", batches=[1, 3], **options)


def test_group_not_multiple_of_experts(rng, tmp_path_factory):
    # G = 10 tokens, E = 4: C = ceil(10 * 1.25 / 4) = 4.
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", S=10, E=4)
    assert stats["capacity"] == 4


@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe", "ffn"])
def test_dynamic_batch(rng, tmp_path_factory, kind):
    run_block(rng, tmp_path_factory, kind, batches=[1, 3, 17])


def test_static_batch(rng, tmp_path_factory):
    run_block(rng, tmp_path_factory, "moe", B=2, static_batch=True, top_k=2)


def test_all_tokens_prefer_one_expert(rng, tmp_path_factory):
    def one_expert(w):
        w = dict(w)
        bias = np.zeros(4, np.float32)
        bias[2] = 20.0
        w["router.bias"] = bias
        return w
    outs, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", router_bias=True,
                                     weights_fn=one_expert, capacity_factor=1.0)
    assert stats["kept_per_expert"][2] == stats["capacity"] * 3
    assert stats["dropped"] > 0


def zero_router(w):
    w = dict(w)
    w["router.weight"] = np.zeros_like(w["router.weight"])
    return w


@pytest.mark.parametrize("priority", ["sequence", "batch"])
@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_exact_ties_between_experts(rng, tmp_path_factory, priority, fusion):
    # A zero router: every probability is exactly 1/E, so every choice ties
    # and goes to the smallest indices.
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", top_k=2,
                                  weights_fn=zero_router, check_near_ties=False,
                                  capacity_factor=2.0, priority=priority, fusion=fusion)
    assert list(stats["kept_per_expert"][2:]) == [0, 0]


@pytest.mark.parametrize("priority", ["sequence", "batch"])
def test_exact_ties_with_a_binding_capacity(rng, tmp_path_factory, priority):
    # Every token ties and wants experts 0 and 1; C = 4 rows each, filled by
    # the first tokens in priority order, the first of equal priorities (the
    # smaller t) first; the reference says which, and the outputs show it.
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", top_k=2,
                                  weights_fn=zero_router, check_near_ties=False,
                                  capacity_factor=1.0, priority=priority)
    assert stats["capacity"] == 4
    assert list(stats["kept_per_expert"]) == [3 * 4, 3 * 4, 0, 0]


def test_exact_ties_reroute(rng, tmp_path_factory):
    # Every token wants expert 0 (C = 2); the dropped ones move to the free
    # expert of smallest index first.
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", reroute_dropped=True,
                                  weights_fn=zero_router, check_near_ties=False,
                                  capacity_factor=1.0)
    assert stats["capacity"] == 2
    assert list(stats["kept_per_expert"]) == [3 * 2] * 4


@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_exact_ties_expert_choice(rng, tmp_path_factory, fusion):
    run_block(rng, tmp_path_factory, "expert_choice", weights_fn=zero_router,
              check_near_ties=False, capacity_factor=1.0, fusion=fusion)


@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_huge_logits(rng, tmp_path_factory, fusion):
    # Router logits of magnitude ~1e4: the softmax and the z-loss must not
    # overflow. Probabilities are exactly one-hot in f32 and f64 alike.
    def huge(w):
        w = dict(w)
        w["router.weight"] = (w["router.weight"] * 1e4).astype(np.float32)
        return w
    outs, *_ = run_block(rng, tmp_path_factory, "moe", weights_fn=huge,
                         check_near_ties=False, fusion=fusion)
    assert np.isfinite(outs[0]).all()
    assert np.isfinite(float(outs[1])) and np.isfinite(float(outs[2]))


def poison_token(bad):
    def poison(x):
        x = x.copy()
        x[1, 3, 5] = bad
        return x
    return poison


@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_non_finite_tokens(rng, tmp_path_factory, kind, bad, fusion):
    # One non-finite token in group 1: its row is NaN, it takes no capacity,
    # the other groups are unaffected; soft MoE poisons only its group.
    options = {"capacity_factor": 1.0} if kind == "moe" else {}
    outs, expected, *_ = run_block(rng, tmp_path_factory, kind, x_fn=poison_token(bad),
                                   fusion=fusion, **options)
    y = outs[0]
    if kind == "soft_moe":
        assert np.isnan(y[1]).all()
        assert np.isfinite(y[[0, 2]]).all()
    else:
        assert np.isnan(y[1, 3]).all()
        assert np.isfinite(np.delete(y.reshape(-1, y.shape[-1]), 8 + 3, axis=0)).all()
        assert math.isnan(float(outs[1]))  # the loss of the poisoned group


@pytest.mark.parametrize("options", [
    dict(priority="batch", capacity_factor=0.75),
    dict(top_k=2, capacity_factor=1.0),
    dict(top_k=2, priority="batch", capacity_factor=1.0),
    dict(reroute_dropped=True, capacity_factor=0.5),
    dict(group="batch", capacity_factor=1.0),
], ids=["batch-priority", "top2", "top2-batch-priority", "reroute", "group-batch"])
def test_non_finite_tokens_routing_options(rng, tmp_path_factory, options):
    # The same NaN token under every routing order (the batch-priority sort
    # over f32 bits, top-2, rerouting, one group of all tokens): its row is
    # NaN and it takes no capacity; the reference checks every other row and
    # the counts, dropped and unrouted alike.
    outs, *_ = run_block(rng, tmp_path_factory, "moe", x_fn=poison_token(np.nan),
                         **options)
    assert np.isnan(outs[0][1, 3]).all()
    assert math.isnan(float(outs[1]))


# --- expert choice and soft MoE ----------------------------------------------

@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 2.0, 4.0])
def test_expert_choice_capacity(rng, tmp_path_factory, capacity_factor):
    run_block(rng, tmp_path_factory, "expert_choice", capacity_factor=capacity_factor)


@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_expert_choice_min_and_explicit_capacity(rng, tmp_path_factory, fusion):
    run_block(rng, tmp_path_factory, "expert_choice", capacity_factor=0.25, min_capacity=3,
              fusion=fusion)
    run_block(rng, tmp_path_factory, "expert_choice", expert_capacity=5, fusion=fusion)


@pytest.mark.parametrize("slots_per_expert", [1, 3])
@pytest.mark.parametrize("normalize", [True, False])
def test_soft_moe(rng, tmp_path_factory, slots_per_expert, normalize):
    run_block(rng, tmp_path_factory, "soft_moe", slots_per_expert=slots_per_expert,
              normalize=normalize)


# --- activations, dtypes, blocks ---------------------------------------------

def test_losses_over_a_large_group(rng, tmp_path_factory):
    # 2800 equal tokens in one group: the z-loss summed in f32, one token
    # after another, was 2e-5 off (found by differential fuzzing). (Expert
    # choice lowers the same moe.z_loss; equal tokens would tie its choice.)
    def same_token(x):
        return np.broadcast_to(x[:1, :1], x.shape).copy()
    _, _, stats, _, _ = run_block(rng, tmp_path_factory, "moe", B=4, S=700, D=8, E=4, F=8,
                                  group="batch", x_fn=same_token)
    assert stats["z_loss"] > 0


@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe", "ffn"])
@pytest.mark.parametrize("fusion", [True, False], ids=["fused", "unfused"])
def test_width_one(rng, tmp_path_factory, kind, fusion):
    # d_model = d_ff = 1, and group sizes that are not a multiple of the
    # 8-row register tile: the fused expert-choice combine read only expert
    # 0's term (found by differential fuzzing).
    run_block(rng, tmp_path_factory, kind, D=1, F=1, E=2, S=3, fusion=fusion,
              batches=[1, 3])


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu"])
@pytest.mark.parametrize("kind", ["moe", "ffn"])
def test_activations(rng, tmp_path_factory, activation, kind):
    run_block(rng, tmp_path_factory, kind, activation=activation, bias=True)


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe", "ffn"])
def test_low_precision_models(rng, tmp_path_factory, dtype, kind):
    options = {"top_k": 2} if kind == "moe" else {}
    run_block(rng, tmp_path_factory, kind, dtype=dtype, activation="swiglu", **options)


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
@pytest.mark.parametrize("kind", ["moe", "expert_choice", "soft_moe", "ffn"])
def test_low_precision_odd_width_residual(rng, tmp_path_factory, dtype, kind):
    # The residual addition of a bf16 model with d_model 9 was `fadd <9 x
    # bfloat>`, which LLVM's x86 backend could not lower (moec crashed;
    # found by differential fuzzing).
    run_block(rng, tmp_path_factory, kind, D=9, F=8, dtype=dtype, residual=True)


@pytest.mark.parametrize("norm", ["rms", "layer"])
@pytest.mark.parametrize("kind", ["moe", "soft_moe", "ffn"])
def test_norm_and_residual(rng, tmp_path_factory, norm, kind):
    run_block(rng, tmp_path_factory, kind, norm=norm, residual=True)


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_norm_epsilon(rng, tmp_path_factory, norm):
    # Tokens of about 1e-3, no residual: mean(x^2) is about the epsilon of
    # SEMANTICS.md section 7, so a wrong or missing one fails the tolerance.
    run_block(rng, tmp_path_factory, "ffn", norm=norm, x_fn=lambda x: x * 1e-3)


def test_soft_moe_epsilon(rng, tmp_path_factory):
    # ||x||^2 of about 1.6e-5 next to the 1e-6 of SEMANTICS.md section 5.
    run_block(rng, tmp_path_factory, "soft_moe", normalize=True, x_fn=lambda x: x * 1e-3)


@pytest.mark.parametrize("kind, training", [
    ("moe", {"jitter": 0.5}), ("expert_choice", {"jitter": 0.5}),
    ("soft_moe", {"noise_std": 1.0})])
def test_inference_never_applies_training_noise(rng, tmp_path_factory, kind, training):
    # SEMANTICS.md sections 2 and 5: router jitter and soft-MoE logit noise
    # are training-only; compiled for inference, the block is the reference
    # without them (and the unfused path, which a jittered router takes).
    run_block(rng, tmp_path_factory, kind, training=training)


def test_biases(rng, tmp_path_factory):
    run_block(rng, tmp_path_factory, "moe", bias=True, router_bias=True, top_k=2)
    run_block(rng, tmp_path_factory, "expert_choice", bias=True, router_bias=True)


# --- a model: a stack of blocks ----------------------------------------------

TWO_BLOCKS = """
func.func @block(%x: tensor<?x8x16xf32>, %n0: tensor<16xf32>, %f1: tensor<16x32xf32>,
    %f2: tensor<32x16xf32>, %n1: tensor<16xf32>, %nb1: tensor<16xf32>, %wr: tensor<16x4xf32>,
    %w1: tensor<4x16x32xf32>, %wg: tensor<4x16x32xf32>, %w2: tensor<4x32x16xf32>)
    -> tensor<?x8x16xf32> attributes {llvm.emit_c_interface} {
  %a = moe.norm rms %x, %n0 : (tensor<?x8x16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  %b = moe.ffn %a weights(w1 %f1 w2 %f2) {activation = #moe.activation<gelu>}
      : (tensor<?x8x16xf32>, tensor<16x32xf32>, tensor<32x16xf32>) -> tensor<?x8x16xf32>
  %x1 = moe.residual %x, %b : tensor<?x8x16xf32>
  %c = moe.norm layer %x1, %n1, %nb1
      : (tensor<?x8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<?x8x16xf32>
  %r:7 = moe.token_choice %c router(%wr) experts(w1 %w1 wg %wg w2 %w2)
      {activation = #moe.activation<swiglu>, top_k = 2 : i64, capacity_factor = 1.0 : f64}
      : (tensor<?x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x16x32xf32>,
         tensor<4x32x16xf32>)
      -> (tensor<?x8x16xf32>, tensor<f32>, tensor<f32>, tensor<4xi64>, tensor<i64>,
          tensor<i64>, tensor<i64>)
  %x2 = moe.residual %x1, %r#0 : tensor<?x8x16xf32>
  return %x2 : tensor<?x8x16xf32>
}
"""


def test_two_block_model(rng, tmp_path_factory):
    # A dense pre-RMS block then a pre-LayerNorm top-2 MoE block, against the
    # reference's model_forward.
    fn = compiled(TWO_BLOCKS, [(3, np.float32)], tmp_path_factory)
    model = {"d_model": 16, "seq_len": 8, "dtype": "f32", "blocks": [
        {"layer": "ffn", "norm": "rms", "activation": "gelu"},
        {"layer": "moe", "norm": "layer", "activation": "swiglu", "top_k": 2,
         "capacity_factor": 1.0}]}
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    for _ in range(50):
        w = {"blocks.0.norm.weight": f32(rng.uniform(0.5, 1.5, 16)),
             "blocks.0.ffn.w1": f32(rng.standard_normal((16, 32)) / 4),
             "blocks.0.ffn.w2": f32(rng.standard_normal((32, 16)) / 6),
             "blocks.1.norm.weight": f32(rng.uniform(0.5, 1.5, 16)),
             "blocks.1.norm.bias": f32(rng.standard_normal(16) / 4),
             "blocks.1.router.weight": f32(rng.standard_normal((16, 4)) / 4),
             "blocks.1.experts.w1": f32(rng.standard_normal((4, 16, 32)) / 4),
             "blocks.1.experts.wg": f32(rng.standard_normal((4, 16, 32)) / 4),
             "blocks.1.experts.w2": f32(rng.standard_normal((4, 32, 16)) / 6)}
        x = f32(rng.standard_normal((3, 8, 16)))
        expected, stats = ref.model_forward(model, w, x)
        # The MoE block routes the output of block 0: redraw near-ties there.
        h1 = np.asarray(x, np.float64) + ref.ffn_layer(
            ref.norm(x, "rms", w["blocks.0.norm.weight"]),
            {k[len("blocks.0."):]: v for k, v in w.items() if k.startswith("blocks.0.")},
            activation="gelu")
        routed = ref.norm(h1, "layer", w["blocks.1.norm.weight"], w["blocks.1.norm.bias"])
        if not near_tie(None, {"router.weight": w["blocks.1.router.weight"]}, "moe",
                        {"top_k": 2}, routed):
            break
    else:
        pytest.fail("could not draw routing without near-ties")
    names = ["blocks.0.norm.weight", "blocks.0.ffn.w1", "blocks.0.ffn.w2",
             "blocks.1.norm.weight", "blocks.1.norm.bias", "blocks.1.router.weight",
             "blocks.1.experts.w1", "blocks.1.experts.wg", "blocks.1.experts.w2"]
    y, = fn(x, *[w[n] for n in names])
    assert stats[1]["dropped"] > 0  # capacity 4 for 8 tokens x 2 choices
    assert rel_error(y, expected) < TOLERANCE["f32"]
