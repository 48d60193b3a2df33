"""Self-tests of the float64 reference (moe_reference.py) against hand-worked
numbers and direct formulas from docs/SEMANTICS.md (section numbers: §)."""

import math
import pathlib
import sys

import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import moe_reference as ref  # noqa: E402

SIGMOID_1 = 1.0 / (1.0 + math.exp(-1.0))  # softmax([0, 1])[1]


def random_weights(rng, D, E, F, *, bias=False, gated=False):
    w = {"router.weight": rng.standard_normal((D, E)).astype(np.float32),
         "experts.w1": rng.standard_normal((E, D, F)) / math.sqrt(D),
         "experts.w2": rng.standard_normal((E, F, D)) / math.sqrt(F)}
    if gated:
        w["experts.wg"] = rng.standard_normal((E, D, F)) / math.sqrt(D)
    if bias:
        w["experts.b1"] = rng.standard_normal((E, F))
        w["experts.b2"] = rng.standard_normal((E, D))
    return w


def expert(w, e, v, act="relu"):
    """f_e(v) for a single row v, by the §1 formula."""
    return ref.expert_mlp(np.asarray(v)[None], w["experts.w1"][e], w["experts.w2"][e],
                          act=act)[0]


# --- §1 activations and experts, §7 norms ------------------------------------

def test_activation_values():
    h = np.array([-2.0, 0.0, 1.0])
    np.testing.assert_allclose(ref.activation("relu", h), [0.0, 0.0, 1.0], rtol=0, atol=0)
    # gelu(1) = Phi(1); gelu(-2) = -2 * Phi(-2).
    np.testing.assert_allclose(ref.activation("gelu", h),
                               [-2 * 0.022750131948179195, 0.0, 0.8413447460685429],
                               rtol=1e-13, atol=1e-15)
    tanh_1 = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1 + 0.044715)))
    assert ref.activation("gelu_tanh", h)[2] == pytest.approx(tanh_1, rel=1e-15)
    assert ref.activation("silu", h)[2] == pytest.approx(SIGMOID_1, rel=1e-15)
    assert ref.activation("silu", np.array([-1000.0]))[0] == 0.0  # no overflow warning
    with pytest.raises(ValueError):
        ref.activation("tanh", h)


@pytest.mark.parametrize("act", ["relu", "gelu_tanh", "swiglu", "geglu"])
def test_expert_mlp_with_bias_matches_formula(act):
    rng = np.random.default_rng(0)
    v, w1, wg, w2 = (rng.standard_normal(s) for s in [(5, 3), (3, 7), (3, 7), (7, 3)])
    b1, b2 = rng.standard_normal(7), rng.standard_normal(3)
    h = v @ w1 + b1
    if act == "swiglu":
        a = v @ wg
        hidden = a / (1 + np.exp(-a)) * h
    elif act == "geglu":
        a = v @ wg
        hidden = 0.5 * a * (1 + np.vectorize(math.erf)(a / math.sqrt(2))) * h
    elif act == "relu":
        hidden = np.maximum(h, 0)
    else:
        hidden = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    np.testing.assert_allclose(ref.expert_mlp(v, w1, w2, b1, b2, wg=wg, act=act),
                               hidden @ w2 + b2, rtol=1e-13)


def test_norms_match_formula():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    w, b = np.array([1.0, 2.0, 0.5, -1.0]), np.array([0.1, 0.0, 0.0, 0.2])
    rms = math.sqrt((1 + 4 + 9 + 36) / 4 + 1e-6)
    np.testing.assert_allclose(ref.norm(x, "rms", w), x / rms * w, rtol=1e-15)
    # mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5
    np.testing.assert_allclose(ref.norm(x, "layer", w, b),
                               (x - 3.0) / math.sqrt(3.5 + 1e-5) * w + b, rtol=1e-15)
    np.testing.assert_array_equal(ref.norm(x, "none"), x)


# --- §2 router precision helper -------------------------------------------------

def test_routing_margin():
    wr = np.eye(3)
    x = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 5.0], [np.nan, 0.0, 0.0]])
    p = ref.softmax(x[:2])
    assert ref.routing_margin(x, wr, top_k=1) == pytest.approx(p[0, 2] - p[0, 1], rel=1e-15)
    assert ref.routing_margin(x, wr, top_k=2) == pytest.approx(p[1, 0] - p[1, 1], abs=0)
    assert ref.routing_margin(x, wr, top_k=3) == math.inf


