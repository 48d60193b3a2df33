"""Float64 numpy reference of docs/SEMANTICS.md, written from that page alone.

Every function takes activations `[B, S, D]` in any float dtype (converted to
float64) and weights as a dict named like the model's safetensors entries
without the `blocks.i.` prefix (`router.weight`, `experts.w1`, `soft.phi`,
...). Layer functions return `(y, stats)`; see `token_choice_layer` for the
statistics. Section numbers refer to SEMANTICS.md.
"""

import math

import numpy as np

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu")
GATED = ("swiglu", "geglu")

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def activation(name, h):
    """Section 1 activations (the gate of swiglu/geglu is silu/gelu)."""
    h = _f64(h)
    if name == "relu":
        return np.maximum(h, 0.0)
    if name in ("gelu", "geglu"):
        return 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * h * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))
    if name in ("silu", "swiglu"):
        with np.errstate(over="ignore"):
            return h / (1.0 + np.exp(-h))
    raise ValueError(f"unknown activation {name!r}")


def expert_mlp(v, w1, w2, b1=None, b2=None, wg=None, act="relu"):
    """One expert on rows `v [M, D]`: act(v W1 + b1) W2 + b2, or the gated
    form (act(v Wg) * (v W1 + b1)) W2 + b2 (section 1)."""
    v = _f64(v)
    h = v @ _f64(w1)
    if b1 is not None:
        h = h + _f64(b1)
    if act in GATED:
        if wg is None:
            raise ValueError(f"activation {act} needs a wg weight")
        h = activation(act, v @ _f64(wg)) * h
    else:
        h = activation(act, h)
    out = h @ _f64(w2)
    if b2 is not None:
        out = out + _f64(b2)
    return out


def router_logits(x_tokens, wr, br=None):
    """Section 2: z = x Wr (+ br), here in float64."""
    z = _f64(x_tokens) @ _f64(wr)
    return z if br is None else z + _f64(br)


def softmax(z, axis=-1):
    z = _f64(z)
    with np.errstate(invalid="ignore"):
        shifted = z - np.max(z, axis=axis, keepdims=True)
        e = np.exp(shifted)
        return e / np.sum(e, axis=axis, keepdims=True)


def logsumexp(z, axis=-1):
    z = _f64(z)
    with np.errstate(invalid="ignore"):
        m = np.max(z, axis=axis, keepdims=True)
        return (m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))).squeeze(axis)


def compute_capacity(G, E, top_k=1, capacity_factor=1.25, expert_capacity=None,
                     min_capacity=0):
    """Section 3.2 (and section 4 with top_k = 1)."""
    if expert_capacity is not None:
        return min(int(expert_capacity), G)
    if capacity_factor is None:
        return G
    # k * G * cf / E, in the same order of operations as the compiler.
    rows = float(top_k) * float(G) * float(capacity_factor) / float(E)
    return min(max(int(min_capacity), math.ceil(rows)), G)


def _groups(x, group):
    """[B, S, D] -> [NG, G, D] (section 1)."""
    x = _f64(x)
    if group == "sequence":
        return x
    if group == "batch":
        return x.reshape(1, -1, x.shape[-1])
    raise ValueError(f"unknown group {group!r}")


def _expert_order(p):
    """Experts of one token by descending p, ties towards the smaller index."""
    return sorted(range(len(p)), key=lambda e: (-p[e], e))


def routing_margin(x_tokens, wr, br=None, top_k=1):
    """Smallest gap between the k-th and (k+1)-th probability over tokens;
    tests keep it well above f32 rounding so routing is unambiguous."""
    p = softmax(router_logits(x_tokens, wr, br))
    s = -np.sort(-p, axis=-1)
    if top_k >= p.shape[-1]:
        return np.inf
    return float(np.min(s[..., top_k - 1] - s[..., top_k]))


def _expert_outputs(x_group, w, E):
    """f_e(x_t) for every expert and token of a group: [E, G, D]."""
    return np.stack([
        expert_mlp(x_group, w["experts.w1"][e], w["experts.w2"][e],
                   None if "experts.b1" not in w else w["experts.b1"][e],
                   None if "experts.b2" not in w else w["experts.b2"][e],
                   None if "experts.wg" not in w else w["experts.wg"][e],
                   w["_act"])
        for e in range(E)])


