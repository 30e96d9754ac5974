"""One full search step (architecture step + weight step, first order) of every supernet: fused vs
eager vs torch.compile of the eager supernet, side by side: median time, peak memory, and a
profile of eager and fused steps (--profile-steps each, interleaved, medians) that splits out the
glue (pools, pool BN, the zero op, scalar multiplies and sums of the mixed ops; everything inside
MixedOp/StageNode/pair concat except the parametric ops' own modules).

    python benchmarks/bench_search_step.py                        # CPU, batch 8
    python benchmarks/bench_search_step.py --device cuda --json $OUT/search_step.json
    python benchmarks/bench_search_step.py --device cuda --max-batch   # largest batch that fits

Supernets at the paper's search settings on CIFAR shapes (32x32, 10 classes): DARTS cells (C=16,
8 cells), Hc-DAS (same), Hs-DAS (C=16, 6 cells/stage, DARTS_V2 cells), distribution (C=16,
N_max=8, N_min=4). torch.compile runs in a child process capped by --compile-timeout; its
compile time (first step) is reported, or that it did not finish in time.
"""
import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from common import fmt, machine, median_ms, peak_extra_mb, write_json  # noqa: E402

from hdas_ext.nn import FactorizedReduce, Zero  # noqa: E402
from hdas_ext.nn.operations import leading_relu, takes_scale  # noqa: E402
from hdas_ext.search.bilevel import BilevelOptimizer  # noqa: E402
from hdas_ext.supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch  # noqa: E402

SPACES = {
    "cells": lambda C, fused: DartsCellSearch(C, 10, 8, fused=fused),
    "hc": lambda C, fused: HcDasSearch(C, 10, 8, fused=fused),
    "hs": lambda C, fused: HsDasSearch("DARTS_V2", C, 10, cells_per_stage=6, fused=fused),
    "distribution": lambda C, fused: DistributionSearch("DARTS_V2", C, 10, n_max=8, n_min=4, fused=fused),
}
MIXED = ("MixedOp", "StageNode", "WeightedPairConcat", "FusedMixedOp", "FusedStageNode")
# Glue: everything inside these modules (a search cell: its node sums and output concat too)
# except the parametric ops' own modules.
PARAM_FREE = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def build(space, C, fused, device, compiled=False):
    torch.manual_seed(0)
    model = SPACES[space](C, fused).to(device)
    if compiled:
        model.net = torch.compile(model.net)
    w = torch.optim.SGD(model.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    delta = 1.0 if space in ("hs", "distribution") else 0.0
    gamma = 0.4 if space == "distribution" else 0.0
    return model, BilevelOptimizer(model, w, a, order=1, delta=delta, gamma=gamma)


def batches(batch, size, device):
    g = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(batch, 3, size, size, generator=g).to(device),
                    torch.randint(0, 10, (batch,), generator=g).to(device))
    return [make()], [make()]


def step_fn(opt, data):
    train, val = data
    return lambda: opt.step(train, val, lr=0.025)


def measure(space, variants, args):
    """Median step time of each in-process variant, their steps interleaved (fused, eager, fused,
    ...) so that a slow phase of a shared machine hits all alike; then each one's peak memory."""
    data = batches(args.batch, args.image_size, args.device)
    steps = {}
    for v in variants:
        steps[v] = step_fn(build(space, args.C, v == "fused", args.device)[1], data)
        steps[v]()  # warm-up: optimiser state, allocator
    times = {v: [] for v in variants}
    for _ in range(args.reps):
        for v, step in steps.items():
            times[v].append(median_ms(step, args.device, 1, warmup=0))
    rows = {}
    for v, step in steps.items():
        if args.device.startswith("cuda"):
            peak = peak_extra_mb(step, args.device)
        else:  # resident-memory peak, measured in a child process whose freed memory returns to the OS
            spec = {"space": space, "variant": v, "C": args.C, "batch": args.batch, "size": args.image_size}
            peak = common.cpu_memory(__file__, spec).get("peak_mb")
        rows[v] = {"ms": statistics.median_high(times[v]), "peak_mb": peak}
    return rows


