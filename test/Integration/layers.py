"""Builds one-block test functions at the layer level of the moe dialect.

`build_block` writes `func.func @block(x, weights...)` that applies
`moe.norm` (optional), one layer op and `moe.residual` (optional), and says
which weight each argument is (the reference's weight names) and what the
results are. `random_weights` draws weights for it.
"""

import ml_dtypes
import numpy as np

from harness import NUMPY_TYPES, tensor_type

DTYPES = {"f32": np.float32, "bf16": ml_dtypes.bfloat16, "f16": np.float16}
GATED = ("swiglu", "geglu")


def _f64(v):
    return f"{float(v):.17e} : f64"


def _attrs(items):
    parts = []
    for key, value in items:
        if value is None or value is False:
            continue
        if value is True:
            parts.append(key)
        else:
            parts.append(f"{key} = {value}")
    return "{" + ", ".join(parts) + "}"


def weight_shapes(kind, D, E, F, *, activation, bias, router_bias,
                  slots_per_expert=1, norm="none"):
    """Reference weight name -> (shape, 'model'|'f32')."""
    shapes = {}
    if norm != "none":
        shapes["norm.weight"] = ((D,), "model")
        if norm == "layer":
            shapes["norm.bias"] = ((D,), "model")
    if kind in ("moe", "expert_choice"):
        shapes["router.weight"] = ((D, E), "f32")
        if router_bias:
            shapes["router.bias"] = ((E,), "f32")
    if kind == "soft_moe":
        shapes["soft.phi"] = ((D, E * slots_per_expert), "model")
        shapes["soft.scale"] = ((), "f32")
    prefix, lead = ("ffn", ()) if kind == "ffn" else ("experts", (E,))
    shapes[f"{prefix}.w1"] = (lead + (D, F), "model")
    if activation in GATED:
        shapes[f"{prefix}.wg"] = (lead + (D, F), "model")
    shapes[f"{prefix}.w2"] = (lead + (F, D), "model")
    if bias:
        shapes[f"{prefix}.b1"] = (lead + (F,), "model")
        shapes[f"{prefix}.b2"] = (lead + (D,), "model")
    return shapes


