"""Switchyard's CPU benchmark: `make bench` (or `python3 bench/run.py`).

For each configuration of issue 6 it times Switchyard fused (the default
CPU pipeline, through the switchyard package), Switchyard with fusion off
(`compile(..., fusion=False)`, as `moec --no-fusion`), and PyTorch eager
written from SEMANTICS.md (bench/moe_torch.py under Debian's python3-torch,
in a worker subprocess), the three in turn, run by run, and measures the
machine's ceilings in the same run, before every configuration: sgemm
GFLOP/s (numpy/OpenBLAS, 2048^3) and the FMA peak (bench/kernels/fma_peak.c,
2 threads) for compute-bound layers, copy bandwidth
(one numpy copy, read + write bytes) for the weight-bound Soft MoE layer.
Prints one table of medians and spreads (min-max), fused against fusion off
paired by round, the routing glue of the token-choice blocks, and the
scaling tables.

The glue estimate: a token-choice block minus a dense FFN block (same
widths, same activation) over its kept assignments' worth of tokens. The FFN
does the same expert products with no routing, so the difference is the
router, top-k, capacity positions, gather, combine and their bookkeeping,
and also the cost of reading E experts' weights instead of one (the FFN's
one weight stays in cache across its row blocks). Beside it, the glue
measured with the products taken away: the same block and FFN with 32-wide
experts (d_ff 32), whose products cost almost nothing, the difference taken
as a share of the full block's time.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import ml_dtypes
import numpy as np

import switchyard as sy

HERE = pathlib.Path(__file__).resolve().parent
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "/usr/bin/python3")

CONFIGS = [
    dict(name="switch", layer="moe", batch=4, seq_len=512, d_model=768, d_ff=3072, experts=8,
         top_k=1, capacity_factor=1.25, activation="relu", dtype="f32", bound="compute"),
    dict(name="soft-b16", layer="soft_moe", batch=8, seq_len=196, d_model=768, d_ff=3072,
         experts=128, slots_per_expert=1, activation="gelu", dtype="f32", bound="weights"),
    dict(name="top2-swiglu", layer="moe", batch=4, seq_len=512, d_model=1024, d_ff=2816,
         experts=8, top_k=2, capacity_factor=1.25, activation="swiglu", dtype="f32",
         bound="compute"),
    dict(name="expert-choice", layer="expert_choice", batch=4, seq_len=512, d_model=768,
         d_ff=3072, experts=8, capacity_factor=2.0, activation="relu", dtype="f32",
         bound="compute"),
    dict(name="switch-bf16", layer="moe", batch=4, seq_len=512, d_model=768, d_ff=3072,
         experts=8, top_k=1, capacity_factor=1.25, activation="relu", dtype="bf16",
         bound="compute"),
    dict(name="soft-b16-bf16", layer="soft_moe", batch=8, seq_len=196, d_model=768, d_ff=3072,
         experts=128, slots_per_expert=1, activation="gelu", dtype="bf16", bound="weights"),
]
LAYER_KEYS = ("layer", "experts", "d_ff", "activation", "top_k", "capacity_factor",
              "slots_per_expert")


def median_spread(times):
    return statistics.median(times), min(times), max(times)


def sgemm_gflops(runs):
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    b = a.copy()
    a @ b
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 2048 ** 3 / min(times) / 1e9


def run_kernel(name, *args):
    """Builds bench/kernels/NAME.c with the project's clang and returns what
    it prints; None when it cannot be built here."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = pathlib.Path(tmp) / name
        build = subprocess.run([os.environ.get("CC", "clang-22"), "-O3", "-march=native",
                                "-fopenmp", str(HERE / "kernels" / f"{name}.c"), "-o",
                                str(exe)], capture_output=True, text=True)
        if build.returncode:
            print(f"# {name}.c did not build: {build.stderr.strip()}", file=sys.stderr)
            return None
        return subprocess.run([str(exe), *args], capture_output=True, text=True,
                              check=True).stdout


def fma_peak_gflops():
    """The FMA peak with 2 threads (bench/kernels/fma_peak.c)."""
    out = run_kernel("fma_peak", "2")
    return float(out) if out else None