def token_choice_layer(x, weights, *, top_k=1, capacity_factor=1.25, expert_capacity=None,
                       min_capacity=0, normalize_gates=False, priority="sequence",
                       reroute_dropped=False, group="sequence", aux_loss_weight=0.01,
                       z_loss_weight=0.001, activation="relu"):
    """Sections 2, 3, 6 and 8. Returns (y [B, S, D], stats) with stats:
    kind, capacity, aux_loss, z_loss, kept_per_expert [E], dropped (assignments
    dropped for capacity), unrouted (tokens with nothing kept, non-finite ones
    included), groups, and per assignment [NG, G, k]: kept, choices, gates,
    positions (-1 when not kept)."""
    if reroute_dropped and top_k != 1:
        raise ValueError("reroute_dropped is defined for top_k = 1 only")
    w = dict(weights, _act=activation)
    x = _f64(x)
    xs = _groups(x, group)
    NG, G, D = xs.shape
    E = w["router.weight"].shape[1]
    k = top_k
    C = compute_capacity(G, E, k, capacity_factor, expert_capacity, min_capacity)
    y = np.zeros_like(xs)
    kept = np.zeros((NG, G, k), bool)
    choices = -np.ones((NG, G, k), np.int64)
    gates = np.zeros((NG, G, k))
    positions = -np.ones((NG, G, k), np.int64)
    kept_per_expert = np.zeros(E, np.int64)
    dropped = unrouted = 0
    aux_losses, z_losses = [], []
    for g in range(NG):
        z = router_logits(xs[g], w["router.weight"], w.get("router.bias"))
        valid = np.isfinite(z).all(-1)  # section 8
        p = softmax(z)
        # 3.1 choices and gates
        for t in range(G):
            if not valid[t]:
                continue
            order = _expert_order(p[t])[:k]
            choices[g, t] = order
            gates[g, t] = p[t, order]
            if normalize_gates:
                gates[g, t] /= gates[g, t].sum()
        # 3.3 priority order of tokens within each rank
        if priority == "sequence":
            tokens = list(range(G))
        elif priority == "batch":
            tokens = sorted(range(G), key=lambda t: (-(p[t, choices[g, t, 0]]
                                                        if valid[t] else -np.inf), t))
        else:
            raise ValueError(f"unknown priority {priority!r}")
        # 3.4 positions: assignments to the same expert earlier in order
        count = np.zeros(E, np.int64)
        for j in range(k):
            for t in tokens:
                if not valid[t]:
                    continue
                e = choices[g, t, j]
                if count[e] < C:
                    kept[g, t, j] = True
                    positions[g, t, j] = count[e]
                count[e] += 1
        # 3.5 rerouting of dropped tokens (top-1 only)
        if reroute_dropped:
            used = np.minimum(count, C)
            for t in tokens:
                if not valid[t] or kept[g, t, 0]:
                    continue
                for e in _expert_order(p[t])[1:]:
                    if used[e] < C:
                        choices[g, t, 0] = e
                        gates[g, t, 0] = p[t, e]
                        positions[g, t, 0] = used[e]
                        kept[g, t, 0] = True
                        used[e] += 1
                        break
        # 3.6 output
        outs = _expert_outputs(xs[g], w, E)
        for t in range(G):
            if not valid[t]:
                y[g, t] = np.nan
                unrouted += 1
                continue
            for j in range(k):
                if kept[g, t, j]:
                    y[g, t] += gates[g, t, j] * outs[choices[g, t, j], t]
                    kept_per_expert[choices[g, t, j]] += 1
                else:
                    dropped += 1
            if not kept[g, t].any():
                unrouted += 1
        # 6. losses, on the choices before any dropping or rerouting
        top = np.array([_expert_order(p[t])[:k] if valid[t] else [] for t in range(G)],
                       dtype=object)
        f = np.zeros(E)
        for t in range(G):
            for e in top[t]:
                f[e] += 1.0
        f /= G
        P = p.sum(0) / G
        aux_losses.append(aux_loss_weight * E * float(np.sum(f * P)))
        z_losses.append(z_loss_weight * float(np.mean(logsumexp(z) ** 2)))
    stats = dict(kind="moe", capacity=C, aux_loss=float(np.mean(aux_losses)),
                 z_loss=float(np.mean(z_losses)), kept_per_expert=kept_per_expert,
                 dropped=int(dropped), unrouted=int(unrouted), groups=NG, kept=kept,
                 choices=choices, gates=gates, positions=positions)
    return y.reshape(x.shape), stats