def build_block(kind, *, S, D, E=1, F, dtype="f32", batch=None,
                activation="relu", bias=False, router_bias=False,
                norm="none", residual=False, training=None, **options):
    """Returns (mlir text, [weight names in argument order], result types).

    `batch=None` makes the batch dimension dynamic. `options` are the layer's
    options, named as in SEMANTICS.md and the reference. `training` holds
    the training-only attributes (`jitter` of routed layers, `noise_std` of
    soft MoE), which inference never applies and the reference does not take.
    """
    training = training or {}
    shapes = weight_shapes(kind, D, E, F, activation=activation, bias=bias,
                           router_bias=router_bias, norm=norm,
                           slots_per_expert=options.get("slots_per_expert", 1))
    x_type = tensor_type((batch, S, D), dtype)
    names = list(shapes)

    def ttype(name):
        shape, kind_of = shapes[name]
        return tensor_type(shape, "f32" if kind_of == "f32" else dtype)

    args = [f"%x: {x_type}"] + [f"%{n.replace('.', '_')}: {ttype(n)}"
                               for n in names]
    arg = {n: "%" + n.replace(".", "_") for n in names}
    lines = []
    h = "%x"
    if norm != "none":
        ops = [h, arg["norm.weight"]] + ([arg["norm.bias"]] if norm == "layer" else [])
        types = [x_type, ttype("norm.weight")] + ([ttype("norm.bias")] if norm == "layer" else [])
        lines.append(f"%n = moe.norm {norm} {', '.join(ops)} : "
                     f"({', '.join(types)}) -> {x_type}")
        h = "%n"

    act = f"#moe.activation<{activation}>"
    prefix = "ffn" if kind == "ffn" else "experts"
    mlp_names = [f"{prefix}.{w}" for w in ("w1", "wg", "w2", "b1", "b2")
                 if f"{prefix}.{w}" in shapes]
    mlp = " ".join(f"{n.split('.')[1]} {arg[n]}" for n in mlp_names)
    mlp_types = [ttype(n) for n in mlp_names]
    count = f"tensor<{E}xi64>"
    scalar_f32, scalar_i64 = "tensor<f32>", "tensor<i64>"
    group = options.get("group", "sequence")
    if kind == "moe":
        cf = options.get("capacity_factor", 1.25)
        cap = options.get("expert_capacity")
        attrs = _attrs([
            ("activation", act), ("top_k", f"{options.get('top_k', 1)} : i64"),
            ("capacity_factor", _f64(cf) if cf is not None and cap is None else None),
            ("expert_capacity", f"{cap} : i64" if cap is not None else None),
            ("min_capacity", f"{options.get('min_capacity', 0)} : i64"),
            ("normalize_gates", options.get("normalize_gates", False)),
            ("priority", f"#moe.priority<{options.get('priority', 'sequence')}>"),
            ("reroute_dropped", options.get("reroute_dropped", False)),
            ("group", f"#moe.group<{group}>"),
            ("aux_loss_weight", _f64(options.get("aux_loss_weight", 0.01))),
            ("z_loss_weight", _f64(options.get("z_loss_weight", 0.001))),
            ("jitter", _f64(training["jitter"]) if "jitter" in training else None)])
        router = arg["router.weight"] + (f" bias {arg['router.bias']}" if router_bias else "")
        rtypes = [ttype("router.weight")] + ([ttype("router.bias")] if router_bias else [])
        results = [x_type, scalar_f32, scalar_f32, count, scalar_i64, scalar_i64, scalar_i64]
        lines.append(
            f"%r:7 = moe.token_choice {h} router({router}) experts({mlp}) {attrs} : "
            f"({', '.join([x_type] + rtypes + mlp_types)}) -> ({', '.join(results)})")
        result_types = [(3, dtype), (0, "f32"), (0, "f32"), (1, "i64"),
                        (0, "i64"), (0, "i64"), (0, "i64")]
        outs = [f"%r#{i}" for i in range(7)]
    elif kind == "expert_choice":
        cap = options.get("expert_capacity")
        attrs = _attrs([
            ("activation", act),
            ("capacity_factor", _f64(options.get("capacity_factor", 2.0)) if cap is None else None),
            ("expert_capacity", f"{cap} : i64" if cap is not None else None),
            ("min_capacity", f"{options.get('min_capacity', 0)} : i64"),
            ("group", f"#moe.group<{group}>"),
            ("z_loss_weight", _f64(options.get("z_loss_weight", 0.001))),
            ("jitter", _f64(training["jitter"]) if "jitter" in training else None)])
        router = arg["router.weight"] + (f" bias {arg['router.bias']}" if router_bias else "")
        rtypes = [ttype("router.weight")] + ([ttype("router.bias")] if router_bias else [])
        results = [x_type, scalar_f32, count, scalar_i64, scalar_i64]
        lines.append(
            f"%r:5 = moe.expert_choice {h} router({router}) experts({mlp}) {attrs} : "
            f"({', '.join([x_type] + rtypes + mlp_types)}) -> ({', '.join(results)})")
        result_types = [(3, dtype), (0, "f32"), (1, "i64"), (0, "i64"), (0, "i64")]
        outs = [f"%r#{i}" for i in range(5)]
    elif kind == "soft_moe":
        attrs = _attrs([
            ("activation", act),
            ("slots_per_expert", f"{options.get('slots_per_expert', 1)} : i64"),
            ("normalize", "true" if options.get("normalize", True) else "false"),
            ("group", f"#moe.group<{group}>"),
            ("noise_std", _f64(training["noise_std"]) if "noise_std" in training else None)])
        lines.append(
            f"%r = moe.soft_moe {h} phi({arg['soft.phi']} scale {arg['soft.scale']}) "
            f"experts({mlp}) {attrs} : "
            f"({', '.join([x_type, ttype('soft.phi'), 'tensor<f32>'] + mlp_types)}) -> {x_type}")
        result_types = [(3, dtype)]
        outs = ["%r"]
    elif kind == "ffn":
        lines.append(
            f"%r = moe.ffn {h} weights({mlp}) {{activation = {act}}} : "
            f"({', '.join([x_type] + mlp_types)}) -> {x_type}")
        result_types = [(3, dtype)]
        outs = ["%r"]
    else:
        raise ValueError(f"unknown layer kind {kind!r}")

    if residual:
        lines.append(f"%y = moe.residual %x, {outs[0]} : {x_type}")
        outs[0] = "%y"
    result_mlir = [x_type] + {"moe": [scalar_f32, scalar_f32, count, scalar_i64, scalar_i64, scalar_i64],
                              "expert_choice": [scalar_f32, count, scalar_i64, scalar_i64]}.get(kind, [])
    body = "\n  ".join(lines)
    text = (f"func.func @block({', '.join(args)}) -> ({', '.join(result_mlir)})\n"
            f"    attributes {{llvm.emit_c_interface}} {{\n  {body}\n"
            f"  return {', '.join(outs)} : {', '.join(result_mlir)}\n}}\n")
    return text, names, [(rank, NUMPY_TYPES[t]) for rank, t in result_types]


def random_weights(rng, kind, D, E, F, dtype="f32", scale=1.0, **shape_options):
    """Random weights (f32 router, model dtype elsewhere), scaled like an
    initialized model so activations stay O(1)."""
    shapes = weight_shapes(kind, D, E, F, **shape_options)
    weights = {}
    for name, (shape, kind_of) in shapes.items():
        fan_in = shape[-2] if len(shape) >= 2 else 1
        if name == "soft.scale":
            value = np.array(rng.uniform(0.5, 2.0), dtype=np.float32)
        elif name in ("norm.weight",):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.standard_normal(shape) * (scale / np.sqrt(fan_in))
        target = np.float32 if kind_of == "f32" else DTYPES[dtype]
        weights[name] = np.asarray(value, dtype=np.float32).astype(target)
    return weights
