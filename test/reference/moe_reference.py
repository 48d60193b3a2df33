"""Float64 numpy reference of docs/SEMANTICS.md, written from that page alone.

Conventions
-----------
* Activations `x` are `[B, S, D]` in any float dtype (float32, float16,
  ml_dtypes.bfloat16, ...); they are converted to float64 first and every
  computation, router included, runs in float64. Outputs are float64.
* Weights of one layer are a dict named like the model's tensors without the
  `blocks.{i}.` prefix: `router.weight [D, E]`, `router.bias [E]`,
  `experts.w1 [E, D, F]`, `experts.wg [E, D, F]`, `experts.w2 [E, F, D]`,
  `experts.b1 [E, F]`, `experts.b2 [E, D]`, `soft.phi [D, E*P]`,
  `soft.scale` (scalar), `ffn.w1`, `ffn.wg`, `ffn.w2`, `ffn.b1`, `ffn.b2`,
  `norm.weight`, `norm.bias`. An absent key is an unused tensor.
* Section numbers (§) refer to SEMANTICS.md.

Routing precision (§2, §8)
--------------------------
The compiled router computes its logits in float32; this reference computes
them in float64 from the same (float32) router weights. Both agree on every
routing decision except near-ties, where float32 rounding may legitimately
break a tie differently. Tests on random inputs must therefore keep their
draws away from ties: `routing_margin` gives the smallest gap between the
k-th and (k+1)-th probability of any token, and a test should redraw when it
is within float32 rounding (say below 1e-5). Exact ties (equal float64
probabilities, e.g. a zero router) are deterministic and may be tested.
"""

import inspect
import math

import numpy as np

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu")
GATED = ("swiglu", "geglu")

# math.erf is correctly rounded to within an ulp or so; numpy has no erf.
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


# --- §1 experts ---------------------------------------------------------------

def activation(name, h):
    """Elementwise activation of §1. For the gated names the function applied
    to the gate branch is returned: silu for swiglu, exact gelu for geglu."""
    h = _f64(h)
    if name == "relu":
        return np.maximum(h, 0.0)
    if name in ("gelu", "geglu"):
        return 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * h * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))
    if name in ("silu", "swiglu"):
        # exp(-h) overflows to inf for h < -709; h / inf = -0.0 is the right limit.
        with np.errstate(over="ignore"):
            return h / (1.0 + np.exp(-h))
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def expert_mlp(v, w1, w2, b1=None, b2=None, wg=None, act="relu"):
    """One expert on rows `v [M, D]` (§1): `act(v W1 + b1) W2 + b2`, or for a
    gated activation `(act(v Wg) * (v W1 + b1)) W2 + b2`. §1 writes the gated
    form without biases; an optional b1 belongs to the W1 (linear) branch."""
    v = _f64(v)
    h = v @ _f64(w1)
    if b1 is not None:
        h = h + _f64(b1)
    if act in GATED:
        if wg is None:
            raise ValueError(f"activation {act!r} needs a gate weight wg")
        h = activation(act, v @ _f64(wg)) * h
    else:
        h = activation(act, h)
    out = h @ _f64(w2)
    if b2 is not None:
        out = out + _f64(b2)
    return out


def _all_experts(x_group, w, act):
    """f_e(x_t) for every expert e and every token t of a group: [E, G, D].
    (Computing all pairs is wasteful but keeps the combine step obvious.)"""
    E = w["experts.w1"].shape[0]

    def part(name, e):
        return w[name][e] if name in w else None

    # Rows of non-finite tokens come out NaN/inf; the callers overwrite or
    # propagate them by the §8 rule, so numpy's warnings are noise here.
    with np.errstate(invalid="ignore", over="ignore"):
        return np.stack([
            expert_mlp(x_group, w["experts.w1"][e], w["experts.w2"][e], part("experts.b1", e),
                       part("experts.b2", e), part("experts.wg", e), act)
            for e in range(E)])


# --- §2 router ------------------------------------------------------------------

def router_logits(x_tokens, wr, br=None):
    """§2: `z = x Wr (+ br)`, `[N, D] -> [N, E]`, here in float64. A NaN or
    infinite input gives non-finite logits (inf - inf = NaN silently): §8."""
    with np.errstate(invalid="ignore"):
        z = _f64(x_tokens) @ _f64(wr)
    return z if br is None else z + _f64(br)