def memory_case(spec):
    model, opt = build(spec["space"], spec["C"], spec["variant"] == "fused", "cpu")
    step = step_fn(opt, batches(spec["batch"], spec["size"], "cpu"))
    step()  # optimiser state and allocator warm
    print(json.dumps({"peak_mb": peak_extra_mb(step, "cpu")}))


# ---- torch.compile, in a child process with a time cap ---------------------------------------
def compile_worker(args):
    model, opt = build(args.space, args.C, False, args.device, compiled=True)
    step = step_fn(opt, batches(args.batch, args.image_size, args.device))
    t0 = time.perf_counter()
    step()  # compiles the architecture-step and the weight-step graphs
    step()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    ms = median_ms(step, args.device, args.reps, warmup=1)
    peak = peak_extra_mb(step, args.device)
    print(json.dumps({"ms": ms, "peak_mb": peak, "compile_s": compile_s}))


def measure_compiled(space, args):
    cmd = [sys.executable, __file__, "--_compile-worker", space, "--device", args.device, "--batch", str(args.batch),
           "--C", str(args.C), "--image-size", str(args.image_size), "--reps", str(args.reps)]
    t0 = time.perf_counter()
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # CPU peak memory (see common.py)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ms": None, "peak_mb": None, "compile_s": None,
                "note": f"compile + {args.reps} steps did not finish within {args.compile_timeout:.0f} s"}
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"ms": None, "peak_mb": None, "compile_s": None,
                "note": f"failed after {time.perf_counter() - t0:.0f} s: " + (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


# ---- glue profile ----------------------------------------------------------------------------
def _label_modules(model):
    """record_function ranges: 'hdas.mixed' around every mixed module, 'hdas.param_op' around the
    parametric ops inside it (their time is not glue), 'hdas.zero' around zero ops."""
    handles = []

    def wrap(module, label):
        ctx = {}

        def pre(m, inp):
            ctx[id(m)] = torch.profiler.record_function(label)
            ctx[id(m)].__enter__()

        def post(m, inp, out):
            ctx.pop(id(m)).__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))

    for m in model.modules():
        if type(m).__name__ in MIXED:
            wrap(m, "hdas.mixed")
        if type(m).__name__ == "SearchCell":  # a fused cell runs whole nodes, not MixedOp modules
            wrap(m, "hdas.mixed")
            wrap(m.preprocess0, "hdas.param_op")
            wrap(m.preprocess1, "hdas.param_op")
        if hasattr(m, "primitives") and hasattr(m, "_ops"):
            for name, op in zip(m.primitives, m._ops):
                if name not in PARAM_FREE or isinstance(op, FactorizedReduce):
                    wrap(op, "hdas.param_op")
                    if takes_scale(op):  # a fused MixedOp runs it alone, once for all its ops
                        wrap(leading_relu(op), "hdas.param_op")
                elif isinstance(op, Zero):
                    wrap(op, "hdas.zero")
    return handles


def _category(name, scope):
    if scope == "zero":
        return "zero op"
    if "pool" in name:
        return "pools"
    if "batch_norm" in name:
        return "pool BN"
    if name.startswith("hdas::"):
        return "fused kernel"
    if name in ("aten::mul", "aten::mul_"):
        return "scalar multiplies"
    if name in ("aten::add", "aten::add_", "aten::sum", "aten::cat", "aten::stack"):
        return "sums/concat"
    return "other glue"


def _node_key(name):
    """'aten::max_pool2d_with_indices' and its backward node 'MaxPool2DWithIndicesBackward0' map to
    the same key. An op event's sequence number names the autograd node it created only when that
    node's key matches: ops that create none (no_grad updates, ops below autograd) carry the number
    the next node will get, and must not claim that node's backward time."""
    name = name.split(": ")[-1].replace("aten::", "").replace("hdas::", "hdas")
    return re.sub(r"Backward\d*$", "", name).replace("_", "").lower()


def step_profiler(space, variant, args):
    """A function that profiles one more search step of a fresh supernet and returns its glue."""
    model, opt = build(space, args.C, variant == "fused", args.device)
    step = step_fn(opt, batches(args.batch, args.image_size, args.device))
    step()
    return lambda: _profile(model, step, args)


