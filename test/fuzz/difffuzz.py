#!/usr/bin/env python3
"""Differential random testing of Switchyard's moec against the float64 numpy
reference (test/reference/moe_reference.py). Not part of the test suite: a
tool to run for as long as one has (it found the d_model 1 expert-choice
combine, the bf16 odd-width residual crash and the f32 z-loss sum).
Results go to $SWITCHYARD_DIFFFUZZ_DIR (default /tmp/switchyard-difffuzz).

For each random model description:
  * moec compiles it (default flags; bf16 models sometimes with
    --bf16-amx=false or --bf16-dot-products),
  * run "seed": the executable draws weights and input from --seed/--batch and
    writes --save-weights/--output/--stats; the input is recomputed here with
    a port of the runtime's fillNormal (checked bit for bit against the
    executable at start-up with a probe model),
  * run "file": our own weights (--weights, router sometimes made peaky) and
    input (--input, sometimes scaled, sometimes holding a NaN/inf token),
    with another batch size,
  * sometimes a second build (--no-fusion, --no-parallel, -O0, ...) and/or
    --threads 1, compared with the first bit for bit (token-choice/EC/ffn
    models: the project's tests hold fusion and threads to bit equality) or
    within 1e-6 (soft MoE under --no-fusion),
  * every output is compared with the reference (SEMANTICS.md section 8:
    1e-5 relative in f32, 2e-2 in bf16/f16) and every statistic as
    test_moec.check_stats does.
Routing decisions are checked for near-ties by re-deciding each routed block
from perturbed logits (f32 logits and random perturbations of the size of
the rounding the compiled code may see) and from probabilities computed in
f32 (near 1 they tie where float64's differ); a mismatch on a case with a
near-tie is counted separately, not reported as a bug.

Usage:
  difffuzz.py run --minutes 70 [--seed S]      fuzz, log to results.jsonl
  difffuzz.py case DIR                         re-check a saved case
"""

import argparse
import hashlib
import json
import math
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time
import traceback

import ml_dtypes
import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "reference"))
sys.path.insert(0, str(ROOT / "test" / "Integration"))
import moe_reference as ref  # noqa: E402
from artifacts import (parse_weight_list, read_safetensors, rel_error,  # noqa: E402
                       safetensors_bytes)

BUILD = pathlib.Path(os.environ.get("SWITCHYARD_BUILD_DIR", ROOT / "build"))
MOEC = BUILD / "bin" / "moec"
HERE = pathlib.Path(os.environ.get("SWITCHYARD_DIFFFUZZ_DIR", "/tmp/switchyard-difffuzz"))
WORK = HERE / "work"
FAILS = HERE / "fails"
LOG = HERE / "results.jsonl"

TOL = {"f32": 1e-5, "bf16": 2e-2, "f16": 2e-2}
# Relative size of the logit perturbation used to detect near-ties: the
# compiled router input may differ from the reference's by this much
# (f32 rounding through several blocks; bf16/f16 storage of activations).
TIE_REL = {"f32": 2e-5, "bf16": 1.5e-2, "f16": 3e-3}
NP_DTYPE = {"f32": np.float32, "bf16": ml_dtypes.bfloat16, "f16": np.float16}
ACTS = ["relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu"]

XXH3_INPUT = 8325862483950887671  # llvm::xxh3_64bits("input")
M64 = (1 << 64) - 1


# ---------------------------------------------------------------------------
# The runtime's seeded normal draws (lib/Runtime/Model.cpp fillNormal)
# ---------------------------------------------------------------------------

def fill_normal(seed, stream, count, dtype, mean=0.0, scale=1.0):
    npairs = (count + 1) // 2
    i = np.arange(1, 2 * npairs + 1, dtype=np.uint64)
    s0 = np.uint64(((seed * 0x2545F4914F6CDD1D) & M64) ^ stream)
    with np.errstate(over="ignore"):
        z = s0 + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(1.0 - u1))
    pair = np.stack([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], 1).ravel()[:count]
    v = (mean + scale * pair).astype(np.float32)
    return v.astype(NP_DTYPE[dtype])


def seeded_input(seed, batch, S, D, dtype):
    return fill_normal(seed, XXH3_INPUT, batch * S * D, dtype).reshape(batch, S, D)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def wait_for_moec():
    """The repo's build may be replaced under us by a concurrent rebuild:
    wait until moec is there, executable and unchanged for 20 s."""
    for _ in range(120):
        try:
            st = MOEC.stat()
            if os.access(MOEC, os.X_OK) and time.time() - st.st_mtime > 20:
                return
        except FileNotFoundError:
            pass
        time.sleep(5)


def sh(cmd, timeout):
    if str(cmd[0]) == str(MOEC):
        wait_for_moec()
    t0 = time.time()
    try:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), "", time.time() - t0


