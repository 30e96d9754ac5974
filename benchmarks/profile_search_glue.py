"""Where a search step's time goes: a profile of eager and fused steps (--steps each, interleaved,
medians) that splits out the glue, i.e. the pools, pool BNs, zero op, scalar multiplies and sums
of the mixed ops: everything inside a MixedOp, stage node, pair concat or search cell except the
parametric ops' own modules.

    python benchmarks/profile_search_glue.py                      # CPU, batch 8, 3 steps each
    python benchmarks/profile_search_glue.py --device cuda --steps 1 --json $OUT/search_glue.json

CPU time on the CPU, device time on CUDA. One profiled step moves by several points on a shared
machine, so each eager/fused step pair's glue removed is printed too.
"""
import re
import statistics

import torch
from torch import nn

import common  # noqa: E402
from common import sync, write_json  # noqa: E402

from hdas_ext import nn as fused_nn, reference  # noqa: E402
from hdas_ext.supernets import SearchCell  # noqa: E402

# A search cell counts whole: a fused cell runs whole nodes, not MixedOp modules, and its node sums
# and output concat are glue too.
MIXED = (reference.MixedOp, reference.WindowedCellInput, reference.WeightedPairConcat, fused_nn.FusedMixedOp,
         fused_nn.FusedWindowedCellInput, fused_nn.WeightedPairConcat, SearchCell)
PARAMETRIC = (fused_nn.ReLUConvBN, fused_nn.DilConv, fused_nn.SepConv, fused_nn.FactorizedReduce)


def label_modules(model):
    """record_function ranges: 'hdas.mixed' around every mixed module, 'hdas.param_op' around every
    parametric op and the ReLUs inside it (a fused MixedOp runs an edge's first ReLU once, on its
    own, for all of its ops), 'hdas.zero' around zero ops."""
    handles, labels = [], {}
    for m in model.modules():
        if isinstance(m, MIXED):
            labels[m] = "hdas.mixed"
        elif isinstance(m, PARAMETRIC):
            labels[m] = "hdas.param_op"
            labels.update((r, "hdas.param_op") for r in m.modules() if isinstance(r, nn.ReLU))
        elif isinstance(m, fused_nn.Zero):
            labels[m] = "hdas.zero"
    for module, label in labels.items():
        ctx = []

        def pre(m, inp, label=label, ctx=ctx):
            ctx.append(torch.profiler.record_function(label))
            ctx[-1].__enter__()

        def post(m, inp, out, ctx=ctx):
            ctx.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def category(name, scope):
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


def node_key(name):
    """'aten::max_pool2d_with_indices' and its backward node 'MaxPool2DWithIndicesBackward0' map to
    the same key. An op event's sequence number names the autograd node it created only when that
    node's key matches: ops that create none (no_grad updates, ops below autograd) carry the number
    the next node will get, and must not claim that node's backward time."""
    name = name.split(": ")[-1].replace("aten::", "").replace("hdas::", "hdas")
    return re.sub(r"Backward\d*$", "", name).replace("_", "").lower()


def step_profiler(space, variant, args):
    """A function that profiles one more search step of a fresh supernet and returns its glue."""
    model, opt = common.build_search(space, args.init_channels, variant == "fused", args.device)
    step = common.search_step(opt, common.search_batches(args.batch, args.image_size, args.device))
    step()
    return lambda: profile_step(model, step, args)


def profile_step(model, step, args):
    from torch.profiler import ProfilerActivity, profile

    handles = label_modules(model)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.cuda else [])
    with profile(activities=acts) as prof:
        step()
        sync(args.device)
    for h in handles:
        h.remove()
    cost = (lambda e: e.device_time_total) if args.cuda else (lambda e: e.cpu_time_total)
    seq_cat, glue, total = {}, {}, 0.0

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
            cat = seq_cat.get(e.sequence_nr, {}).get(node_key(name))
            if cat is None and ("hdas" in name or "MixedNode" in name):
                # the fused ops' own backward nodes: the eager autograd.Function's forward op
                # runs below autograd and carries no sequence number to link it by
                cat = "fused kernel"
            total += cost(e)
            if cat is not None:
                glue[cat] = glue.get(cat, 0.0) + cost(e)
            return
        if name.startswith(("aten::", "hdas::")) and not in_op:
            total += cost(e)
            if scope in ("glue", "zero"):
                cat = category(name, scope)
                glue[cat] = glue.get(cat, 0.0) + cost(e)
                stack = [e]
                while stack:
                    s = stack.pop()
                    if s.sequence_nr >= 0:
                        seq_cat.setdefault(s.sequence_nr, {})[node_key(s.name)] = cat
                    stack.extend(s.cpu_children)
            in_op = True
        for c in e.cpu_children:
            visit(c, scope, in_op)

    roots = sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start)
    for r in roots:
        visit(r, None, False)
    glue_ms = {k: v / 1e3 for k, v in sorted(glue.items(), key=lambda kv: -kv[1])}
    return {"total_ms": total / 1e3, "glue_ms": sum(glue_ms.values()), "glue": glue_ms,
            "clock": "device" if args.cuda else "cpu"}


def profile_glue(space, args):
    """Eager and fused glue over --steps profiled steps, the two variants interleaved: per variant
    the median of each figure, and each step pair's glue removed."""
    runs = {v: step_profiler(space, v, args) for v in ("eager", "fused")}
    steps = {v: [] for v in runs}
    for _ in range(args.steps):
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


def main(argv=None):
    p = common.search_parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="profiled steps per variant (median; default 3)")
    args = common.parse_search_args(p, argv)
    what = f"glue profile, median of {args.steps} steps per variant (ms, {'device' if args.cuda else 'CPU'} time)"
    results = dict(common.search_header(what, args), profile={})
    for s in args.spaces:
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
        print("    fused glue: " + ", ".join(f"{k} {v:.1f}" for k, v in f["glue"].items()), flush=True)


if __name__ == "__main__":
    main()