def softmax(z, axis=-1):
    """Stable softmax (subtract the max). A slice holding a NaN or +inf gives
    NaN, silently: callers treat such tokens by the §8 rule."""
    z = _f64(z)
    with np.errstate(invalid="ignore"):
        e = np.exp(z - np.max(z, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)


def logsumexp(z, axis=-1):
    """Stable logsumexp over `axis` (NaN for a slice with a non-finite max)."""
    z = _f64(z)
    with np.errstate(invalid="ignore"):
        m = np.max(z, axis=axis, keepdims=True)
        return np.squeeze(m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True)), axis)


def _rank_experts(p):
    """Experts of each token by descending probability, ties towards the
    smaller expert index (a stable sort of -p): `[G, E] -> [G, E]` indices."""
    return np.argsort(-p, axis=-1, kind="stable")


def routing_margin(x_tokens, wr, br=None, top_k=1):
    """Smallest gap, over the tokens with finite logits, between the k-th and
    (k+1)-th largest router probability. Routing of random inputs is
    unambiguous between f32 and f64 only when this is well above f32
    rounding. `inf` when top_k >= E or no token is finite."""
    z = router_logits(np.reshape(x_tokens, (-1, np.shape(wr)[0])), wr, br)
    z = z[np.isfinite(z).all(-1)]
    if top_k >= z.shape[-1] or z.shape[0] == 0:
        return math.inf
    p = -np.sort(-softmax(z), axis=-1)
    return float(np.min(p[:, top_k - 1] - p[:, top_k]))


# --- §1 groups, §3.2 capacity ---------------------------------------------------

def _groups(x, group):
    """`[B, S, D] -> [NG, G, D]` (§1): one group per sequence, or one group of
    all B*S tokens."""
    if group == "sequence":
        return x
    if group == "batch":
        return x.reshape(1, -1, x.shape[-1])
    raise ValueError(f"unknown group {group!r}; expected 'sequence' or 'batch'")


def compute_capacity(G, E, top_k=1, capacity_factor=1.25, expert_capacity=None,
                     min_capacity=0):
    """Rows per expert per group (§3.2; §4 is the same with top_k = 1):
    `min(G, max(min_capacity, ceil(k * G * cf / E)))`; dropless (cf None): G;
    an explicit expert_capacity N: `min(N, G)`.

    `k * G * cf / E` is evaluated in float64, left to right, so a factor whose
    binary value is not the decimal one can round up past an integer
    (G = 50, E = 5, cf = 1.1: 50 * 1.1 / 5 = 11.000000000000002 -> 12), as the
    compiled code, which evaluates the same float64 expression, does too."""
    if expert_capacity is not None:
        return min(int(expert_capacity), G)
    if capacity_factor is None:
        return G
    rows = float(top_k) * float(G) * float(capacity_factor) / float(E)
    # A positive factor keeps at least a row, as the ceiling of a positive
    # number is: a subnormal factor's float64 product underflows to 0.
    floor = 1 if capacity_factor > 0 else 0
    return min(max(int(min_capacity), floor, math.ceil(rows)), G)


def _loss_or_nan(loss, valid):
    """§8: a layer's loss over a group holding a non-finite token is NaN."""
    return loss if valid.all() else math.nan


def _z_loss(z, beta):
    """§6 router z-loss of one group: beta * mean_t logsumexp(z_t)^2."""
    return beta * float(np.mean(logsumexp(z) ** 2))


# --- §3 token choice --------------------------------------------------------------

