"""Memory per sample and time of one search step: eager vs fused vs fused-lean (recompute=True).

    python benchmarks/bench_memory.py                                  # CPU, every row
    python benchmarks/bench_memory.py --rows cells,hc,pc-darts --batches 8,16,32,64 --reps 3
    python benchmarks/bench_memory.py --device cuda --json $OUT/memory.json

Rows, on CIFAR shapes (32 px, 10 classes) with the paper's search settings, each in the modes
eager (the reference modules), fused and lean (fused, recompute=True):
  cells         DARTS cell supernet (C=16, 8 cells)
  hc            Hc-DAS (C=16, 8 cells)
  hs            Hs-DAS (C=16, 6 cells per stage, DARTS_V2 cells)
  distribution  cell-distribution search (C=16, N_max=8, N_min=4)
  darts-fuse    DARTS' search network with its own MixedOps (the eager cell supernet), fused in
                place by hdas_ext.fuse_mixed_ops(model) / fuse_mixed_ops(model, recompute=True)
  pc-darts      partial-channel DARTS (PC-DARTS, k=4: the cell supernet with partial_channels=4
                and edge_normalization, the reference modules), eager only

Memory per sample: the slope of a least-squares line through the peak memory of one first-order
search step of a fresh supernet at each batch of --batches (default 8,64: the slope over 8..64;
more points, e.g. 8,16,32,64, cost more time; a batch whose peak the line through the smaller ones
puts above --max-gb is skipped), after one warm-up step at the smallest. CPU: the peak resident
memory above the process's own before the step, in a fresh process per row and mode whose freed
memory goes back to the OS (glibc's mmap threshold pinned, see common.py); CUDA:
torch.cuda.max_memory_allocated. The largest batch that fits in 80 GB and 141 GB is read off the
same line. Time: the median of --reps steps (default 1) at --time-batch (default 64) after one
warm-up step, the modes' steps interleaved; --clock cpu times one thread's CPU time. The eager
row of darts-fuse is the eager cell supernet: measured once when both rows run.

Prints a progress line per row and mode (stderr), then a markdown table for benchmarks/RESULTS.md
and the issue's bars (stdout). With the defaults, every row on an idle 2-core CPU took 15 minutes.
"""
import argparse
import gc
import json
import statistics
import sys
import time

import torch

import common  # noqa: E402

from hdas_ext import fuse_mixed_ops  # noqa: E402
from hdas_ext.search.bilevel import BilevelOptimizer  # noqa: E402
from hdas_ext.supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch  # noqa: E402

MODES = ("eager", "fused", "lean")
GB = (80, 141)


# ---- rows ---------------------------------------------------------------------------------------------
def _supernet(cls, **kw):
    return lambda mode: cls(fused=mode != "eager", recompute=mode == "lean", **kw)


def _darts_fused_in_place(mode):
    model = DartsCellSearch(16, 10, 8, fused=False)
    if mode != "eager":
        fuse_mixed_ops(model, recompute=mode == "lean")
    return model


ROWS = {
    "cells": (_supernet(DartsCellSearch, C=16, layers=8), MODES),
    "hc": (_supernet(HcDasSearch, C=16, layers=8), MODES),
    "hs": (_supernet(HsDasSearch, genotype="DARTS_V2", C=16, cells_per_stage=6), MODES),
    "distribution": (_supernet(DistributionSearch, genotype="DARTS_V2", C=16, n_max=8, n_min=4), MODES),
    "darts-fuse": (_darts_fused_in_place, MODES),
    "pc-darts": (lambda mode: DartsCellSearch(16, 10, 8, fused=False, partial_channels=4, edge_normalization=True),
                 ("eager",)),
}