def _profile(model, step, args):
    from torch.profiler import ProfilerActivity, profile

    handles = _label_modules(model)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    for h in handles:
        h.remove()
    cuda = args.device.startswith("cuda")
    cost = (lambda e: e.device_time_total) if cuda else (lambda e: e.cpu_time_total)
    seq_cat, glue, total = {}, {}, 0.0

    def is_op(e):
        return e.name.startswith(("aten::", "hdas::"))

    def visit(e, scope, in_op):
        nonlocal total
        name = e.name
        if name == "hdas.mixed":
            scope = "glue"
        elif name == "hdas.param_op":
            scope = "param"
        elif name == "hdas.zero" and scope == "glue":
            scope = "zero"
        if name.startswith("autograd::engine::evaluate_function"):
            cat = seq_cat.get(e.sequence_nr, {}).get(_node_key(name))
            if cat is None and ("hdas" in name or "MixedNode" in name):
                # the fused ops' own backward nodes: the eager autograd.Function's forward op
                # runs below autograd and carries no sequence number to link it by
                cat = "fused kernel"
            total += cost(e)
            if cat is not None:
                glue[cat] = glue.get(cat, 0.0) + cost(e)
            return
        if is_op(e) and not in_op:
            total += cost(e)
            if scope in ("glue", "zero"):
                cat = _category(name, scope)
                glue[cat] = glue.get(cat, 0.0) + cost(e)
                stack = [e]
                while stack:
                    s = stack.pop()
                    if s.sequence_nr >= 0:
                        seq_cat.setdefault(s.sequence_nr, {})[_node_key(s.name)] = cat
                    stack.extend(s.cpu_children)
            in_op = True
        for c in e.cpu_children:
            visit(c, scope, in_op)

    roots = sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start)
    for r in roots:
        visit(r, None, False)
    glue_ms = {k: v / 1e3 for k, v in sorted(glue.items(), key=lambda kv: -kv[1])}
    return {"total_ms": total / 1e3, "glue_ms": sum(glue_ms.values()), "glue": glue_ms,
            "clock": "device" if cuda else "cpu"}


def profile_glue(space, args):
    """Eager and fused glue over --profile-steps profiled steps, the two variants interleaved:
    per variant the median of each figure, and each step pair's glue removed (one step moves by
    several points on a shared machine)."""
    runs = {v: step_profiler(space, v, args) for v in ("eager", "fused")}
    steps = {v: [] for v in runs}
    for _ in range(args.profile_steps):
        for v, run in runs.items():
            steps[v].append(run())
    med = statistics.median_high
    prof = {}
    for v, ps in steps.items():
        cats = {k for p in ps for k in p["glue"]}
        glue = {k: med([p["glue"].get(k, 0.0) for p in ps]) for k in cats}
        prof[v] = {"total_ms": med([p["total_ms"] for p in ps]), "glue_ms": med([p["glue_ms"] for p in ps]),
                   "glue": dict(sorted(glue.items(), key=lambda kv: -kv[1])), "clock": ps[0]["clock"],
                   "steps_glue_ms": [p["glue_ms"] for p in ps]}
    prof["removed_per_step"] = [1 - f["glue_ms"] / e["glue_ms"] for e, f in zip(steps["eager"], steps["fused"])]
    return prof