def token_choice_layer(x, weights, *, top_k=1, capacity_factor=1.25, expert_capacity=None,
                       min_capacity=0, normalize_gates=False, priority="sequence",
                       reroute_dropped=False, group="sequence", aux_loss_weight=0.01,
                       z_loss_weight=0.001, activation="relu"):
    """Token-choice layer (§2, §3, §6, §8). Returns `(y [B, S, D], stats)`:

    kind "moe"; capacity C; aux_loss, z_loss (means over groups, NaN when a
    group holds a non-finite token); kept_per_expert [E] (kept assignments,
    summed over groups); dropped (assignments not kept in the end, i.e. after
    rerouting; non-finite tokens have none); unrouted (tokens with nothing
    kept, non-finite ones included); groups NG; and per assignment
    `[NG, G, k]` in choice-rank order, after rerouting: kept, choices (expert,
    -1 for a non-finite token), gates (also reported for dropped assignments,
    which contribute nothing; 0 for a non-finite token), positions (row in the
    expert's buffer, -1 when not kept).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    if priority not in ("sequence", "batch"):
        raise ValueError(f"unknown priority {priority!r}; expected 'sequence' or 'batch'")
    if reroute_dropped and top_k != 1:
        raise ValueError("reroute_dropped is only defined for top_k = 1 (§3.5)")
    x = _f64(x)
    xs = _groups(x, group)
    NG, G, _ = xs.shape
    E = np.shape(weights["router.weight"])[1]
    k = top_k
    if not 1 <= k <= E:
        raise ValueError(f"top_k = {k} must be in 1..E = {E}")
    C = compute_capacity(G, E, k, capacity_factor, expert_capacity, min_capacity)

    y = np.zeros_like(xs)
    kept = np.zeros((NG, G, k), bool)
    choices = np.full((NG, G, k), -1, np.int64)
    gates = np.zeros((NG, G, k))
    positions = np.full((NG, G, k), -1, np.int64)
    aux_losses, z_losses = [], []
    for g in range(NG):
        z = router_logits(xs[g], weights["router.weight"], weights.get("router.bias"))
        # §8: a token with any non-finite logit is routed nowhere and takes no
        # capacity; everything below only looks at the valid tokens.
        valid = np.isfinite(z).all(-1)
        p = softmax(z)
        ranking = _rank_experts(p)
        idx = np.flatnonzero(valid)

        # §3.1 choices and gates.
        choices[g, idx] = ranking[idx, :k]
        gates[g, idx] = np.take_along_axis(p[idx], ranking[idx, :k], axis=-1)
        if normalize_gates:
            gates[g, idx] /= gates[g, idx].sum(-1, keepdims=True)

        # §3.3 priority order of the valid tokens, the same for every rank:
        # token order, or descending rank-1 probability with ties towards the
        # smaller t (a stable sort of the token-ordered list).
        order = idx
        if priority == "batch":
            order = idx[np.argsort(-p[idx, ranking[idx, 0]], kind="stable")]

        # §3.4 positions. Assignments in priority order are rank-major: all of
        # rank 0 (tokens in `order`), then rank 1, ... Position = number of
        # earlier assignments to the same expert (exclusive cumulative count).
        experts_in_order = choices[g][order].T.ravel()               # [k * n]
        onehot = experts_in_order[:, None] == np.arange(E)           # [k * n, E]
        earlier = np.cumsum(onehot, axis=0) - onehot
        pos = earlier[np.arange(len(experts_in_order)), experts_in_order].reshape(k, -1).T
        keep = pos < C
        kept[g][order] = keep
        positions[g][order] = np.where(keep, pos, -1)

        # §3.5 "No Token Left Behind" (top-1): dropped tokens, in priority
        # order, take the first of their other experts (descending p, ties to
        # the smaller index) that still has a free row; gate = p of it.
        if reroute_dropped:
            used = np.bincount(choices[g][kept[g]], minlength=E)
            for t in order:
                if kept[g, t, 0]:
                    continue
                for e in ranking[t, 1:]:
                    if used[e] < C:
                        choices[g, t, 0], gates[g, t, 0] = e, p[t, e]
                        positions[g, t, 0], kept[g, t, 0] = used[e], True
                        used[e] += 1
                        break

        # §3.6 combine: y_t = sum over kept j of g_t^(j) f_{e_t^(j)}(x_t);
        # nothing kept -> 0; §8: a non-finite token's row is NaN.
        outs = _all_experts(xs[g], weights, activation)
        for j in range(k):
            t = np.flatnonzero(kept[g, :, j])
            y[g, t] += gates[g, t, j, None] * outs[choices[g, t, j], t]
        y[g, ~valid] = np.nan

        # §6 losses. f_e counts the top-k choices before any dropping or
        # rerouting (`ranking`, not the rerouted `choices`).
        f = np.bincount(ranking[idx, :k].ravel(), minlength=E) / G
        P = p.mean(0)
        aux_losses.append(_loss_or_nan(aux_loss_weight * E * float(np.sum(f * P)), valid))
        z_losses.append(_loss_or_nan(_z_loss(z, z_loss_weight), valid))

    routed = choices[..., 0] >= 0                                    # finite tokens [NG, G]
    stats = dict(
        kind="moe", capacity=C,
        aux_loss=float(np.mean(aux_losses)), z_loss=float(np.mean(z_losses)),
        kept_per_expert=np.bincount(choices[kept], minlength=E).astype(np.int64),
        dropped=int((~kept & routed[..., None]).sum()),
        unrouted=int((~kept.any(-1)).sum()),
        groups=NG, kept=kept, choices=choices, gates=gates, positions=positions)
    stats["usage"] = _usage(stats, E)
    return y.reshape(x.shape), stats


def _usage(stats, E):
    """§6 expert usage: kept assignments over E * C * groups (None without
    capacity)."""
    rows = E * stats["capacity"] * stats["groups"]
    return float(stats["kept_per_expert"].sum()) / rows if rows else None


# --- §4 expert choice ---------------------------------------------------------------

def expert_choice_layer(x, weights, *, capacity_factor=2.0, expert_capacity=None,
                        min_capacity=0, group="sequence", z_loss_weight=0.001,
                        activation="relu"):
    """Expert-choice layer (§4, §6, §8). Returns `(y [B, S, D], stats)`:

    kind "expert_choice"; capacity C; aux_loss None (§6: none for expert
    choice); z_loss (NaN when a group holds a non-finite token);
    kept_per_expert [E] (tokens taken, summed over groups); dropped None (no
    assignment exists to drop); unrouted (tokens no expert took, non-finite
    ones included); groups NG; token_index [NG, E, C] (the token of the group
    in expert e's slot c, by descending p then smaller t; -1 when fewer finite
    tokens than C exist).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    x = _f64(x)
    xs = _groups(x, group)
    NG, G, _ = xs.shape
    E = np.shape(weights["router.weight"])[1]
    C = compute_capacity(G, E, 1, capacity_factor, expert_capacity, min_capacity)

    y = np.zeros_like(xs)
    token_index = np.full((NG, E, C), -1, np.int64)
    z_losses = []
    for g in range(NG):
        z = router_logits(xs[g], weights["router.weight"], weights.get("router.bias"))
        valid = np.isfinite(z).all(-1)     # §8: non-finite tokens are never taken
        p = softmax(z)
        idx = np.flatnonzero(valid)
        outs = _all_experts(xs[g], weights, activation)
        for e in range(E):
            # Largest p[:, e] first, ties towards the smaller t (stable sort).
            taken = idx[np.argsort(-p[idx, e], kind="stable")][:C]
            token_index[g, e, :len(taken)] = taken
            y[g, taken] += p[taken, e, None] * outs[e, taken]
        y[g, ~valid] = np.nan
        z_losses.append(_loss_or_nan(_z_loss(z, z_loss_weight), valid))

    taken_per_group = [np.unique(ti[ti >= 0]).size for ti in token_index]
    stats = dict(
        kind="expert_choice", capacity=C, aux_loss=None, z_loss=float(np.mean(z_losses)),
        kept_per_expert=(token_index >= 0).sum(axis=(0, 2)).astype(np.int64),
        dropped=None, unrouted=int(NG * G - sum(taken_per_group)),
        groups=NG, token_index=token_index)
    stats["usage"] = _usage(stats, E)
    return y.reshape(x.shape), stats