def build(row, mode, batch, device):
    """One first-order search step of the row's supernet in `mode` on a fixed batch."""
    torch.manual_seed(0)
    model = ROWS[row][0](mode).to(device)
    w = torch.optim.SGD(model.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    opt = BilevelOptimizer(model, w, a, order=1)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch, 3, 32, 32, generator=g).to(device),
             torch.randint(0, 10, (batch,), generator=g).to(device))]
    return lambda: opt.step(data, data, lr=0.025)


def batch_peaks(row, mode, batches, device, max_mb):
    """[(batch, peak MB)] of one step of a fresh supernet at each batch, after one warm-up step at
    the first batch (lazy initialisation stays out of the peaks; what is constant in the batch
    does not move the slope). Stops before a batch that the line through the points so far puts
    above max_mb."""
    warm = build(row, mode, batches[0], device)
    warm()
    del warm
    points = []
    for b in batches:
        if len(points) >= 2:
            slope, icpt = fit(points)
            if slope * b + icpt > max_mb:
                break
        step = build(row, mode, b, device)
        points.append((b, common.peak_extra_mb(step, device)))
        del step
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return points


def memory_case(spec):
    """CPU: the child process of one row and mode (see common.cpu_memory)."""
    print(json.dumps({"points": batch_peaks(spec["row"], spec["mode"], spec["batches"], "cpu", spec["max_mb"])}))


def fit(points):
    """Least-squares line (slope, intercept) through (batch, MB) points."""
    n = len(points)
    mx = sum(b for b, _ in points) / n
    my = sum(m for _, m in points) / n
    sxx = sum((b - mx) ** 2 for b, _ in points)
    slope = sum((b - mx) * (m - my) for b, m in points) / sxx
    return slope, my - slope * mx