# ---- largest batch -----------------------------------------------------------------------------
def max_batch(space, variant, args, limit=4096):
    """Largest power-of-two batch (from --batch up) whose search step runs (CUDA), and why the next
    one did not: an out-of-memory error, or another error at that size (cuDNN and cuBLAS report a
    failed workspace allocation as a plain RuntimeError)."""
    ok, b, why = None, args.batch, f"reached the limit {limit}"
    while b <= limit:
        try:
            model, opt = build(space, args.C, variant == "fused", args.device)
            step_fn(opt, batches(b, args.image_size, args.device))()
            torch.cuda.synchronize()
            ok = b
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
            why = f"batch {b}: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            break
        finally:
            model = opt = None
            gc.collect()
            torch.cuda.empty_cache()
        b *= 2
    return {"batch": ok, "next": why}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help="default 64 on CUDA, 8 on CPU")
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--spaces", default="cells,hc,hs,distribution")
    p.add_argument("--variants", default="fused,eager,compile")
    p.add_argument("--reps", type=int, default=None, help="timed steps (default 10 on CUDA, 5 on CPU)")
    p.add_argument("--compile-timeout", type=float, default=None,
                   help="cap in seconds for compile + timing (default 120 on CUDA, 300 on CPU)")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-steps", type=int, default=3, help="profiled steps per variant (median; default 3)")
    p.add_argument("--max-batch", action="store_true", help="CUDA: largest power-of-two batch, fused vs eager")
    p.add_argument("--json", default=None)
    p.add_argument("--_compile-worker", dest="compile_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    cuda = args.device.startswith("cuda")
    args.batch = args.batch or (64 if cuda else 8)
    args.reps = args.reps or (10 if cuda else 5)
    args.compile_timeout = args.compile_timeout or (120.0 if cuda else 300.0)
    if args.compile_worker:
        args.space = args.compile_worker
        return compile_worker(args)
    spaces = [s for s in args.spaces.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    for s in spaces:
        if s not in SPACES:
            p.error(f"--spaces: unknown space {s!r}; expected some of {list(SPACES)}")
    for v in variants:
        if v not in ("fused", "eager", "compile"):
            p.error(f"--variants: unknown variant {v!r}; expected some of fused, eager, compile")
    print(f"# search step (arch + weight, first order), batch {args.batch}, {args.image_size}px, C={args.C}")
    print(f"# machine: {machine(args.device)}")
    results = {"machine": machine(args.device), "batch": args.batch, "C": args.C, "rows": {}}
    print(f"{'space':<13}{'variant':<9}{'step ms':>10}{'peak MB':>10}{'vs eager':>10}  note")
    for s in spaces:
        row = measure(s, [v for v in variants if v != "compile"], args)
        if "compile" in variants:
            row["compile"] = measure_compiled(s, args)
        eager_ms = row.get("eager", {}).get("ms")
        for v, r in row.items():
            speed = f"{eager_ms / r['ms']:.2f}x" if eager_ms and r.get("ms") else "-"
            note = r.get("note", "")
            if r.get("compile_s") is not None:
                note = f"compile {r['compile_s']:.1f} s " + note
            print(f"{s:<13}{v:<9}{fmt(r.get('ms'), '.1f'):>10}{fmt(r.get('peak_mb'), '.0f'):>10}{speed:>10}  {note}")
        results["rows"][s] = row
        write_json(args.json, results)  # kept if a time cap stops the run later
        sys.stdout.flush()
    if args.profile:
        print(f"\n# glue profile, median of {args.profile_steps} steps per variant (ms, "
              + ("device" if cuda else "CPU") + " time)")
        results["profile"] = {}
        for s in spaces:
            prof = profile_glue(s, args)
            results["profile"][s] = prof
            write_json(args.json, results)  # kept if a time cap stops the run later
            e, f = prof["eager"], prof["fused"]
            cut = 100 * (1 - f["glue_ms"] / e["glue_ms"]) if e["glue_ms"] else float("nan")
            per_step = " / ".join(f"{100 * r:.0f}" for r in prof["removed_per_step"])
            print(f"{s:<13} eager: glue {e['glue_ms']:.1f} of {e['total_ms']:.1f} ({100 * e['glue_ms'] / e['total_ms']:.0f}%)"
                  f"  fused: glue {f['glue_ms']:.1f} of {f['total_ms']:.1f}  glue time removed: {cut:.0f}%"
                  f" (step pairs: {per_step} %)")
            print("    eager glue: " + ", ".join(f"{k} {v:.1f}" for k, v in e["glue"].items()))
            print("    fused glue: " + ", ".join(f"{k} {v:.1f}" for k, v in f["glue"].items()))
            sys.stdout.flush()
    if args.max_batch and cuda:
        print("\n# largest power-of-two batch that fits")
        results["max_batch"] = {}
        for s in spaces:
            mb = {v: max_batch(s, v, args) for v in ("eager", "fused")}
            results["max_batch"][s] = mb
            write_json(args.json, results)  # kept if a time cap stops the run later
            print(f"{s:<13} eager {mb['eager']['batch']}  fused {mb['fused']['batch']}"
                  f"  (eager {mb['eager']['next']}; fused {mb['fused']['next']})", flush=True)


if __name__ == "__main__":
    main()