# --- §5 soft MoE ----------------------------------------------------------------------

def soft_moe_layer(x, weights, *, slots_per_expert=1, normalize=True, group="sequence",
                   activation="relu"):
    """Soft MoE (§5, §8). E = experts.w1.shape[0], P = slots_per_expert, slot
    s is processed by expert floor(s / P). `soft.scale` defaults to its
    initial value 1.0 when absent. Returns `(y [B, S, D], stats)` with stats:
    kind "soft_moe", capacity / aux_loss / z_loss None, groups NG, and the
    weights dispatch [NG, m, E*P] (softmax over tokens, columns sum to 1) and
    combine [NG, m, E*P] (softmax over slots, rows sum to 1).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    x = _f64(x)
    xs = _groups(x, group)
    NG, m, D = xs.shape
    E = np.shape(weights["experts.w1"])[0]
    P = slots_per_expert
    phi = _f64(weights["soft.phi"])
    if phi.shape != (D, E * P):
        raise ValueError(f"soft.phi has shape {phi.shape}, expected {(D, E * P)}")
    scale = float(_f64(weights.get("soft.scale", 1.0)))
    eps = 1e-6
    # §5.1: Phi normalized column-wise (over D), then scaled.
    phih = scale * (phi / np.sqrt(np.sum(phi**2, axis=0, keepdims=True) + eps) if normalize
                    else phi)
    slot_expert = np.arange(E * P) // P

    y = np.zeros_like(xs)
    dispatch = np.zeros((NG, m, E * P))
    combine = np.zeros((NG, m, E * P))
    for g in range(NG):
        X = xs[g]
        with np.errstate(invalid="ignore", over="ignore"):
            # §5.1: tokens normalized row-wise; §5.2 logits.
            Xh = X / np.sqrt(np.sum(X**2, axis=1, keepdims=True) + eps) if normalize else X
            L = Xh @ phih                                            # [m, n*p]
        dispatch[g] = softmax(L, axis=0)                              # §5.3 over tokens
        combine[g] = softmax(L, axis=1)                               # §5.6 over slots
        with np.errstate(invalid="ignore"):                           # §8 NaN propagation
            Xs = dispatch[g].T @ X                                    # §5.4, un-normalized X
        outs = _all_experts(Xs, weights, activation)                 # [E, n*p, D]
        Ys = outs[slot_expert, np.arange(E * P)]                      # §5.5 f_{s//p}(Xs[s])
        y[g] = combine[g] @ Ys                                        # §5.7
        # §8: a non-finite token poisons its own group, and only that one.
        if not (np.isfinite(X).all() and np.isfinite(L).all()):
            y[g] = np.nan
    stats = dict(kind="soft_moe", capacity=None, aux_loss=None, z_loss=None, groups=NG,
                 dispatch=dispatch, combine=combine)
    return y.reshape(x.shape), stats


# --- §7 dense layer, norms, blocks ------------------------------------------------------

def ffn_layer(x, weights, *, activation="relu"):
    """One dense expert on every token (§7 `ffn`); returns y only."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    x = _f64(x)
    rows = x.reshape(-1, x.shape[-1])
    out = expert_mlp(rows, weights["ffn.w1"], weights["ffn.w2"], weights.get("ffn.b1"),
                     weights.get("ffn.b2"), weights.get("ffn.wg"), activation)
    return out.reshape(x.shape)