# ---------------------------------------------------------------------------
# model generation
# ---------------------------------------------------------------------------

CF_VALUES = ["0.05", "0.1", "0.25", "0.5", "0.75", "1.0", "1.1", "1.25", "1.5",
             "2.0", "3.0", "4.0", "10.0", "100.0"]
EC_CF_VALUES = ["0.1", "0.25", "0.5", "1.0", "1.25", "2.0", "3.0", "8.0", "50.0"]

PACKED_DIMS = [32, 64, 96, 128]
UNPACKED_DIMS = [1, 2, 3, 5, 7, 8, 12, 16, 17, 24, 31, 33, 40, 48, 63, 65, 72, 100]
# Rows-per-expert class -> (seq_len range, largest batch).
SEQ_RANGES = {"lt8": ((1, 24), 3), "8-31": ((8, 80), 4), "32-255": ((60, 400), 3),
              "256-330": ((256, 700), 3), "gt512": ((513, 700), 4)}


def rows_class(r):
    if r < 8:
        return "lt8"
    if r < 32:
        return "8-31"
    if r < 256:
        return "32-255"
    if r <= 330:
        return "256-330"
    if r <= 512:
        return "331-512"
    return "gt512"


def gen_model(rng: random.Random):
    """A random model description as (ordered dict of model keys, list of
    ordered block dicts) plus spelling choices. Returns dict with 'model',
    'spell'."""
    r = rng.random()
    dtype = "f32" if r < 0.78 else ("bf16" if r < 0.9 else "f16")
    target = rng.choice(["lt8", "8-31", "32-255", "256-330", "256-330", "gt512", "any"])
    if dtype != "f32":
        target = rng.choice(["lt8", "8-31", "32-255", "256-330", "any"])
    if target in SEQ_RANGES:
        (low, high), most = SEQ_RANGES[target]
        S = rng.randint(low, high)
    else:
        S = rng.choice([1, 2, 7, 63, 64, 65, 128, 129, 200, 333, 512, 700])
        most = 4
    batches = [rng.randint(1, most), rng.randint(1, most)]
    if dtype != "f32":
        S = min(S, 330)
    packD = rng.random() < 0.55
    D = rng.choice(PACKED_DIMS if packD else UNPACKED_DIMS)
    if S * max(batches) > 1200 and D > 64:
        D = rng.choice([32, 64, 40, 48])
    big = S * max(batches) > 1000
    nblocks = rng.choice([1, 1, 2, 2, 3, 4]) if not big else rng.choice([1, 1, 2, 3])
    blocks = []
    for _ in range(nblocks):
        blocks.append(gen_block(rng, S, batches, D, target, dtype))
    model = {"name": f"fz{rng.randint(0, 10**6)}", "d_model": D, "seq_len": S}
    if dtype != "f32" or rng.random() < 0.3:
        model["dtype"] = dtype
    return {"model": model, "blocks": blocks, "batches": batches}


def est_rows(b, S, B, E_rows_target=None):
    """Estimated rows an expert gets per group for a block (and total)."""
    kind = b["layer"]
    G = S * B if b.get("group") == "batch" else S
    NG = 1 if b.get("group") == "batch" else B
    if kind == "ffn":
        return S * B, S * B
    E = b["experts"]
    if kind == "soft_moe":
        p = b.get("slots_per_expert", 1)
        return p, p * NG
    if kind == "expert_choice":
        C = ref.compute_capacity(G, E, 1, float(b.get("capacity_factor", 2.0)),
                                 b.get("expert_capacity"), b.get("min_capacity", 0))
        return C, C * NG
    k = b.get("top_k", 1)
    cf = b.get("capacity_factor", "1.25")
    cf = None if cf is None else float(cf)
    C = ref.compute_capacity(G, E, k, cf, b.get("expert_capacity"), b.get("min_capacity", 0))
    r = min(C, math.ceil(k * G / E))
    return r, r * NG


def gen_block(rng, S, batches, D, target, dtype):
    for attempt in range(60):
        b = gen_block_once(rng, S, batches, D, dtype)
        r, _ = est_rows(b, S, max(batches))
        if target == "any" or rows_class(r) == target or attempt == 59:
            return b
    return b