# --- §3.2 capacity ------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, expected", [
    ((8, 4), {}, 3),                                    # ceil(8 * 1.25 / 4) = ceil(2.5)
    ((8, 4), {"top_k": 2}, 5),                          # ceil(2 * 8 * 1.25 / 4)
    ((10, 4), {}, 4),                                   # ceil(3.125)
    ((8, 4), {"capacity_factor": 0.25, "min_capacity": 3}, 3),
    ((8, 4), {"capacity_factor": 4.0}, 8),              # 8, exactly G
    ((4, 2), {"top_k": 2, "capacity_factor": 4.0}, 4),  # 16 capped at G
    ((4, 2), {"min_capacity": 10}, 4),                  # min_capacity capped at G too
    ((8, 4), {"expert_capacity": 1, "capacity_factor": 4.0}, 1),
    ((8, 4), {"expert_capacity": 100}, 8),
    ((8, 4), {"capacity_factor": None}, 8),             # dropless
    ((8, 4), {"capacity_factor": 2.0}, 4),              # expert choice default cf
    ((50, 5), {"capacity_factor": 1.1}, 12),            # float64: 50 * 1.1 / 5 > 11
    ((1, 2), {"capacity_factor": 5e-324}, 1),           # ceil of a positive, not of 0
    ((8, 4), {"capacity_factor": 0.0}, 0),
])
def test_capacity(args, kwargs, expected):
    assert ref.compute_capacity(*args, **kwargs) == expected


# --- §3 token choice: hand-worked G = 4, E = 2 ------------------------------------
#
# Router = identity, so z_t = x_t. Choices (rank 1) and probabilities:
#   t0 (0, 1): e1, p = s      t1 (2, 0): e0, p = 0.881
#   t2 (0, 3): e1, p = 0.953  t3 (0, 1): e1, p = s      with s = sigmoid(1)
# t0 and t3 tie exactly on p; batch priority puts t0 first.