def memory_row(row, mode, args):
    max_mb = args.max_gb * 1024
    if args.device.startswith("cuda"):
        points = batch_peaks(row, mode, args.batches, args.device, max_mb)
    else:
        spec = {"row": row, "mode": mode, "batches": args.batches, "max_mb": max_mb}
        points = common.cpu_memory(__file__, spec).get("points", [])
    if len(points) < 2 or any(mb is None for _, mb in points):
        return {"points": points}
    slope, icpt = fit(points)
    return {"points": points, "mb_per_sample": slope, "intercept_mb": icpt,
            "max_batch": {str(g): int((g * 1024 - icpt) // slope) for g in GB}}


def step_times(row, modes, args):
    """Median time of one step per mode at --time-batch after one warm-up step, the modes' steps
    interleaved."""
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    steps = {m: build(row, m, args.time_batch, args.device) for m in modes}
    for step in steps.values():
        step()
    out = {m: [] for m in modes}
    for _ in range(args.reps):
        for m, step in steps.items():
            common.sync(args.device)
            t0 = clock()
            step()
            common.sync(args.device)
            out[m].append((clock() - t0) * 1e3)
    return {m: statistics.median(ts) for m, ts in out.items()}


# darts-fuse's eager model is the eager cell supernet itself: measured once when both rows run.
SAME = {("darts-fuse", "eager"): ("cells", "eager")}
NAMES = {"cells": "DARTS cells", "hc": "Hc-DAS", "hs": "Hs-DAS", "distribution": "distribution",
         "darts-fuse": "DARTS + fuse_mixed_ops", "pc-darts": "PC-DARTS (k=4)"}


def measure(rows, args):
    results = {}
    for r in rows:
        modes = ROWS[r][1]
        reused = {m: SAME[(r, m)] for m in modes if SAME.get((r, m), (None,))[0] in results}
        res = {m: dict(results[reused[m][0]][reused[m][1]]) if m in reused else memory_row(r, m, args)
               for m in modes}
        timed = [m for m in modes if m not in reused]
        ms = step_times(r, timed, args) if args.time_batch and timed else {}
        for m in modes:
            if m not in reused:
                res[m]["ms"] = ms.get(m)
            x = res[m]
            print(f"# {r} {m}: {common.fmt(x.get('mb_per_sample'))} MB/sample, {common.fmt(x.get('ms'), '.0f')} ms; "
                  "peak MB at each batch " + " ".join(f"{b}:{common.fmt(mb, '.0f')}" for b, mb in x["points"]),
                  file=sys.stderr, flush=True)
        results[r] = res
        common.write_json(args.json, {**args.header, "rows": results})  # kept if a time cap stops the run later
    return results


def _ratio(a, b):
    return a / b if a is not None and b else None


def markdown(results, args):
    """The table for benchmarks/RESULTS.md, and the issue's bars where their rows ran."""
    eager_of = {r: res.get("eager", {}) for r, res in results.items()}
    lines = [f"Machine: {args.header['machine']}. One first-order search step (CIFAR shapes, 32 px); memory per "
             f"sample: slope of the peak over batches {','.join(map(str, args.batches))}; time: {args.clock} clock, "
             f"median of {args.reps} at batch {args.time_batch} after one warm-up step.", "",
             f"| supernet | mode | MB per sample | vs eager | largest batch 80 GB | 141 GB | "
             f"step ms (batch {args.time_batch}) | vs eager |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r, res in results.items():
        e = eager_of[r]
        for m, x in res.items():
            fits = x.get("max_batch", {})
            mem = _ratio(x.get("mb_per_sample"), e.get("mb_per_sample"))
            t = _ratio(x.get("ms"), e.get("ms"))
            lines.append(f"| {NAMES[r]} | {m} | {common.fmt(x.get('mb_per_sample'), '.1f')} | "
                         f"{common.fmt(mem)}x | {fits.get('80', '-')} | {fits.get('141', '-')} | "
                         f"{common.fmt(x.get('ms'), '.0f')} | {common.fmt(t)}x |")
    bars = []
    pc = results.get("pc-darts", {}).get("eager", {}).get("mb_per_sample")
    for r in ("cells", "hc"):
        lean = results.get(r, {}).get("lean", {})
        got = _ratio(lean.get("mb_per_sample"), eager_of.get(r, {}).get("mb_per_sample"))
        if got is not None:
            bars.append(f"- {NAMES[r]}: lean memory per sample {got:.3f}x eager's (bar: at most 0.125)")
        got = _ratio(lean.get("mb_per_sample"), pc)
        if got is not None:
            bars.append(f"- {NAMES[r]}: lean memory per sample {got:.3f}x eager PC-DARTS' (bar: at most 0.333)")
    for r, res in results.items():
        got = _ratio(res.get("lean", {}).get("ms"), eager_of[r].get("ms"))
        if got is not None:
            bars.append(f"- {NAMES[r]}: lean step time {got:.2f}x eager's (bar: at most 1.4)")
    return "\n".join(lines + ([""] + bars if bars else []))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--batches", default="8,64")
    p.add_argument("--max-gb", type=float, default=None,
                   help="skip batches whose predicted peak exceeds this (default: half the memory available)")
    p.add_argument("--time-batch", type=int, default=64, help="batch of the timed steps (0: no timing)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    p.add_argument("--json", default=None)
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    args.batches = sorted(int(b) for b in args.batches.split(","))
    if len(args.batches) < 2 or args.batches[0] < 1:
        p.error(f"--batches: at least two positive batch sizes, got {args.batches}")
    rows = [r for r in args.rows.split(",") if r]
    for r in rows:
        if r not in ROWS:
            p.error(f"--rows: unknown row {r!r}; expected some of {list(ROWS)}")
    if args.max_gb is None:
        args.max_gb = _available_gb(args.device) / 2
    if args.clock == "cpu":
        torch.set_num_threads(1)  # the timed steps; memory is measured in child processes
    args.header = {"machine": common.machine(args.device), "device": args.device, "batches": args.batches,
                   "time_batch": args.time_batch, "reps": args.reps, "clock": args.clock}
    print(markdown(measure(rows, args), args))


def _available_gb(device):
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return free / 2**30
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 8.0


if __name__ == "__main__":
    main()
