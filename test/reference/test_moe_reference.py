"""Self-tests of the float64 reference against hand-worked cases of
SEMANTICS.md: the reference is the oracle of every execution test, so it is
checked on numbers computed by hand, not against itself."""

import math
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import moe_reference as ref  # noqa: E402


def identity_experts(E, D):
    """Expert e maps v to (e + 1) * relu(v)... with relu on positive inputs
    the identity scaled by e + 1, so outputs reveal which expert ran."""
    w1 = np.stack([np.eye(D) for _ in range(E)])
    w2 = np.stack([(e + 1) * np.eye(D) for e in range(E)])
    return w1, w2


def router_for(logits_per_token):
    """x and Wr such that token t's logits are exactly `logits_per_token[t]`:
    x = one-hot(t) (D = G), Wr = the logits matrix."""
    logits = np.asarray(logits_per_token, np.float64)
    G, E = logits.shape
    x = np.eye(G)[None]  # one group, D = G
    return x, logits


def test_capacity_formula():
    assert ref.compute_capacity(8, 4, 1, 1.25) == 3        # ceil(2.5)
    assert ref.compute_capacity(8, 4, 2, 1.0) == 4         # ceil(4)
    assert ref.compute_capacity(10, 4, 1, 1.25) == 4       # ceil(3.125)
    assert ref.compute_capacity(8, 4, 1, 0.25, min_capacity=3) == 3
    assert ref.compute_capacity(8, 2, 2, 4.0) == 8         # capped at G
    assert ref.compute_capacity(8, 4, 1, None) == 8        # dropless
    assert ref.compute_capacity(8, 4, 1, 1.25, expert_capacity=5) == 5
    assert ref.compute_capacity(8, 4, 1, 1.25, expert_capacity=50) == 8


def test_priority_positions_and_rerouting():
    # G = 4 tokens, E = 2, C = 1 (cf = 0.5). Token probabilities for expert 0:
    # t0 0.6, t1 0.9, t2 0.3, t3 0.8 (so t2 prefers expert 1).
    p0 = np.array([0.6, 0.9, 0.3, 0.8])
    logits = np.log(np.stack([p0, 1 - p0], axis=1))
    x, wr = router_for(logits)
    w1, w2 = identity_experts(2, 4)
    w = {"router.weight": wr, "experts.w1": w1, "experts.w2": w2}
    # Sequence priority: t0 takes expert 0's row, t2 expert 1's row.
    _, s = ref.token_choice_layer(x, w, capacity_factor=0.5, aux_loss_weight=0, z_loss_weight=0)
    assert s["capacity"] == 1
    assert s["kept"][0, :, 0].tolist() == [True, False, True, False]
    assert s["dropped"] == 2 and s["unrouted"] == 2
    # Batch priority orders by rank-1 probability: t1 (0.9), t3 (0.8), ...
    _, s = ref.token_choice_layer(x, w, capacity_factor=0.5, priority="batch")
    assert s["kept"][0, :, 0].tolist() == [False, True, True, False]
    # Rerouting: dropped tokens (t1 then t3 in sequence order) try expert 1,
    # whose single row t2 already holds: nobody is rerouted with C = 1.
    _, s = ref.token_choice_layer(x, w, capacity_factor=0.5, reroute_dropped=True)
    assert s["kept"][0, :, 0].tolist() == [True, False, True, False]
    # With C = 2 (cf = 1): expert 0 keeps t0, t1; expert 1 keeps t2; t3 is
    # rerouted to expert 1's free row 1 with gate p = 0.2.
    y, s = ref.token_choice_layer(x, w, capacity_factor=1.0, reroute_dropped=True)
    assert s["kept"][0, :, 0].all()
    assert s["choices"][0, :, 0].tolist() == [0, 0, 1, 1]
    assert s["positions"][0, :, 0].tolist() == [0, 1, 0, 1]
    assert s["gates"][0, 3, 0] == pytest.approx(0.2)
    # Output of t3: gate 0.2 times expert 1 (2 * identity) of x_3 = e_3.
    np.testing.assert_allclose(y[0, 3], 0.4 * np.eye(4)[3])


def test_ties_go_to_the_smaller_expert_and_token():
    x, wr = router_for(np.zeros((4, 3)))  # every probability is 1/3
    w1, w2 = identity_experts(3, 4)
    w = {"router.weight": wr, "experts.w1": w1, "experts.w2": w2}
    _, s = ref.token_choice_layer(x, w, top_k=2, capacity_factor=None)
    assert (s["choices"][0] == [0, 1]).all()
    _, s = ref.expert_choice_layer(x, w, capacity_factor=1.5)  # C = 2
    assert s["token_index"][0].tolist() == [[0, 1]] * 3