HAND_X = np.array([[[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [0.0, 1.0]]])


def hand_weights():
    rng = np.random.default_rng(1)
    w = random_weights(rng, 2, 2, 3)
    w["router.weight"] = np.eye(2, dtype=np.float32)
    return w


@pytest.mark.parametrize("C, priority, kept, positions", [
    (1, "sequence", [1, 1, 0, 0], [0, 0, -1, -1]),   # e1: t0 | t2 t3 dropped
    (1, "batch", [0, 1, 1, 0], [-1, 0, 0, -1]),      # e1 order t2, t0, t3
    (2, "sequence", [1, 1, 1, 0], [0, 0, 1, -1]),
    (2, "batch", [1, 1, 1, 0], [1, 0, 0, -1]),       # tie t0 = t3: t0 first
])
def test_hand_worked_positions(C, priority, kept, positions):
    w = hand_weights()
    y, st = ref.token_choice_layer(HAND_X, w, expert_capacity=C, priority=priority)
    assert st["capacity"] == C
    np.testing.assert_array_equal(st["choices"][0, :, 0], [1, 0, 1, 1])
    np.testing.assert_array_equal(st["kept"][0, :, 0], np.array(kept, bool))
    np.testing.assert_array_equal(st["positions"][0, :, 0], positions)
    np.testing.assert_allclose(st["gates"][0, :, 0],
                               [SIGMOID_1, ref.softmax([2.0, 0.0])[0],
                                ref.softmax([0.0, 3.0])[1], SIGMOID_1], rtol=1e-15)
    assert st["dropped"] == st["unrouted"] == 4 - sum(kept)
    np.testing.assert_array_equal(st["kept_per_expert"], [1, sum(kept) - 1])
    for t in range(4):
        e, g = st["choices"][0, t, 0], st["gates"][0, t, 0]
        expected = g * expert(w, e, HAND_X[0, t]) if kept[t] else np.zeros(2)
        np.testing.assert_allclose(y[0, t], expected, rtol=1e-14)


def test_hand_worked_reroute():
    w = hand_weights()
    # C = 2: t3 is dropped from e1 and takes the free row 1 of e0, gate p_t3[0].
    y, st = ref.token_choice_layer(HAND_X, w, expert_capacity=2, reroute_dropped=True)
    np.testing.assert_array_equal(st["choices"][0, :, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(st["positions"][0, :, 0], [0, 0, 1, 1])
    assert st["kept"].all() and st["dropped"] == 0 and st["unrouted"] == 0
    np.testing.assert_array_equal(st["kept_per_expert"], [2, 2])
    assert st["gates"][0, 3, 0] == pytest.approx(1 - SIGMOID_1, rel=1e-15)
    np.testing.assert_allclose(y[0, 3], (1 - SIGMOID_1) * expert(w, 0, HAND_X[0, 3]),
                               rtol=1e-14)
    # §6: f_e counts the choices before rerouting: f = (1/4, 3/4).
    p = ref.softmax(HAND_X[0])
    assert st["aux_loss"] == pytest.approx(
        0.01 * 2 * (0.25 * p[:, 0].mean() + 0.75 * p[:, 1].mean()), rel=1e-14)

    # C = 1: e0 is full (t1), so t2 and t3 find no free row and stay dropped.
    _, st = ref.token_choice_layer(HAND_X, w, expert_capacity=1, reroute_dropped=True)
    np.testing.assert_array_equal(st["kept"][0, :, 0], [True, True, False, False])
    np.testing.assert_array_equal(st["choices"][0, :, 0], [1, 0, 1, 1])
    assert st["dropped"] == 2

    with pytest.raises(ValueError):
        ref.token_choice_layer(HAND_X, w, top_k=2, reroute_dropped=True)


# --- §3.1 ties and top-k gates ------------------------------------------------------

def test_ties_go_to_smaller_expert():
    rng = np.random.default_rng(2)
    w = random_weights(rng, 4, 4, 8)
    w["router.weight"] = np.zeros((4, 4), np.float32)
    x = rng.standard_normal((2, 5, 4))
    _, st = ref.token_choice_layer(x, w, top_k=2, capacity_factor=None)
    assert (st["choices"] == [0, 1]).all()
    np.testing.assert_array_equal(st["gates"], np.full((2, 5, 2), 0.25))
    np.testing.assert_array_equal(st["kept_per_expert"], [10, 10, 0, 0])


def test_top_k_all_experts_normalized():
    rng = np.random.default_rng(3)
    D, E = 6, 4
    w = random_weights(rng, D, E, 8)
    x = rng.standard_normal((2, 5, D))
    y, st = ref.token_choice_layer(x, w, top_k=E, capacity_factor=None, normalize_gates=True)
    assert st["kept"].all()
    np.testing.assert_allclose(st["gates"].sum(-1), 1.0, rtol=1e-15)
    for b in range(2):
        for t in range(5):
            p = ref.softmax(ref.router_logits(x[b, t], w["router.weight"]))
            # choices sorted by descending p, gates are the probabilities
            assert list(st["choices"][b, t]) == list(np.argsort(-p, kind="stable"))
            expected = sum(p[e] * expert(w, e, x[b, t]) for e in range(E))
            np.testing.assert_allclose(y[b, t], expected, rtol=1e-13)


def test_top_2_normalized_gates():
    rng = np.random.default_rng(4)
    w = random_weights(rng, 6, 4, 8)
    x = rng.standard_normal((1, 6, 6))
    _, raw = ref.token_choice_layer(x, w, top_k=2, capacity_factor=None)
    _, norm = ref.token_choice_layer(x, w, top_k=2, capacity_factor=None,
                                     normalize_gates=True)
    np.testing.assert_allclose(norm["gates"], raw["gates"] / raw["gates"].sum(-1, keepdims=True),
                               rtol=1e-15)


# --- §6 losses ---------------------------------------------------------------------

def test_uniform_top1_aux_loss_is_alpha():
    # Token t strongly prefers expert t % 4: f_e = 1/4 and, by symmetry, P_e = 1/4.
    E, G = 4, 8
    w = random_weights(np.random.default_rng(5), E, E, 8)
    w["router.weight"] = 5 * np.eye(E, dtype=np.float32)
    x = np.eye(E)[np.arange(G) % E][None]
    _, st = ref.token_choice_layer(x, w, aux_loss_weight=0.03, capacity_factor=None)
    np.testing.assert_array_equal(st["kept_per_expert"], [2, 2, 2, 2])
    assert st["aux_loss"] == pytest.approx(0.03, rel=1e-14)


def test_losses_with_zero_router():
    # All logits equal the bias: every token picks e0, f = (1, 0, 0), P = softmax(b).
    w = random_weights(np.random.default_rng(6), 3, 3, 4)
    w["router.weight"] = np.zeros((3, 3), np.float32)
    w["router.bias"] = np.array([1.0, 0.0, -1.0], np.float32)
    x = np.random.default_rng(7).standard_normal((2, 4, 3))
    _, st = ref.token_choice_layer(x, w)
    p0 = ref.softmax(np.array([1.0, 0.0, -1.0]))[0]
    assert st["aux_loss"] == pytest.approx(0.01 * 3 * p0, rel=1e-14)
    lse = math.log(math.e + 1 + math.exp(-1))
    assert st["z_loss"] == pytest.approx(0.001 * lse**2, rel=1e-14)
    # C = ceil(4 * 1.25 / 3) = 2 per group: 2 of 4 tokens kept in each group.
    assert st["capacity"] == 2 and st["dropped"] == 4 and st["unrouted"] == 4
    # Usage: 4 kept assignments over E * C * groups = 3 * 2 * 2 rows.
    assert st["usage"] == pytest.approx(4 / 12, rel=1e-15)


# --- §4 expert choice ----------------------------------------------------------------

def test_expert_choice_ties_to_smaller_token():
    w = random_weights(np.random.default_rng(8), 4, 3, 8)
    w["router.weight"] = np.zeros((4, 3), np.float32)
    x = np.random.default_rng(9).standard_normal((2, 6, 4))
    y, st = ref.expert_choice_layer(x, w, capacity_factor=1.0)   # C = ceil(6 / 3) = 2
    assert st["capacity"] == 2 and st["aux_loss"] is None
    assert (st["token_index"] == [0, 1]).all()
    assert st["unrouted"] == 8
    np.testing.assert_array_equal(st["kept_per_expert"], [4, 4, 4])
    assert st["usage"] == 1.0  # every expert fills its C rows in both groups
    np.testing.assert_array_equal(y[:, 2:], 0.0)
    np.testing.assert_allclose(y[1, 0], sum(expert(w, e, x[1, 0]) for e in range(3)) / 3,
                               rtol=1e-14)


def test_expert_choice_matches_formula():
    rng = np.random.default_rng(10)
    D, E, G = 5, 3, 7
    w = random_weights(rng, D, E, 8)
    x = rng.standard_normal((1, G, D))
    y, st = ref.expert_choice_layer(x, w)                          # C = ceil(14 / 3) = 5
    p = ref.softmax(ref.router_logits(x[0], w["router.weight"]))
    expected = np.zeros((G, D))
    for e in range(E):
        top = sorted(range(G), key=lambda t: (-p[t, e], t))[:5]
        assert list(st["token_index"][0, e]) == top
        for t in top:
            expected[t] += p[t, e] * expert(w, e, x[0, t])
    np.testing.assert_allclose(y[0], expected, rtol=1e-13)


# --- §5 soft MoE --------------------------------------------------------------------

def soft_weights(rng, D, E, F, P):
    w = random_weights(rng, D, E, F)
    del w["router.weight"]
    w["soft.phi"] = rng.standard_normal((D, E * P))
    w["soft.scale"] = np.float32(1.0)
    return w


def test_soft_moe_equal_logits_uses_means():
    rng = np.random.default_rng(11)
    D, E, P = 4, 3, 2
    w = soft_weights(rng, D, E, 8, P)
    w["soft.phi"] = np.zeros((D, E * P))
    x = rng.standard_normal((2, 5, D))
    y, _ = ref.soft_moe_layer(x, w, slots_per_expert=P)
    for b in range(2):
        slot_out = np.mean([expert(w, s // P, x[b].mean(0)) for s in range(E * P)], axis=0)
        np.testing.assert_allclose(y[b], np.broadcast_to(slot_out, (5, D)), rtol=1e-13)


@pytest.mark.parametrize("normalize", [True, False])
def test_soft_moe_matches_formula(normalize):
    rng = np.random.default_rng(12)
    D, E, P, m = 4, 2, 2, 5
    w = soft_weights(rng, D, E, 8, P)
    w["soft.scale"] = np.float32(1.5)
    x = rng.standard_normal((1, m, D))
    y, st = ref.soft_moe_layer(x, w, slots_per_expert=P, normalize=normalize)
    X, phi = x[0], w["soft.phi"]
    if normalize:
        Xh = X / np.sqrt((X**2).sum(1, keepdims=True) + 1e-6)
        phi = phi / np.sqrt((phi**2).sum(0, keepdims=True) + 1e-6)
    else:
        Xh = X
    L = Xh @ (1.5 * phi)
    dispatch = np.exp(L) / np.exp(L).sum(0)
    combine = np.exp(L) / np.exp(L).sum(1, keepdims=True)
    slots = np.stack([expert(w, s // P, dispatch[:, s] @ X) for s in range(E * P)])
    np.testing.assert_allclose(y[0], combine @ slots, rtol=1e-13)
    np.testing.assert_allclose(st["dispatch"].sum(1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(st["combine"].sum(2), 1.0, rtol=1e-15)


# --- §8 non-finite tokens and large logits ---------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("priority, top_k", [("sequence", 1), ("batch", 1), ("sequence", 2)])
def test_non_finite_token_choice(bad, priority, top_k):
    rng = np.random.default_rng(13)
    D, E, S, bad_t = 4, 3, 6, 2
    w = random_weights(rng, D, E, 8)
    x = rng.standard_normal((2, S, D))
    x[0, bad_t, 1] = bad
    options = dict(top_k=top_k, priority=priority, expert_capacity=1)  # C pinned to 1
    y, st = ref.token_choice_layer(x, w, **options)
    # The same groups without the bad token: group 0 with it removed, group 1 alone.
    others = [t for t in range(S) if t != bad_t]
    y0, st0 = ref.token_choice_layer(x[:1, others], w, **options)
    y1, st1 = ref.token_choice_layer(x[1:], w, **options)
    assert st0["dropped"] > 0                                      # capacity is binding

    assert np.isnan(y[0, bad_t]).all()
    np.testing.assert_array_equal(y[0, others], y0[0])
    np.testing.assert_array_equal(y[1], y1[0])
    for key in ("kept", "choices", "gates", "positions"):
        np.testing.assert_array_equal(st[key][0, others], st0[key][0])
        np.testing.assert_array_equal(st[key][1], st1[key][0])
    assert not st["kept"][0, bad_t].any()
    assert (st["choices"][0, bad_t] == -1).all() and (st["positions"][0, bad_t] == -1).all()
    assert (st["gates"][0, bad_t] == 0).all()
    assert st["dropped"] == st0["dropped"] + st1["dropped"]
    assert st["unrouted"] == st0["unrouted"] + st1["unrouted"] + 1
    np.testing.assert_array_equal(st["kept_per_expert"],
                                  st0["kept_per_expert"] + st1["kept_per_expert"])
    assert math.isnan(st["aux_loss"]) and math.isnan(st["z_loss"])
    assert math.isfinite(st1["aux_loss"]) and math.isfinite(st1["z_loss"])


def test_non_finite_expert_choice():
    rng = np.random.default_rng(14)
    D, E, G = 4, 2, 4
    w = random_weights(rng, D, E, 8)
    x = rng.standard_normal((1, G, D))
    x[0, 1, 0] = np.nan
    y, st = ref.expert_choice_layer(x, w, expert_capacity=4)      # only 3 finite tokens
    y3, st3 = ref.expert_choice_layer(x[:, [0, 2, 3]], w, expert_capacity=4)
    assert np.isnan(y[0, 1]).all()
    # Equal up to the last bit of float64: numpy's BLAS may round a product
    # row differently for 4 rows than for 3 (seen on AMD Zen 5, 1 ulp).
    np.testing.assert_allclose(y[0, [0, 2, 3]], y3[0], rtol=1e-14, atol=0)
    assert (st["token_index"][0, :, 3] == -1).all()
    assert 1 not in st["token_index"]
    np.testing.assert_array_equal(st["token_index"][0, :, :3],
                                  np.array([0, 2, 3])[st3["token_index"][0]])
    assert st["unrouted"] == 1 and math.isnan(st["z_loss"])


def test_soft_moe_single_token_single_slot_is_the_expert():
    # m = 1, one expert, one slot: dispatch and combine weights are exactly 1.
    rng = np.random.default_rng(18)
    w = soft_weights(rng, 3, 1, 4, 1)
    x = rng.standard_normal((1, 1, 3))
    y, _ = ref.soft_moe_layer(x, w)
    np.testing.assert_allclose(y[0, 0], expert(w, 0, x[0, 0]), rtol=1e-15)


def test_non_finite_soft_moe_poisons_only_its_group():
    rng = np.random.default_rng(15)
    w = soft_weights(rng, 4, 2, 8, 1)
    x = rng.standard_normal((2, 3, 4))
    x[0, 2, 3] = np.inf
    y, _ = ref.soft_moe_layer(x, w)
    y1, _ = ref.soft_moe_layer(x[1:], w)
    assert np.isnan(y[0]).all()
    np.testing.assert_array_equal(y[1], y1[0])


def test_logits_1e4_by_hand():
    # z_0 = (1e4, -1e4), z_1 = (-1e4, 1e4): gates are exactly 1, and the
    # z-loss is beta * (1e4)^2 (logsumexp = 1e4 + log(1 + e^-2e4) = 1e4).
    w = random_weights(np.random.default_rng(19), 2, 2, 4)
    w["router.weight"] = np.array([[1e4, -1e4], [-1e4, 1e4]], np.float32)
    x = np.eye(2)[None]
    y, st = ref.token_choice_layer(x, w, capacity_factor=None)
    np.testing.assert_array_equal(st["gates"][0, :, 0], [1.0, 1.0])
    np.testing.assert_allclose(y[0], [expert(w, 0, x[0, 0]), expert(w, 1, x[0, 1])],
                               rtol=1e-15)
    assert st["z_loss"] == 0.001 * 1e8


def test_large_logits_stay_finite():
    rng = np.random.default_rng(16)
    D, E = 4, 3
    w = random_weights(rng, D, E, 8)
    x = rng.standard_normal((2, 4, D))
    w["router.weight"] = (w["router.weight"] / np.abs(x @ w["router.weight"]).max() * 1e4)
    assert np.abs(x @ w["router.weight"]).max() == pytest.approx(1e4)
    y, st = ref.token_choice_layer(x, w, top_k=2)
    assert np.isfinite(y).all()
    assert math.isfinite(st["aux_loss"]) and 0 < st["z_loss"] < 0.001 * 1.01e8
    y, st = ref.expert_choice_layer(x, w)
    assert np.isfinite(y).all() and math.isfinite(st["z_loss"])
    ws = soft_weights(rng, D, E, 8, 1)
    ws["soft.scale"] = 1e4
    y, _ = ref.soft_moe_layer(x, ws)
    assert np.isfinite(y).all()


# --- §7 model --------------------------------------------------------------------------

def test_model_forward_composes_blocks():
    rng = np.random.default_rng(17)
    D, E, F = 4, 2, 8
    moe = random_weights(rng, D, E, F)
    ffn = {"ffn.w1": rng.standard_normal((D, F)), "ffn.w2": rng.standard_normal((F, D)),
           "norm.weight": rng.standard_normal(D), "norm.bias": rng.standard_normal(D)}
    moe["norm.weight"] = rng.standard_normal(D)
    weights = {f"blocks.0.{k}": v for k, v in moe.items()}
    weights.update({f"blocks.1.{k}": v for k, v in ffn.items()})
    model = {"d_model": D, "seq_len": 3, "dtype": "bf16", "blocks": [
        {"layer": "moe", "norm": "rms", "experts": E, "d_ff": F, "top_k": 2,
         "capacity_factor": 1.0, "bias": False},
        {"layer": "ffn", "norm": "layer", "residual": False, "d_ff": F, "activation": "gelu"},
    ]}
    x = rng.standard_normal((2, 3, D)).astype(ml_dtypes.bfloat16)
    y, stats = ref.model_forward(model, weights, x)
    x64 = x.astype(np.float64)
    h1, st1 = ref.token_choice_layer(ref.norm(x64, "rms", moe["norm.weight"]), moe, top_k=2,
                                     capacity_factor=1.0)
    h = x64 + h1
    expected = ref.ffn_layer(ref.norm(h, "layer", ffn["norm.weight"], ffn["norm.bias"]), ffn,
                             activation="gelu")
    np.testing.assert_array_equal(y, expected)
    assert [s["kind"] for s in stats] == ["moe", "ffn"]
    assert stats[0]["capacity"] == st1["capacity"] == 3