def read_gbps():
    """Read-only bandwidth with 2 threads (bench/kernels/read_bandwidth.c,
    2.4 GB): what streaming weights can reach, for context beside copy."""
    out = run_kernel("read_bandwidth")
    if not out:
        return None
    for line in out.splitlines():
        if line.startswith("2 threads"):
            return float(line.split()[-2])
    return None


def copy_gbps(runs):
    src = np.ones(128 * 2 ** 20, dtype=np.float32)  # 512 MiB
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / min(times) / 1e9


def model_of(config, batch=None, experts=None, dense=False, d_ff=None):
    block = {k: config[k] for k in LAYER_KEYS if k in config}
    block["norm"] = "rms"
    if experts:
        block["experts"] = experts
    if d_ff:
        block["d_ff"] = d_ff
    if dense:
        block = dict(layer="ffn", norm="rms", d_ff=block["d_ff"],
                     activation=config["activation"])
    return sy.Model(d_model=config["d_model"], seq_len=config["seq_len"], dtype=config["dtype"],
                    name=config["name"], blocks=[block])


# libomp's threads spin for 200 ms (KMP_BLOCKTIME) after a parallel region:
# a run of the other process waits that long, so that it has both CPUs.
SETTLE_S = 0.25


class TorchWorker:
    """PyTorch eager (bench/moe_torch.py under Debian's python3) in a
    subprocess that runs the layer once per call, so that its runs can take
    turns with Switchyard's. None when PyTorch cannot run here."""

    @classmethod
    def start(cls, config, batch, experts=None):
        request = dict(config, batch=batch, threads=2, warmup=1, serve=True)
        if experts:
            request["experts"] = experts
        try:
            proc = subprocess.Popen([TORCH_PYTHON, str(HERE / "moe_torch.py")],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
        except OSError:
            return None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            proc.wait()
            return None
        return cls(proc)

    def __init__(self, proc):
        self.proc = proc

    def __call__(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def time_interleaved(models, config, batch, runs, torch=None):
    """Times each compiled model once per round, the models in turn (each
    round starting with the next one; then PyTorch's worker, when given), so
    that drift in the machine's speed (clock, other tenants of the VM) falls
    on all of them alike. Returns each model's times and useful FLOPs, and
    PyTorch's times (or None)."""
    x = np.random.default_rng(1).standard_normal(
        (batch, config["seq_len"], config["d_model"]), dtype=np.float32)
    if config["dtype"] == "bf16":
        x = x.astype(ml_dtypes.bfloat16)
    flops = [model(x, seed=0).useful_flops for model in models]  # warm-up; binds the weights
    times = [[] for _ in models]
    torch_times = [] if torch else None
    for round_ in range(runs):
        if torch:
            time.sleep(SETTLE_S)
        # The first model after the pause wakes libomp's sleeping threads:
        # each round, another model goes first.
        order = [(round_ + i) % len(models) for i in range(len(models))]
        for model, model_times in ((models[i], times[i]) for i in order):
            start = time.perf_counter()
            model(x, seed=0)
            model_times.append((time.perf_counter() - start) * 1e3)
        if torch:
            time.sleep(SETTLE_S)
            torch_times.append(torch())
    if torch:
        torch.close()
    return list(zip(times, flops)), torch_times


def time_against_torch(models, config, batch, runs, experts=None):
    """time_interleaved with PyTorch's runs taking their turn."""
    return time_interleaved(models, config, batch, runs,
                            TorchWorker.start(config, batch, experts))


def weight_bytes(compiled):
    size = {"f32": 4, "bf16": 2, "f16": 2}
    return sum(int(np.prod(shape)) * size[dtype] for shape, dtype in compiled.weights.values())


def fmt(times):
    if not times:
        return "n/a"
    m, lo, hi = median_spread(times)
    return f"{m:8.1f} ({lo:.0f}-{hi:.0f})"


# glibc returns every large buffer to the system when it is freed, so a
# library's temporaries fault their pages in again on every call.
# Switchyard's artifacts keep theirs in the runtime's own allocator
# (lib/Runtime/Workspace.cpp); PyTorch's CPU allocator does not, so the
# benchmark gives its whole process tree, PyTorch's subprocess included,
# glibc tunables that keep freed memory in the heap.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824"


def main():
    if "GLIBC_TUNABLES" not in os.environ:
        os.execve(sys.executable, [sys.executable] + sys.argv,
                  dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLES))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--no-scaling", action="store_true")
    args = parser.parse_args()

    # The ceilings are taken before every configuration, and each is the
    # best of all its measurements: the VM's slow spells (other tenants)
    # only ever lower a measurement, and can last minutes.
    ceilings = {"sgemm": [], "peak": [], "copy": [], "read": []}

    def measure_ceilings():
        ceilings["sgemm"].append(sgemm_gflops(args.runs))
        for key, measure in (("peak", fma_peak_gflops), ("read", read_gbps)):
            value = measure()
            if value:
                ceilings[key].append(value)
        ceilings["copy"].append(copy_gbps(args.runs))

    only = set(args.only.split(",")) if args.only else None
    glue, rows = [], []
    for config in CONFIGS:
        if only and config["name"] not in only:
            continue
        measure_ceilings()
        print(f"# timing {config['name']}", file=sys.stderr, flush=True)
        compiled = sy.compile(model_of(config))
        [(sy_times, flops), (off_times, _)], torch_times = time_against_torch(
            [compiled, sy.compile(model_of(config), fusion=False)], config, config["batch"],
            args.runs)
        rows.append((config, flops, sy_times, off_times, torch_times, weight_bytes(compiled)))
        if config["layer"] == "moe" and config["top_k"] == 1:
            glue.append(config)
    measure_ceilings()

    gemm = max(ceilings["sgemm"])
    peak = max(ceilings["peak"]) if ceilings["peak"] else None
    bandwidth = max(ceilings["copy"])
    read = max(ceilings["read"]) if ceilings["read"] else None
    print(f"# Switchyard CPU benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{os.cpu_count()} CPUs")
    peak_text = f"{peak:.0f} GFLOP/s" if peak else "n/a"
    print(f"# ceilings: sgemm {gemm:.0f} GFLOP/s (numpy/OpenBLAS 2048^3), "
          f"FMA peak {peak_text} (bench/kernels/fma_peak.c, 2 threads), "
          f"copy {bandwidth:.1f} GB/s (numpy, read+write); read "
          + (f"{read:.1f} GB/s" if read else "n/a")
          + " (bench/kernels/read_bandwidth.c, 2 threads, for context)")
    print("# each ceiling is the best of its measurements before every configuration and "
          "at the end (the VM's other tenants only ever slow a run down); copy ranged "
          f"{min(ceilings['copy']):.1f}-{bandwidth:.1f} GB/s, sgemm "
          f"{min(ceilings['sgemm']):.0f}-{gemm:.0f} GFLOP/s")
    bf16 = next((c for c in CONFIGS if c["dtype"] == "bf16"), None)
    if bf16:
        # Which path the bf16 expert products took (the compiler chooses by
        # the host: docs/Rationale.md).
        loops = sy.compile(model_of(bf16), stage="loops").ir
        path = ("AMX tiles (tdpbf16ps)" if "amx.tile_mulf" in loops else
                "AVX-512 BF16 dot products" if "x86vector.avx512.dot" in loops else
                "f32 FMAs on widened operands")
        print(f"# bf16 expert products: {path}")
    print(f"# times in ms: median (min-max) of {args.runs} runs after a warm-up; "
          "fused = the default pipeline, fusion off = compile(fusion=False); fused, fusion "
          "off and PyTorch (a worker process) run in turn, "
          f"{SETTLE_S * 1e3:.0f} ms apart when the process changes; "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES')}")
    print()
    header = ("| config | B | useful GFLOP | fused ms | fusion off ms | PyTorch eager ms "
              "| vs PyTorch | fused vs off | useful GFLOP/s | vs ceiling |")
    print(header)
    print("|" + "---|" * 10)
    for config, flops, sy_times, off_times, torch_times, nbytes in rows:
        med = statistics.median(sy_times)
        speedup = (f"{statistics.median(torch_times) / med:.2f}x" if torch_times else "n/a")
        rate = flops / (med * 1e6)
        if config["bound"] == "compute":
            ceiling = f"{rate / gemm:.0%} of sgemm"
            if peak:
                ceiling += f", {rate / peak:.0%} of FMA peak"
        else:
            stream_ms = nbytes / (bandwidth * 1e9) * 1e3
            ceiling = f"{med / stream_ms:.2f}x weight stream ({stream_ms:.0f} ms)"
            if read:
                read_ms = nbytes / (read * 1e9) * 1e3
                ceiling += f"; {med / read_ms:.2f}x at the read bandwidth ({read_ms:.0f} ms)"
        print(f"| {config['name']} | {config['batch']} | {flops / 1e9:.2f} | {fmt(sy_times)} | "
              f"{fmt(off_times)} | {fmt(torch_times)} | {speedup} | "
              f"{statistics.median(off_times) / med:.2f}x | {rate:.1f} | {ceiling} |",
              flush=True)
    # Fused and fusion off run back to back in every round, so each round is
    # a pair measured in the same state of the VM: the median of the pairs'
    # ratios, and how many rounds fused won, next to the ratio of medians.
    print("\n# fused vs off, paired by round: median of the rounds' off/fused ratios "
          "(rounds where fused was faster)")
    print("# " + "; ".join(
        f"{config['name']} {statistics.median(o / f for f, o in zip(sy_times, off_times)):.2f}x "
        f"({sum(o > f for f, o in zip(sy_times, off_times))} of {len(sy_times)})"
        for config, _, sy_times, off_times, _, _ in rows), flush=True)

    if glue:
        print("\n# routing glue: the block minus a dense FFN over the same tokens; and the "
              "same with 32-wide experts (d_ff 32), whose products cost almost nothing, as a "
              "share of the full block\n")
        print("| config | block ms | dense FFN ms | glue ms | glue share | block, d_ff 32 ms "
              "| FFN, d_ff 32 ms | glue without products ms | its share |")
        print("|" + "---|" * 9)
    for config in glue:
        # Top-1 keeps almost every token: the FFN over all B * S tokens does
        # the kept rows' products (a slight overestimate of them). The
        # models run in turn, so the differences are not the drift between
        # two measurements minutes apart.
        models = [sy.compile(model_of(config, **options))
                  for options in ({}, dict(dense=True), dict(d_ff=32),
                                  dict(dense=True, d_ff=32))]
        timed, _ = time_interleaved(models, config, config["batch"], args.runs)
        block, ffn, small, small_ffn = (statistics.median(t) for t, _ in timed)
        print(f"| {config['name']} | {fmt(timed[0][0])} | {fmt(timed[1][0])} | "
              f"{block - ffn:.1f} | {(block - ffn) / block:.0%} | {fmt(timed[2][0])} | "
              f"{fmt(timed[3][0])} | {small - small_ffn:.1f} | "
              f"{(small - small_ffn) / block:.0%} |", flush=True)

    if args.no_scaling:
        return
    switch = CONFIGS[0]
    print("\n# scaling with the batch (switch config)\n")
    print("| B | Switchyard ms | PyTorch eager ms | useful GFLOP/s |")
    print("|---|---|---|---|")
    compiled = sy.compile(model_of(switch))
    for batch in (1, 4, 16, 64):
        runs = max(2, args.runs // (1 + batch // 16))
        [(sy_times, flops)], torch_times = time_against_torch([compiled], switch, batch, runs)
        print(f"| {batch} | {fmt(sy_times)} | {fmt(torch_times)} | "
              f"{flops / (statistics.median(sy_times) * 1e6):.1f} |", flush=True)
    print("\n# scaling with the experts at fixed tokens (switch config, B=4)\n")
    print("| E | Switchyard ms | PyTorch eager ms | useful GFLOP/s |")
    print("|---|---|---|---|")
    for experts in (8, 32, 128):
        compiled = sy.compile(model_of(switch, experts=experts))
        [(sy_times, flops)], torch_times = time_against_torch([compiled], switch, 4, args.runs,
                                                              experts=experts)
        print(f"| {experts} | {fmt(sy_times)} | {fmt(torch_times)} | "
              f"{flops / (statistics.median(sy_times) * 1e6):.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