def expert_choice_layer(x, weights, *, capacity_factor=2.0, expert_capacity=None,
                        min_capacity=0, group="sequence", z_loss_weight=0.001,
                        activation="relu"):
    """Section 4. stats: kind, capacity, z_loss, kept_per_expert (tokens taken
    per expert), unrouted (tokens no expert took), token_index [NG, E, C]."""
    w = dict(weights, _act=activation)
    x = _f64(x)
    xs = _groups(x, group)
    NG, G, D = xs.shape
    E = w["router.weight"].shape[1]
    C = compute_capacity(G, E, 1, capacity_factor, expert_capacity, min_capacity)
    y = np.zeros_like(xs)
    token_index = -np.ones((NG, E, C), np.int64)
    kept_per_expert = np.zeros(E, np.int64)
    unrouted = 0
    z_losses = []
    for g in range(NG):
        z = router_logits(xs[g], w["router.weight"], w.get("router.bias"))
        valid = np.isfinite(z).all(-1)
        p = softmax(z)
        outs = _expert_outputs(xs[g], w, E)
        taken = np.zeros(G, bool)
        for e in range(E):
            candidates = sorted((t for t in range(G) if valid[t]), key=lambda t: (-p[t, e], t))
            for c, t in enumerate(candidates[:C]):
                token_index[g, e, c] = t
                y[g, t] += p[t, e] * outs[e, t]
                taken[t] = True
                kept_per_expert[e] += 1
        y[g, ~valid] = np.nan
        unrouted += int((~taken).sum())
        z_losses.append(z_loss_weight * float(np.mean(logsumexp(z) ** 2)))
    stats = dict(kind="expert_choice", capacity=C, aux_loss=None,
                 z_loss=float(np.mean(z_losses)), kept_per_expert=kept_per_expert,
                 dropped=0, unrouted=unrouted, groups=NG, token_index=token_index)
    return y.reshape(x.shape), stats


def soft_moe_layer(x, weights, *, slots_per_expert=1, normalize=True, group="sequence",
                   activation="relu"):
    """Section 5."""
    w = dict(weights, _act=activation)
    x = _f64(x)
    xs = _groups(x, group)
    NG, m, D = xs.shape
    E = w["experts.w1"].shape[0]
    P = slots_per_expert
    phi = _f64(w["soft.phi"])
    scale = float(np.asarray(w["soft.scale"], np.float64))
    if normalize:
        phih = scale * phi / np.sqrt(np.sum(phi**2, axis=0, keepdims=True) + 1e-6)
    else:
        phih = scale * phi
    y = np.zeros_like(xs)
    for g in range(NG):
        X = xs[g]
        with np.errstate(invalid="ignore"):
            Xh = X / np.sqrt(np.sum(X**2, axis=1, keepdims=True) + 1e-6) if normalize else X
            L = Xh @ phih
        Dw = softmax(L, axis=0)
        Xs = Dw.T @ X
        Ys = np.stack([expert_mlp(Xs[s:s + 1], w["experts.w1"][s // P], w["experts.w2"][s // P],
                                  None if "experts.b1" not in w else w["experts.b1"][s // P],
                                  None if "experts.b2" not in w else w["experts.b2"][s // P],
                                  None if "experts.wg" not in w else w["experts.wg"][s // P],
                                  activation)[0]
                       for s in range(E * P)])
        Cw = softmax(L, axis=1)
        y[g] = Cw @ Ys
        if not np.isfinite(X).all():  # section 8: the whole group is NaN
            y[g] = np.nan
    stats = dict(kind="soft_moe", capacity=None, aux_loss=None, z_loss=None, groups=NG)
    return y.reshape(x.shape), stats


def ffn_layer(x, weights, *, activation="relu"):
    x = _f64(x)
    rows = x.reshape(-1, x.shape[-1])
    out = expert_mlp(rows, weights["ffn.w1"], weights["ffn.w2"], weights.get("ffn.b1"),
                     weights.get("ffn.b2"), weights.get("ffn.wg"), activation)
    return out.reshape(x.shape)


def norm(x, kind, weight=None, bias=None):
    """Section 7."""
    x = _f64(x)
    if kind == "none":
        return x
    if kind == "rms":
        return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * _f64(weight)
    if kind == "layer":
        mean = np.mean(x, axis=-1, keepdims=True)
        var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * _f64(weight) + _f64(bias)
    raise ValueError(f"unknown norm {kind!r}")


_LAYER_OPTIONS = {
    "moe": ("top_k", "capacity_factor", "expert_capacity", "min_capacity",
            "normalize_gates", "priority", "reroute_dropped", "group",
            "aux_loss_weight", "z_loss_weight", "activation"),
    "expert_choice": ("capacity_factor", "expert_capacity", "min_capacity", "group",
                      "z_loss_weight", "activation"),
    "soft_moe": ("slots_per_expert", "normalize", "group", "activation"),
    "ffn": ("activation",),
}


def model_forward(model, weights, x):
    """A stack of blocks (section 7): x <- x + layer(norm(x)) when residual."""
    h = _f64(x)
    all_stats = []
    for i, block in enumerate(model["blocks"]):
        prefix = f"blocks.{i}."
        w = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        kind = block["layer"]
        options = {k: block[k] for k in _LAYER_OPTIONS[kind] if k in block}
        n = norm(h, block.get("norm", "none"), w.get("norm.weight"), w.get("norm.bias"))
        layer = {"moe": token_choice_layer, "expert_choice": expert_choice_layer,
                 "soft_moe": soft_moe_layer}.get(kind)
        if layer:
            out, stats = layer(n, w, **options)
        else:
            out, stats = ffn_layer(n, w, **options), dict(kind="ffn")
        h = h + out if block.get("residual", True) else out
        all_stats.append(stats)
    return h, all_stats
