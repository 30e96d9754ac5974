"""What the lean mode keeps, decided by cost: memory saved per millisecond added by each way of
recomputing the mixed ops of the DARTS cell supernet (C=16, 8 cells, 32 px, one first-order search
step), against the default fused mode.

    python benchmarks/lean_options.py [--batches 8,16] [--reps 5] [--json out.json]

Variants (the mixed ops only; preprocessing and stem as in the default mode, except 'lean'):
  fused     default fused mode
  node      the whole node recomputed (kernel included) from its input states in the backward (its
            BatchNorms update their running statistics twice: a cost model, not a mode)
  op        recompute=True on the mixed ops: one op at a time rebuilt from the node's input
  op+dw     the same, the first depthwise conv's output of every op kept in the forward
  lean      the supernet's recompute=True: 'op' plus the cells' preprocessing and the stem

Memory: slope of the peak resident memory of one step over the batch sizes, each in a fresh
process (see common.py). Time: CPU time of one step on one thread (a shared machine distorts CPU
time far less than wall time), the variants' steps interleaved, median.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

from hdas_ext.lean import apply as recompute  # noqa: E402
from hdas_ext.nn import FusedMixedOp  # noqa: E402
from hdas_ext.search.bilevel import BilevelOptimizer  # noqa: E402
from hdas_ext.supernets import DartsCellSearch, cell_search  # noqa: E402

VARIANTS = ("fused", "node", "op", "op+dw", "lean")


class _KeptConv(torch.autograd.Function):
    """Returns the conv output the forward kept; differentiates the conv from its input."""

    @staticmethod
    def forward(ctx, x, weight, kept, m):
        ctx.save_for_backward(x, weight)
        ctx.m = m
        return kept[0].detach()

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        m = ctx.m
        gx, gw, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, m.stride, m.padding, m.dilation,
                                                        False, [0, 0], m.groups, [True, True, False])
        return gx, gw, None, None


def _first_depthwise(m, step):
    return step == 0 and m.groups > 1


class _KeepForward(recompute._Forward):
    def conv(self, m, x, step):
        y = super().conv(m, x, step)
        if _first_depthwise(m, step):
            self.records.append(("kept", y))
        return y


class _KeepReplay(recompute._Replay):
    def conv(self, m, x, step):
        if _first_depthwise(m, step):
            return _KeptConv.apply(x, self.param(m, "weight"), [next(self.records)[1]], m)
        return super().conv(m, x, step)


_PLAIN = (recompute._Forward, recompute._Replay, cell_search.fused_edge_sum)


class _NodeRecompute(torch.autograd.Function):
    """The whole node (parametric ops, fused kernel) run without autograd and recomputed in the
    backward, keeping its input states (reentrant checkpointing; parameter gradients pruned as in
    the lean mode). Its BatchNorms update their running statistics again in the recomputation."""

    @staticmethod
    def forward(ctx, edges, n_states, weights, *tensors):
        ctx.edges, ctx.n_states = edges, n_states
        ctx.save_for_backward(weights, *tensors)
        return _PLAIN[2](edges, list(tensors[:n_states]), weights)

    @staticmethod
    def backward(ctx, grad):
        weights, *tensors = ctx.saved_tensors
        need = recompute._needed(ctx, 1 + ctx.n_states)
        leaves = [t.detach().requires_grad_(n) for t, n in zip([weights, *tensors], need)]
        params = dict(zip([n for n, _ in ctx.edges.named_parameters()], leaves[1 + ctx.n_states:]))
        with torch.enable_grad():
            out = torch.func.functional_call(ctx.edges, params, (leaves[1:1 + ctx.n_states], leaves[0]))
        wrt = [t for t in leaves if t.requires_grad]
        got = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        return (None, None, *(next(got) if t.requires_grad else None for t in leaves))


class _Edges(torch.nn.ModuleList):
    def forward(self, states, weights):
        return _PLAIN[2](list(self), states, weights)


def _recomputed_node(edges, states, weights):
    edges = _Edges(edges)  # shares the modules
    params = [p.view_as(p) for p in edges.parameters()]  # views: see recompute._needed
    return _NodeRecompute.apply(edges, len(states), weights, *states, *params)


def switch(variant):
    """Sets the module-level switches the variant runs with."""
    recompute._Forward, recompute._Replay, cell_search.fused_edge_sum = _PLAIN
    if variant == "op+dw":
        recompute._Forward, recompute._Replay = _KeepForward, _KeepReplay
    if variant == "node":
        cell_search.fused_edge_sum = _recomputed_node


def build(variant, batch):
    """One search step of the variant on a fixed batch (switches set)."""
    switch(variant)
    torch.manual_seed(0)
    model = DartsCellSearch(16, 10, 8, recompute=variant == "lean")
    if variant in ("op", "op+dw"):
        for m in model.modules():
            if isinstance(m, FusedMixedOp):
                m.recompute = True
    opt = BilevelOptimizer(model, torch.optim.SGD(model.weights(), 0.025, momentum=0.9),
                           torch.optim.Adam(model.alphas(), 3e-4), order=1)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))]
    return lambda: opt.step(data, data, lr=0.025)


def memory_case(spec):
    torch.set_num_threads(1)
    step = build(spec["variant"], spec["batch"])
    step()
    print(json.dumps({"peak_mb": common.peak_extra_mb(step, "cpu")}))


def times(variants, batch, reps):
    """Single-thread CPU time of one step per variant, the variants interleaved: the fastest of
    `reps` (the step least disturbed by the machine's other work) and the median."""
    torch.set_num_threads(1)
    steps = {}
    for v in variants:
        steps[v] = build(v, batch)
        steps[v]()
    out = {v: [] for v in variants}
    for _ in range(reps):
        for v in variants:
            switch(v)
            t0 = time.thread_time()
            steps[v]()
            out[v].append((time.thread_time() - t0) * 1e3)
    return {v: (min(ts), statistics.median(ts)) for v, ts in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batches", default="8,16")
    p.add_argument("--time-batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    batches = [int(b) for b in args.batches.split(",")]
    variants = args.variants.split(",")
    if variants[0] != "fused" or any(v not in VARIANTS for v in variants):
        p.error(f"--variants: 'fused' first, then some of {VARIANTS[1:]}")
    peaks = {v: [common.cpu_memory(__file__, {"variant": v, "batch": b}).get("peak_mb") for b in batches]
             for v in variants}
    slope = {v: (p[-1] - p[0]) / (batches[-1] - batches[0]) for v, p in peaks.items()}
    timed = times(variants, args.time_batch, args.reps)
    ms = {v: t[0] for v, t in timed.items()}
    print(f"# DARTS cell supernet, one first-order search step; machine: {common.machine('cpu')}")
    print(f"# memory: peak slope over batch {batches}; time: 1-thread CPU ms at batch {args.time_batch}, "
          f"fastest of {args.reps} (median in brackets)")
    print(f"{'variant':<8}{'MB/sample':>11}{'ms/step':>18}{'saved MB/sample':>17}{'added ms/sample':>17}{'MB per ms':>11}")
    rows = {}
    for v in variants:
        saved = slope["fused"] - slope[v]
        added = (ms[v] - ms["fused"]) / args.time_batch
        ratio = saved / added if v != "fused" and added > 0 else None
        rows[v] = {"mb_per_sample": slope[v], "peaks_mb": peaks[v], "ms": ms[v], "median_ms": timed[v][1],
                   "saved_mb_per_sample": saved, "added_ms_per_sample": added, "mb_saved_per_ms": ratio}
        both = f"{ms[v]:.0f} ({timed[v][1]:.0f})"
        print(f"{v:<8}{slope[v]:>11.2f}{both:>18}{saved:>17.2f}{added:>17.2f}{common.fmt(ratio):>11}")
    common.write_json(args.json, {"machine": common.machine("cpu"), "batches": batches, "time_batch": args.time_batch,
                                  "rows": rows})


if __name__ == "__main__":
    main()
