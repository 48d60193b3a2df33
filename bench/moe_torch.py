"""PyTorch eager baselines for bench/run.py, written from SEMANTICS.md the way
MoE layers are written in PyTorch (Hugging Face's SwitchTransformers loop
over experts with index masks, einsum Soft MoE). Runs under Debian's
python3-torch (/usr/bin/python3): reads a JSON config on stdin and prints
the per-run times in milliseconds as JSON, or, as bench/run.py's worker
("serve": true), runs the layer once for each line it reads.
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ACT = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu,
       "gelu_tanh": lambda v: F.gelu(v, approximate="tanh")}


def mlp(v, w1, w2, wg, act):
    if act in ("swiglu", "geglu"):
        gate = F.silu(v @ wg) if act == "swiglu" else F.gelu(v @ wg)
        return (gate * (v @ w1)) @ w2
    return ACT[act](v @ w1) @ w2


def rms(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)


class TokenChoice:
    def __init__(self, c, dtype):
        D, F_, E = c["d_model"], c["d_ff"], c["experts"]
        self.c, self.E = c, E
        self.norm = torch.ones(D, dtype=dtype)
        self.wr = torch.randn(D, E) / D ** 0.5
        self.w1 = (torch.randn(E, D, F_) / D ** 0.5).to(dtype)
        self.w2 = (torch.randn(E, F_, D) / F_ ** 0.5).to(dtype)
        self.wg = (torch.randn(E, D, F_) / D ** 0.5).to(dtype) if c["activation"] in ("swiglu", "geglu") else None

    def __call__(self, x):
        c, E = self.c, self.E
        B, S, D = x.shape
        h = rms(x, self.norm)
        probs = torch.softmax(h.float() @ self.wr, dim=-1)            # [B, S, E] (f32 router)
        k = c.get("top_k", 1)
        gates, experts = probs.topk(k, dim=-1)                          # [B, S, k]
        if c.get("normalize_gates"):
            gates = gates / gates.sum(-1, keepdim=True)
        C = min(S, -(-int(k * S * c["capacity_factor"]) // E))
        mask = F.one_hot(experts, E)                                    # [B, S, k, E]
        # Priority: all rank-1 choices before rank-2, token order within a rank.
        order = mask.permute(0, 2, 1, 3).reshape(B, k * S, E)
        position = (torch.cumsum(order, dim=1) - 1).reshape(B, k, S, E).permute(0, 2, 1, 3)
        kept = mask.bool() & (position < C)                             # [B, S, k, E]
        weight = (gates.unsqueeze(-1) * kept).sum(2)                    # [B, S, E]
        keep = kept.any(2)                                              # [B, S, E]
        y = torch.zeros_like(h)
        hf, yf, wf, kf = h.reshape(-1, D), y.reshape(-1, D), weight.reshape(-1, E), keep.reshape(-1, E)
        for e in range(E):
            idx = kf[:, e].nonzero().squeeze(-1)
            if idx.numel():
                out = mlp(hf[idx], self.w1[e], self.w2[e],
                          None if self.wg is None else self.wg[e], c["activation"])
                yf.index_add_(0, idx, (out.float() * wf[idx, e:e + 1]).to(yf.dtype))
        return x + y


class ExpertChoice(TokenChoice):
    def __call__(self, x):
        c, E = self.c, self.E
        B, S, D = x.shape
        h = rms(x, self.norm)
        probs = torch.softmax(h.float() @ self.wr, dim=-1)              # [B, S, E]
        C = min(S, -(-int(S * c["capacity_factor"]) // E))
        gates, tokens = probs.transpose(1, 2).topk(C, dim=-1)           # [B, E, C]
        taken = torch.gather(h.unsqueeze(1).expand(B, E, S, D), 2,
                             tokens.unsqueeze(-1).expand(B, E, C, D))   # [B, E, C, D]
        v = taken.permute(1, 0, 2, 3).reshape(E, B * C, D)
        out = mlp(v, self.w1, self.w2, self.wg, c["activation"])         # bmm over experts
        out = out.reshape(E, B, C, D).permute(1, 0, 2, 3).float() * gates.unsqueeze(-1)
        y = torch.zeros(B, S, D)
        y.scatter_add_(1, tokens.reshape(B, E * C, 1).expand(B, E * C, D), out.reshape(B, E * C, D))
        return x + y.to(x.dtype)


class SoftMoE:
    def __init__(self, c, dtype):
        D, F_, n, p = c["d_model"], c["d_ff"], c["experts"], c.get("slots_per_expert", 1)
        self.c, self.n, self.p = c, n, p
        self.norm = torch.ones(D, dtype=dtype)
        self.phi = (torch.randn(D, n * p) / D ** 0.5).to(dtype)
        self.scale = torch.tensor(1.0)
        self.w1 = (torch.randn(n, D, F_) / D ** 0.5).to(dtype)
        self.w2 = (torch.randn(n, F_, D) / F_ ** 0.5).to(dtype)

    def __call__(self, x):
        B, S, D = x.shape
        h = rms(x, self.norm)
        xn = F.normalize(h.float(), dim=-1, eps=1e-6)
        phin = self.scale * F.normalize(self.phi.float(), dim=0, eps=1e-6)
        logits = xn @ phin                                              # [B, m, n*p]
        dispatch = torch.softmax(logits, dim=1)
        combine = torch.softmax(logits, dim=2)
        slots = torch.einsum("bms,bmd->bsd", dispatch.to(h.dtype), h)   # [B, n*p, D]
        v = slots.reshape(B, self.n, self.p, D).permute(1, 0, 2, 3).reshape(self.n, B * self.p, D)
        out = mlp(v, self.w1, self.w2, None, self.c["activation"])      # bmm over experts
        out = out.reshape(self.n, B, self.p, D).permute(1, 0, 2, 3).reshape(B, self.n * self.p, D)
        y = torch.einsum("bms,bsd->bmd", combine.to(h.dtype), out)
        return x + y


def build(config):
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[config["dtype"]]
    layer = {"moe": TokenChoice, "expert_choice": ExpertChoice,
             "soft_moe": SoftMoE}[config["layer"]](config, dtype)
    x = torch.randn(config["batch"], config["seq_len"], config["d_model"]).to(dtype)
    return layer, x


def timed(layer, x):
    start = time.perf_counter()
    layer(x)
    return (time.perf_counter() - start) * 1e3


def main():
    """Reads one request (JSON) from stdin. With "serve": true, warms up,
    prints "ready", then runs the layer once for every line read and prints
    its time in ms, until stdin closes; otherwise runs warmup + runs times
    and prints the times as JSON."""
    config = json.loads(sys.stdin.readline())
    layer, x = build(config)
    with torch.no_grad():
        for _ in range(config["warmup"]):
            layer(x)
        if config.get("serve"):
            print("ready", flush=True)
            for _ in sys.stdin:
                print(f"{timed(layer, x):.6f}", flush=True)
            return
        times = [timed(layer, x) for _ in range(config["runs"])]
    print(json.dumps({"times_ms": times, "median_ms": statistics.median(times),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