def norm(x, kind, weight=None, bias=None):
    """§7 pre-norm over the last axis: none, rms (eps 1e-6) or layer (eps
    1e-5, biased variance). A missing weight is 1, a missing bias 0."""
    x = _f64(x)
    w = 1.0 if weight is None else _f64(weight)
    b = 0.0 if bias is None else _f64(bias)
    if kind == "none":
        return x
    if kind == "rms":
        return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * w
    if kind == "layer":
        mean = np.mean(x, axis=-1, keepdims=True)
        var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * w + b
    raise ValueError(f"unknown norm {kind!r}; expected 'none', 'rms' or 'layer'")


_FFN_STATS = dict(kind="ffn", capacity=None, aux_loss=None, z_loss=None)
_LAYERS = {"moe": token_choice_layer, "expert_choice": expert_choice_layer,
           "soft_moe": soft_moe_layer, "ffn": ffn_layer}


def _keyword_options(fn):
    return {name for name, prm in inspect.signature(fn).parameters.items()
            if prm.kind is inspect.Parameter.KEYWORD_ONLY}


def model_forward(model, weights, x):
    """A stack of blocks (§7): `x <- x + layer(norm(x))` when `residual`
    (default true), else `x <- layer(norm(x))`. `model` is a parsed model
    description; each block passes on the keys that are options of its layer
    function and ignores the rest (layer, norm, residual, and shape
    information such as experts, d_ff, bias, router_bias). `weights` is flat,
    named `blocks.{i}.<tensor>`. Everything runs in float64 whatever the
    model dtype. Returns `(y [B, S, D], [stats per block])` (ffn blocks get
    `{"kind": "ffn", "capacity": None, "aux_loss": None, "z_loss": None}`).
    """
    h = _f64(x)
    all_stats = []
    for i, block in enumerate(model["blocks"]):
        prefix = f"blocks.{i}."
        w = {name[len(prefix):]: t for name, t in weights.items() if name.startswith(prefix)}
        kind = block["layer"]
        if kind not in _LAYERS:
            raise ValueError(f"unknown layer {kind!r}; expected one of {tuple(_LAYERS)}")
        fn = _LAYERS[kind]
        options = {key: block[key] for key in _keyword_options(fn) if key in block}
        normed = norm(h, block.get("norm", "none"), w.get("norm.weight"), w.get("norm.bias"))
        if kind == "ffn":
            out, stats = fn(normed, w, **options), dict(_FFN_STATS)
        else:
            out, stats = fn(normed, w, **options)
        h = h + out if block.get("residual", True) else out
        all_stats.append(stats)
    return h, all_stats