def gen_block_once(rng, S, batches, D, dtype):
    kind = rng.choices(["moe", "expert_choice", "soft_moe", "ffn"], [0.5, 0.2, 0.2, 0.1])[0]
    b = {"layer": kind}
    if rng.random() < 0.7:
        b["norm"] = rng.choice(["none", "rms", "layer"])
    if rng.random() < 0.6:
        b["residual"] = rng.random() < 0.7
    T = S * max(batches)
    if kind != "ffn":
        b["experts"] = rng.choice([1, 2, 2, 3, 4, 4, 5, 6, 7, 8, 8, 11, 12, 16, 16])
    packF = rng.random() < 0.55
    F = rng.choice(PACKED_DIMS if packF else UNPACKED_DIMS)
    if T * b.get("experts", 1) > 8000 and F > 64 and kind in ("ffn", "soft_moe"):
        F = rng.choice([32, 64, 24, 48])
    b["d_ff"] = F
    if rng.random() < 0.85:
        b["activation"] = rng.choice(ACTS)
    if rng.random() < 0.6:
        b["bias"] = rng.random() < 0.5
    if kind in ("moe", "expert_choice") and rng.random() < 0.6:
        b["router_bias"] = rng.random() < 0.5
    if kind in ("moe", "expert_choice", "soft_moe") and rng.random() < 0.7:
        b["group"] = rng.choice(["sequence", "batch"])
    E = b.get("experts", 1)
    if kind == "moe":
        if rng.random() < 0.8:
            b["top_k"] = rng.choice([1, 1, 2, 2, 3, E, rng.randint(1, E)])
            b["top_k"] = max(1, min(E, b["top_k"]))
        k = b.get("top_k", 1)
        r = rng.random()
        if r < 0.2:
            b["capacity_factor"] = None
        elif r < 0.85:
            b["capacity_factor"] = rng.choice(CF_VALUES)
        if rng.random() < 0.15:
            b["expert_capacity"] = rng.choice([1, 2, 3, 8, 31, 64, 257, 300, 600, 5000])
        if rng.random() < 0.2:
            b["min_capacity"] = rng.choice([0, 1, 4, 16, 300, 100000])
        if rng.random() < 0.5:
            b["normalize_gates"] = rng.random() < 0.5
        if rng.random() < 0.6:
            b["priority"] = rng.choice(["sequence", "batch"])
        if k == 1 and rng.random() < 0.35:
            b["reroute_dropped"] = rng.random() < 0.8
        if rng.random() < 0.3:
            b["aux_loss_weight"] = rng.choice(["0.0", "0.01", "0.1", "1.5"])
        if rng.random() < 0.3:
            b["z_loss_weight"] = rng.choice(["0.0", "0.001", "0.05", "2.0"])
    elif kind == "expert_choice":
        if rng.random() < 0.8:
            b["capacity_factor"] = rng.choice(EC_CF_VALUES)
        if rng.random() < 0.15:
            b["expert_capacity"] = rng.choice([1, 2, 5, 33, 256, 300, 4000])
        if rng.random() < 0.2:
            b["min_capacity"] = rng.choice([0, 1, 4, 40, 100000])
        if rng.random() < 0.3:
            b["z_loss_weight"] = rng.choice(["0.0", "0.001", "0.05", "2.0"])
    elif kind == "soft_moe":
        if rng.random() < 0.75:
            b["slots_per_expert"] = rng.choice([1, 1, 2, 3, 4, 7, 8, 16, 33, 64, 260, 300])
        if rng.random() < 0.6:
            b["normalize"] = rng.random() < 0.6
        # keep the reference affordable: E*P slots x F
        while E * b.get("slots_per_expert", 1) > 1500:
            b["slots_per_expert"] = max(1, b["slots_per_expert"] // 2)
    return b


SPELL_TRUE = ["true", "true", "true", "True", "TRUE"]
SPELL_FALSE = ["false", "false", "false", "False", "FALSE"]
SPELL_NULL = ["null", "null", "~", "Null", "NULL"]


def emit_yaml(case, rng=None):
    rng = rng or random.Random(0)
    lines = []
    m = case["model"]
    for k, v in m.items():
        lines.append(f"{k}: {v}")
    lines.append("blocks:")
    for b in case["blocks"]:
        first = True
        for k, v in b.items():
            if v is None:
                s = rng.choice(SPELL_NULL)
            elif v is True:
                s = rng.choice(SPELL_TRUE)
            elif v is False:
                s = rng.choice(SPELL_FALSE)
            else:
                s = str(v)
            lines.append(("  - " if first else "    ") + f"{k}: {s}")
            first = False
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# reference with per-block inputs, near-tie check
# ---------------------------------------------------------------------------

def reference_forward(model, weights, x):
    h = np.asarray(x, np.float64)
    all_stats, normeds = [], []
    for i, block in enumerate(model["blocks"]):
        prefix = f"blocks.{i}."
        w = {n[len(prefix):]: t for n, t in weights.items() if n.startswith(prefix)}
        kind = block["layer"]
        fn = ref._LAYERS[kind]
        options = {key: block[key] for key in ref._keyword_options(fn) if key in block}
        normed = ref.norm(h, block.get("norm", "none"), w.get("norm.weight"), w.get("norm.bias"))
        if kind == "ffn":
            out, stats = fn(normed, w, **options), dict(ref._FFN_STATS)
        else:
            out, stats = fn(normed, w, **options)
        h = h + out if block.get("residual", True) else out
        all_stats.append(stats)
        normeds.append((normed, w, options, kind))
    return h, all_stats, normeds


def softmax64(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def softmax32(z):
    """The softmax in f32, as the compiled router computes it: near 1, f32
    probabilities tie where float64 ones still differ."""
    z = np.asarray(z, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True, dtype=np.float32)).astype(np.float64)


def tc_decide(p, k, C, priority, reroute):
    G, E = p.shape
    rank = np.argsort(-p, axis=1, kind="stable")
    ch = rank[:, :k].copy()
    order = np.arange(G)
    if priority == "batch":
        order = np.argsort(-p[np.arange(G), rank[:, 0]], kind="stable")
    eo = ch[order].T.ravel()
    oh = eo[:, None] == np.arange(E)
    pos = (np.cumsum(oh, 0) - oh)[np.arange(len(eo)), eo].reshape(k, -1).T
    kept = np.zeros((G, k), bool)
    kept[order] = pos < C
    if reroute:
        used = np.bincount(ch[kept], minlength=E)
        for t in order:
            if kept[t, 0]:
                continue
            for e in rank[t, 1:]:
                if used[e] < C:
                    ch[t, 0] = e
                    kept[t, 0] = True
                    used[e] += 1
                    break
    return (rank[:, :k].tobytes(), ch.tobytes(), kept.tobytes())


def ec_decide(p, C):
    G, E = p.shape
    out = []
    for e in range(E):
        out.append(np.sort(np.argsort(-p[:, e], kind="stable")[:C]).tobytes())
    return tuple(out)


def near_tie(normeds, dtype, nprng, trials=8):
    """True when some routed block's decisions change under perturbations of
    its logits of the size of the rounding the compiled code sees."""
    rel = TIE_REL[dtype]
    for normed, w, options, kind in normeds:
        if kind not in ("moe", "expert_choice"):
            continue
        group = options.get("group", "sequence")
        hs = normed.reshape(1, -1, normed.shape[-1]) if group == "batch" else normed
        wr = np.asarray(w["router.weight"], np.float64)
        br = np.asarray(w["router.bias"], np.float64) if "router.bias" in w else None
        G, E = hs.shape[1], wr.shape[1]
        if kind == "moe":
            k = options.get("top_k", 1)
            C = ref.compute_capacity(G, E, k, options.get("capacity_factor", 1.25),
                                     options.get("expert_capacity"), options.get("min_capacity", 0))
        else:
            C = ref.compute_capacity(G, E, 1, options.get("capacity_factor", 2.0),
                                     options.get("expert_capacity"), options.get("min_capacity", 0))
        for g in range(hs.shape[0]):
            h = hs[g]
            with np.errstate(invalid="ignore", over="ignore"):
                z = h @ wr + (0 if br is None else br)
            valid = np.isfinite(z).all(-1)
            h, z = h[valid], z[valid]
            if h.shape[0] == 0:
                continue
            scale = np.abs(h) @ np.abs(wr) + (0 if br is None else np.abs(br)) + 1e-30
            variants = [z]
            with np.errstate(over="ignore", invalid="ignore"):
                z32 = (h.astype(np.float32) @ wr.astype(np.float32)).astype(np.float64)
            if br is not None:
                z32 = (z32.astype(np.float32) + br.astype(np.float32)).astype(np.float64)
            variants.append(z32)
            for _ in range(trials):
                variants.append(z + nprng.uniform(-1, 1, z.shape) * rel * scale)
            # also: f32-rounded probabilities (the compiled code sorts f32 p)
            ps = [softmax64(v) for v in variants]
            ps.append(softmax64(z).astype(np.float32).astype(np.float64))
            # and probabilities computed in f32 from the f32 logits
            ps.append(softmax32(z32))
            Cg = min(C, h.shape[0]) if kind == "expert_choice" else C
            if kind == "moe":
                dec = [tc_decide(p, options.get("top_k", 1), C, options.get("priority", "sequence"),
                                 options.get("reroute_dropped", False)) for p in ps]
            else:
                dec = [ec_decide(p, Cg) for p in ps]
            if any(d != dec[0] for d in dec[1:]):
                return True
    return False


# ---------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------

def compare_output(y, expected, dtype):
    """Returns (ok, info)."""
    y = np.asarray(y, np.float64)
    exp_nan = ~np.isfinite(expected).all(-1)
    y_nonfinite = ~np.isfinite(y).all(-1)
    info = {}
    bad = []
    if exp_nan.any():
        # §8: the row of a non-finite token is NaN
        miss = exp_nan & ~np.isnan(y).any(-1)
        if miss.any():
            bad.append(f"{int(miss.sum())} rows expected NaN but finite")
    extra = y_nonfinite & ~exp_nan
    if extra.any():
        bad.append(f"{int(extra.sum())} rows non-finite but expected finite")
    fin = ~exp_nan & ~y_nonfinite
    err = rel_error(y[fin], expected[fin]) if fin.any() else 0.0
    info["rel_err"] = err
    if err >= TOL[dtype]:
        bad.append(f"rel_err {err:.3e} >= {TOL[dtype]}")
        # where: per-row relative errors
        rowerr = np.linalg.norm(y - expected, axis=-1) / (np.linalg.norm(expected, axis=-1) + 1e-30)
        rowerr = np.where(fin, rowerr, 0)
        idx = np.argwhere(rowerr > 10 * TOL[dtype])
        info["bad_rows"] = int(len(idx))
        info["bad_rows_first"] = idx[:8].tolist()
    return (not bad), bad, info


def approx(a, b, rel):
    if b is not None and math.isnan(b):
        return a is None
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= rel * abs(b) + 1e-12 * rel


def compare_stats(stats, expected, batch, dtype):
    bad = []
    tol = TOL[dtype]
    if stats.get("batch") != batch:
        bad.append(f"batch {stats.get('batch')} != {batch}")
    if len(stats["blocks"]) != len(expected):
        bad.append(f"{len(stats['blocks'])} blocks != {len(expected)}")
        return bad
    for i, (got, want) in enumerate(zip(stats["blocks"], expected)):
        if got.get("kind") != want["kind"]:
            bad.append(f"block {i}: kind {got.get('kind')} != {want['kind']}")
        if want["kind"] not in ("moe", "expert_choice"):
            if "capacity" in got:
                bad.append(f"block {i}: capacity present on {want['kind']}")
            continue
        if got.get("capacity") != want["capacity"]:
            bad.append(f"block {i}: capacity {got.get('capacity')} != {want['capacity']}")
        wc = [int(c) for c in want["kept_per_expert"]]
        if got.get("expert_counts") != wc:
            bad.append(f"block {i}: expert_counts {got.get('expert_counts')} != {wc}")
        if got.get("unrouted") != want["unrouted"]:
            bad.append(f"block {i}: unrouted {got.get('unrouted')} != {want['unrouted']}")
        u = got.get("usage")
        if u is None or abs(u - want["usage"]) > 1e-12 * abs(want["usage"]) + 1e-15:
            bad.append(f"block {i}: usage {u} != {want['usage']}")
        if want["kind"] == "moe":
            if got.get("dropped") != want["dropped"]:
                bad.append(f"block {i}: dropped {got.get('dropped')} != {want['dropped']}")
            if not approx(got.get("aux_loss"), want["aux_loss"], tol):
                bad.append(f"block {i}: aux_loss {got.get('aux_loss')} != {want['aux_loss']}")
        else:
            if "dropped" in got or "aux_loss" in got:
                bad.append(f"block {i}: dropped/aux_loss present on expert_choice")
        if not approx(got.get("z_loss"), want["z_loss"], tol):
            bad.append(f"block {i}: z_loss {got.get('z_loss')} != {want['z_loss']}")
    return bad


# ---------------------------------------------------------------------------
# one case
# ---------------------------------------------------------------------------

def draw_file_weights(nprng, specs, router_scale, bias_scale):
    w = {}
    for name, (shape, dtype) in specs.items():
        fan_in = shape[-2] if len(shape) >= 2 else 1
        if name.endswith("soft.scale"):
            v = nprng.uniform(0.5, 2.0, size=shape)
        elif name.endswith("norm.weight"):
            v = nprng.uniform(0.5, 1.5, size=shape)
        elif name.endswith("norm.bias"):
            v = nprng.standard_normal(shape) * 0.2
        elif name.endswith("router.weight"):
            v = nprng.standard_normal(shape) / np.sqrt(fan_in) * router_scale
        elif name.endswith("router.bias"):
            v = nprng.standard_normal(shape) * bias_scale
        elif name.endswith((".b1", ".b2")):
            v = nprng.standard_normal(shape) * 0.3
        else:
            v = nprng.standard_normal(shape) / np.sqrt(fan_in)
        w[name] = np.asarray(v, np.float32).astype(NP_DTYPE[dtype])
    return w


def run_exe(exe, args, timeout=120):
    return sh([exe, *args], timeout)


def check_run(model, dtype, exe, d, tag, args, x, weights_path, batch, nprng, res):
    """Runs exe with args (which write d/y_tag.npy, d/s_tag.json); compares
    with the reference. Appends findings to res. Returns y (or None)."""
    y_path, s_path = d / f"y_{tag}.npy", d / f"s_{tag}.json"
    rc, out, err, dt = run_exe(exe, [*args, "--output", y_path, "--stats", s_path])
    res["runs"].append({"tag": tag, "args": [str(a) for a in args], "rc": rc, "time": round(dt, 2)})
    if rc != 0:
        res["findings"].append({"type": "timeout" if rc == "timeout" else "run_failed", "tag": tag,
                                "rc": rc, "stderr": err[-2000:], "args": [str(a) for a in args]})
        return None
    y = np.load(y_path)
    want_dt = np.float16 if dtype == "f16" else np.float32
    if y.dtype != want_dt or y.shape != x.shape:
        res["findings"].append({"type": "output_format", "tag": tag,
                                "detail": f"{y.dtype} {y.shape} vs {want_dt} {x.shape}"})
        return y
    weights = read_safetensors(weights_path)
    t0 = time.time()
    expected, estats, normeds = reference_forward(model, weights, x)
    res["ref_time"] = res.get("ref_time", 0) + time.time() - t0
    tie = near_tie(normeds, dtype, nprng)
    ok, bad, info = compare_output(y, expected, dtype)
    stats = json.loads(pathlib.Path(s_path).read_text())
    sbad = compare_stats(stats, estats, batch, dtype)
    rinfo = res["runs"][-1]
    rinfo.update(info)
    rinfo["near_tie"] = tie
    rinfo["rows"] = rows_info(model, estats, x.shape)
    if not ok or sbad:
        f = {"type": "mismatch", "tag": tag, "near_tie": tie, "output": bad,
             "stats": sbad[:12], "args": [str(a) for a in args], "info": info}
        res["findings"].append(f)
    return y


def rows_info(model, estats, shape):
    """Per block: (kind, D packed, F packed, max rows per expert per group,
    total rows per expert)."""
    B, S, D = shape
    out = []
    for b, st in zip(model["blocks"], estats):
        kind = b["layer"]
        F = b["d_ff"]
        if kind == "moe":
            kept, ch = st["kept"], st["choices"]
            E = b["experts"]
            per = max((np.bincount(ch[g][kept[g]], minlength=E).max() if kept[g].any() else 0)
                      for g in range(kept.shape[0]))
            tot = int(st["kept_per_expert"].max())
        elif kind == "expert_choice":
            per = int(st["capacity"])
            tot = int(st["kept_per_expert"].max())
        elif kind == "soft_moe":
            per = b.get("slots_per_expert", 1)
            tot = per * st["groups"]
        else:
            per = tot = B * S
        out.append([kind, D % 32 == 0, F % 32 == 0, int(per), int(tot)])
    return out


def bitwise_or_close(a, b, soft):
    if a is None or b is None:
        return True, "missing"
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = np.array_equal(a64, b64, equal_nan=True)
    if same:
        return True, "bitwise"
    fin = np.isfinite(a64) & np.isfinite(b64)
    e = rel_error(a64[fin], b64[fin]) if fin.any() else 0.0
    return False, f"not bitwise; rel {e:.3e} (soft={soft})"


def check_case(case, d, nprng, rng, variants, timeout_compile=240):
    """Compiles and runs one case in directory d. Returns result dict."""
    d.mkdir(parents=True, exist_ok=True)
    text = case.get("yaml") or emit_yaml(case, rng)
    src = d / "m.yaml"
    src.write_text(text)
    model = yaml.safe_load(text)
    dtype = model.get("dtype", "f32")
    res = {"findings": [], "runs": [], "yaml": text, "variants": variants}
    exe = d / "m.exe"
    flags = case.get("flags", [])
    rc, out, err, dt = sh([MOEC, src, "-o", exe, *flags], timeout_compile)
    res["compile_time"] = round(dt, 2)
    if rc != 0:
        res["findings"].append({"type": "compile_failed" if rc != "timeout" else "compile_timeout",
                                "rc": rc, "stderr": err[-3000:], "flags": flags})
        return res
    S, D = model["seq_len"], model["d_model"]
    batches = case["batches"]
    ys = {}
    # run "seed": seeded weights and input
    seed = case["seed"]
    B = batches[0]
    wA = d / "wA.safetensors"
    xA = seeded_input(seed, B, S, D, dtype)
    np.save(d / "xA.npy", xA.astype(np.float32) if dtype == "bf16" else xA)
    ys["A"] = check_run(model, dtype, exe, d, "A",
                        ["--seed", seed, "--batch", B, "--save-weights", wA],
                        xA, wA, B, nprng, res)
    # run "file": own weights and input
    B2 = batches[1]
    specs = parse_weight_list(sh([MOEC, src, "--list-weights"], 60)[1].splitlines())
    fw = case.get("filew", {})
    frng = np.random.default_rng(case.get("wseed", 0))
    w = draw_file_weights(frng, specs, fw.get("router_scale", 1.0), fw.get("bias_scale", 0.5))
    wB = d / "wB.safetensors"
    wB.write_bytes(safetensors_bytes(w))
    xB = (frng.standard_normal((B2, S, D)) * fw.get("x_scale", 1.0) + fw.get("x_shift", 0.0))
    if fw.get("nan"):
        bb, ss = frng.integers(B2), frng.integers(S)
        xB[bb, ss, frng.integers(D)] = fw["nan"]
    xB = xB.astype(np.float32)
    if dtype != "f32":
        xB = xB.astype(NP_DTYPE[dtype])
        on_disk = xB if (dtype == "f16" and fw.get("native_input")) else xB.astype(np.float32)
        if dtype == "bf16" and fw.get("native_input"):
            on_disk = xB  # ml_dtypes writes '<V2'
    else:
        on_disk = xB
    np.save(d / "xB.npy", on_disk)
    ys["B"] = check_run(model, dtype, exe, d, "B",
                        ["--weights", wB, "--input", d / "xB.npy"], xB, wB, B2, nprng, res)
    soft = any(b["layer"] == "soft_moe" for b in model["blocks"])
    # variant builds / thread counts
    for v in variants:
        if v == "threads1":
            exe2, tagp = exe, "T"
            extra = ["--threads", "1"]
        else:
            exe2 = d / f"m_{v}.exe"
            vflags = {"nofusion": ["--no-fusion"], "noparallel": ["--no-parallel"],
                      "O0": ["-O0"], "nofusion_noparallel": ["--no-fusion", "--no-parallel"]}[v]
            rc, out, err, dt = sh([MOEC, src, "-o", exe2, *flags, *vflags], timeout_compile)
            res["compile_time_" + v] = round(dt, 2)
            if rc != 0:
                res["findings"].append({"type": "compile_failed", "variant": v, "rc": rc,
                                        "stderr": err[-3000:]})
                continue
            tagp = v
            extra = []
        for tag, xs, wp, bb in (("A", d / "xA.npy", wA, B), ("B", d / "xB.npy", wB, B2)):
            if ys.get(tag) is None:
                continue
            xx = xA if tag == "A" else xB
            y2 = check_run(model, dtype, exe2, d, f"{tagp}{tag}",
                           ["--weights", wp, "--input", xs, *extra], xx, wp, bb, nprng, res)
            if y2 is None:
                continue
            same, how = bitwise_or_close(ys[tag], y2, soft)
            res["runs"][-1]["vs_default"] = how
            if not same:
                a64 = np.asarray(ys[tag], np.float64)
                b64 = np.asarray(y2, np.float64)
                fin = np.isfinite(a64) & np.isfinite(b64)
                e = rel_error(a64[fin], b64[fin]) if fin.any() else 0
                # Soft MoE under --no-fusion is allowed to differ by rounding (1e-6 f32).
                # -O0 may contract differently. Everything else should be bit-equal.
                allowed = (soft and "nofusion" in v) or v == "O0"
                lim = (1e-6 if dtype == "f32" else 1e-2) if allowed else 0.0
                nanpos_same = np.array_equal(np.isnan(a64), np.isnan(b64))
                if e > lim or not nanpos_same:
                    res["findings"].append({"type": "variant_differs", "variant": v, "tag": tag,
                                            "detail": how, "nan_positions_same": nanpos_same})
    return res


# ---------------------------------------------------------------------------
# probe: check the fillNormal port against the executable
# ---------------------------------------------------------------------------

def probe_input_port():
    d = WORK / "probe"
    d.mkdir(parents=True, exist_ok=True)
    for dtype, S, D, B in (("f32", 37, 5, 3), ("bf16", 8, 31, 2), ("f16", 65, 4, 1)):
        src = d / f"p_{dtype}.yaml"
        src.write_text(f"name: probe\nd_model: {D}\nseq_len: {S}\ndtype: {dtype}\nblocks:\n"
                       f"  - layer: ffn\n    d_ff: 1\n    residual: true\n")
        exe = d / f"p_{dtype}.exe"
        rc, out, err, _ = sh([MOEC, src, "-o", exe], 120)
        assert rc == 0, err
        specs = parse_weight_list(sh([MOEC, src, "--list-weights"], 60)[1].splitlines())
        zeros = {n: np.zeros(s, NP_DTYPE[t]) for n, (s, t) in specs.items()}
        (d / "z.st").write_bytes(safetensors_bytes(zeros))
        rc, out, err, _ = sh([exe, "--weights", d / "z.st", "--batch", B, "--output", d / "y.npy"], 60)
        assert rc == 0, err
        y = np.load(d / "y.npy")
        x = seeded_input(0, B, S, D, dtype).astype(np.float32 if dtype == "bf16" else NP_DTYPE[dtype])
        ndiff = int((y.astype(np.float64) != x.astype(np.float64)).sum())
        print(f"probe {dtype}: {ndiff} of {x.size} elements differ from the port", flush=True)
        assert ndiff == 0


# ---------------------------------------------------------------------------
# main loop
# ---------------------------------------------------------------------------

def make_case(rng, nprng):
    case = gen_model(rng)
    case["wseed"] = rng.randint(0, 2**31)
    case["seed"] = rng.choice([0, 1, 2, 7, 42, rng.randint(0, 2**31), rng.randint(0, 2**63)])
    case["filew"] = {"router_scale": rng.choice([0.3, 1.0, 1.0, 3.0, 10.0]),
                     "bias_scale": rng.choice([0.1, 0.5, 2.0]),
                     "x_scale": rng.choice([1.0, 1.0, 0.1, 4.0]),
                     "x_shift": rng.choice([0.0, 0.0, 0.0, 1.5]),
                     "nan": rng.choice([None] * 16 + [float("nan"), float("inf"), float("-inf")]),
                     "native_input": rng.random() < 0.5}
    dtype = case["model"].get("dtype", "f32")
    case["flags"] = []
    if dtype == "bf16":
        case["flags"] = rng.choice([[], [], ["--bf16-amx=false"], ["--bf16-dot-products"]])
    variants = []
    r = rng.random()
    if r < 0.45:
        variants.append(rng.choice(["nofusion", "nofusion", "nofusion", "noparallel", "O0",
                                    "nofusion_noparallel"]))
    if rng.random() < 0.25:
        variants.append("threads1")
    return case, variants


def summarize_case(cid, case, res):
    return {"id": cid, "time": time.strftime("%H:%M:%S"), "moec_sha": MOEC_SHA[0],
            "case": {k: v for k, v in case.items() if k != "yaml"},
            **{k: v for k, v in res.items()}}


MOEC_SHA = [None]


def moec_sha():
    return hashlib.sha1(MOEC.read_bytes()).hexdigest()[:12]


def cmd_run(args):
    WORK.mkdir(parents=True, exist_ok=True)
    FAILS.mkdir(parents=True, exist_ok=True)
    probe_input_port()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    deadline = time.time() + args.minutes * 60
    cid = args.start_id
    print(f"fuzz seed {seed}", flush=True)
    while time.time() < deadline:
        cid += 1
        case, variants = make_case(rng, nprng)
        d = WORK / f"c{cid:05d}"
        for attempt in range(3):
            wait_for_moec()
            MOEC_SHA[0] = moec_sha()
            t0 = time.time()
            try:
                res = check_case(case, d, nprng, rng, variants)
            except Exception:
                res = {"findings": [{"type": "harness_exception", "tb": traceback.format_exc()}],
                       "runs": []}
            wait_for_moec()
            if moec_sha() == MOEC_SHA[0]:
                break
            print(f"[{cid}] moec changed during the case; rerunning", flush=True)
            shutil.rmtree(d, ignore_errors=True)
        res["wall"] = round(time.time() - t0, 2)
        rec = summarize_case(cid, case, res)
        with open(LOG, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
        real = [f for f in res["findings"]
                if not (f["type"] == "mismatch" and f.get("near_tie"))]
        tie = [f for f in res["findings"] if f["type"] == "mismatch" and f.get("near_tie")]
        status = "FAIL " + ",".join(sorted({f["type"] for f in real})) if real else (
            "tie-mismatch" if tie else "ok")
        errs = " ".join(f"{r['tag']}:{r.get('rel_err', float('nan')):.1e}" for r in res["runs"]
                        if "rel_err" in r)
        print(f"[{cid}] {status} wall {res['wall']}s {errs} "
              f"{[b['layer'] for b in case['blocks']]} S={case['model']['seq_len']} "
              f"D={case['model']['d_model']} B={case['batches']} {variants}", flush=True)
        if real:
            dst = FAILS / d.name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(d, dst)
            (dst / "case.json").write_text(json.dumps(rec, default=str, indent=1))
        shutil.rmtree(d, ignore_errors=True)


def cmd_case(args):
    """Re-check a saved case (case.json in DIR), optionally with a modified
    YAML file (--yaml)."""
    rec = json.loads((pathlib.Path(args.dir) / "case.json").read_text())
    case = rec["case"]
    case["yaml"] = pathlib.Path(args.yaml).read_text() if args.yaml else rec["yaml"]
    variants = args.variants.split(",") if args.variants else rec.get("variants", [])
    nprng = np.random.default_rng(args.nseed)
    d = WORK / "recheck"
    shutil.rmtree(d, ignore_errors=True)
    res = check_case(case, d, nprng, random.Random(0), variants)
    print(json.dumps(res, default=str, indent=1))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--minutes", type=float, default=70)
    r.add_argument("--seed", type=int)
    r.add_argument("--start-id", type=int, default=0)
    c = sub.add_parser("case")
    c.add_argument("dir")
    c.add_argument("--yaml")
    c.add_argument("--variants")
    c.add_argument("--nseed", type=int, default=0)
    a = ap.parse_args()
    {"run": cmd_run, "case": cmd_case}[a.cmd](a)


if __name__ == "__main__":
    main()