def test_uniform_routing_gives_alpha():
    # 8 tokens spread evenly over 4 experts with symmetric probabilities:
    # f_e = 1/4, P_e = 1/4, L_aux = alpha * E * sum f P = alpha.
    logits = np.full((8, 4), 0.0)
    for t in range(8):
        logits[t, t % 4] = 2.0
    x, wr = router_for(logits)
    w1, w2 = identity_experts(4, 8)
    w = {"router.weight": wr, "experts.w1": w1, "experts.w2": w2}
    _, s = ref.token_choice_layer(x, w, aux_loss_weight=0.01)
    assert s["aux_loss"] == pytest.approx(0.01, rel=1e-12)
    # z-loss: logsumexp of [2, 0, 0, 0] squared, times beta.
    lse = math.log(math.exp(2) + 3)
    assert s["z_loss"] == pytest.approx(0.001 * lse**2, rel=1e-12)


def test_normalized_top_k_gates_sum_to_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 5))
    w = {"router.weight": rng.standard_normal((5, 4)),
         "experts.w1": rng.standard_normal((4, 5, 7)), "experts.w2": rng.standard_normal((4, 7, 5))}
    _, s = ref.token_choice_layer(x, w, top_k=4, normalize_gates=True, capacity_factor=None)
    np.testing.assert_allclose(s["gates"].sum(-1), 1.0)
    assert sorted(s["choices"][0, 0]) == [0, 1, 2, 3]


def test_soft_moe_by_hand():
    # One token, one expert, one slot: dispatch and combine weights are 1,
    # so y = f(x) exactly.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 3))
    w = {"soft.phi": rng.standard_normal((3, 1)), "soft.scale": 1.0,
         "experts.w1": rng.standard_normal((1, 3, 4)), "experts.w2": rng.standard_normal((1, 4, 3))}
    y, _ = ref.soft_moe_layer(x, w)
    np.testing.assert_allclose(y[0, 0], ref.expert_mlp(x[0], w["experts.w1"][0], w["experts.w2"][0])[0])
    # Equal logits (phi = 0): every slot is the mean token, every output the
    # mean of the slot outputs.
    x = rng.standard_normal((1, 5, 3))
    w2 = dict(w, **{"soft.phi": np.zeros((3, 2)), "experts.w1": rng.standard_normal((2, 3, 4)),
                    "experts.w2": rng.standard_normal((2, 4, 3))})
    y, _ = ref.soft_moe_layer(x, w2)
    mean = x[0].mean(0, keepdims=True)
    slots = [ref.expert_mlp(mean, w2["experts.w1"][e], w2["experts.w2"][e])[0] for e in range(2)]
    np.testing.assert_allclose(y[0], np.tile(np.mean(slots, 0), (5, 1)), atol=1e-12)


def test_non_finite_token():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3))
    x[1, 2, 0] = np.nan
    w = {"router.weight": rng.standard_normal((3, 2)),
         "experts.w1": rng.standard_normal((2, 3, 4)), "experts.w2": rng.standard_normal((2, 4, 3))}
    y, s = ref.token_choice_layer(x, w, expert_capacity=1)
    assert np.isnan(y[1, 2]).all() and np.isfinite(np.delete(y.reshape(8, 3), 6, 0)).all()
    assert math.isnan(s["aux_loss"]) and math.isnan(s["z_loss"])
    assert s["choices"][1, 2, 0] == -1 and not s["kept"][1, 2, 0]
    # The token takes no capacity: group 1 routes as if it were absent.
    y2, s2 = ref.token_choice_layer(np.delete(x, 2, axis=1)[1:], w, expert_capacity=1)
    np.testing.assert_allclose(np.delete(y[1], 2, 0), y2[0])
    y, s = ref.soft_moe_layer(x, {"soft.phi": rng.standard_normal((3, 2)), "soft.scale": 1.0,
                                  "experts.w1": w["experts.w1"], "experts.w2": w["experts.w2"]})
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()


def test_huge_logits_do_not_overflow():
    x, wr = router_for([[1e4, -1e4], [-1e4, 1e4]])
    w1, w2 = identity_experts(2, 2)
    y, s = ref.token_choice_layer(x, {"router.weight": wr, "experts.w1": w1, "experts.w2": w2},
                                  capacity_factor=None)
    assert np.isfinite(y).all() and np.isfinite(s["z_loss"])
    np.testing.assert_allclose(y[0], [[1, 0], [0, 2]])


def test_norms_and_activations_by_formula():
    v = np.array([[1.0, -2.0, 3.0, 0.5]])
    np.testing.assert_allclose(ref.norm(v, "rms", np.ones(4)), v / np.sqrt(np.mean(v**2) + 1e-6))
    mu, var = v.mean(), v.var()
    np.testing.assert_allclose(ref.norm(v, "layer", 2 * np.ones(4), np.ones(4)),
                               2 * (v - mu) / np.sqrt(var + 1e-5) + 1)
    assert ref.activation("gelu", np.array([1.0]))[0] == pytest.approx(0.8413447460685429)
    assert ref.activation("silu", np.array([1.0]))[0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert ref.activation("gelu_tanh", np.array([1.0]))[0] == pytest.approx(0.8411919906082768)
