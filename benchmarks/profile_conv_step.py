"""Where a cell search step's time goes, by kind of operator: depthwise convolutions, pointwise
(1x1) convolutions, other convolutions, BatchNorm, ReLU, pools, the fused kernels and the rest
(glue: sums, products, copies, concatenations, softmax, the optimisers), forward and backward.

    python benchmarks/profile_conv_step.py                           # DARTS cells, batch 64, + one MixedOp
    python benchmarks/profile_conv_step.py --spaces cells,hc --batch 64 --variants eager,fused,fused-conv

Each top-level operator's time (CPU, inclusive) counts once, in the category of its name and
input shapes (a convolution is depthwise when its weight is [C, 1, k, k], pointwise when it is
[Co, Ci, 1, 1]); backward operators the same way inside their autograd nodes. Variants: eager
(the reference modules), fused (FusedMixedOp, parametric ops as modules: fused-today) and
fused-conv (the convolution candidates through hdas::conv_candidates, where built). Also profiles
one 8-primitive MixedOp at 64x16x32x32, forward+backward (--mixed-op).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

CATS = ("depthwise conv", "pointwise conv", "other conv", "batch norm", "relu", "pools", "fused kernels",
        "glue")
_CONV = ("convolution", "conv2d", "conv_depthwise", "mkldnn_convolution", "slow_conv")


def category(name, shapes):
    n = name.lower()
    if n.startswith("hdas::"):
        return "fused kernels"
    if any(k in n for k in _CONV):
        w = shapes[1] if len(shapes) > 1 and "backward" not in n else (shapes[2] if len(shapes) > 2 else [])
        if len(w) == 4 and w[1] == 1 and w[2] * w[3] > 1:
            return "depthwise conv"
        if len(w) == 4 and w[2] == w[3] == 1:
            return "pointwise conv"
        return "other conv"
    if "batch_norm" in n:
        return "batch norm"
    if "relu" in n or "threshold_backward" in n:
        return "relu"
    if "pool" in n:
        return "pools"
    return "glue"


def attribute(prof):
    """{(phase, category): ms}: each outermost aten/hdas op's inclusive CPU time; phase backward
    inside autograd engine nodes."""
    out = {}

    def visit(e, phase, in_op):
        name = e.name
        if name.startswith("autograd::engine::evaluate_function"):
            phase = "bwd"
        if name.startswith(("aten::", "hdas::")) and not in_op:
            key = (phase, category(name, e.input_shapes or []))
            out[key] = out.get(key, 0.0) + e.cpu_time_total / 1e3
            in_op = True
        for c in e.cpu_children:
            visit(c, phase, in_op)

    for r in sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start):
        visit(r, "fwd", False)
    return out


def profile(fn):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return attribute(prof)


def table(title, results):
    """results: {variant: {(phase, cat): ms}} -> markdown lines."""
    variants = list(results)
    lines = [f"### {title}", "", "| category | " + " | ".join(f"{v} fwd / bwd ms" for v in variants) + " |",
             "|---|" + "---:|" * len(variants)]
    for cat in CATS:
        cells = [f"{r.get(('fwd', cat), 0):.0f} / {r.get(('bwd', cat), 0):.0f}" for r in results.values()]
        if any(c != "0 / 0" for c in cells):
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    totals = [f"{sum(v for (p, _), v in r.items() if p == 'fwd'):.0f} / "
              f"{sum(v for (p, _), v in r.items() if p == 'bwd'):.0f}" for r in results.values()]
    lines.append("| **total** | " + " | ".join(totals) + " |")
    return lines


def search_step(space, variant, batch):
    model, opt = common.build_search(space, 16, variant != "eager", "cpu", conv_candidates=variant == "fused-conv")
    step = common.search_step(opt, common.search_batches(batch, 32, "cpu"))
    step()
    return step


def mixed_op(variant):
    from hdas_ext.nn import FusedMixedOp
    from hdas_ext.primitives import DARTS_PRIMITIVES
    from hdas_ext.reference import MixedOp
    torch.manual_seed(0)
    if variant == "eager":
        m = MixedOp(16, 1, DARTS_PRIMITIVES)
    else:
        m = FusedMixedOp(16, 1, DARTS_PRIMITIVES, **common.conv_option(variant == "fused-conv"))
    x = torch.randn(64, 16, 32, 32, requires_grad=True)
    w = torch.softmax(torch.randn(8), 0).requires_grad_()
    fn = lambda: m(x, w).sum().backward()  # noqa: E731
    fn()
    return fn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spaces", default="cells")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--variants", default=",".join(common.step_variants()))
    p.add_argument("--no-mixed-op", action="store_true")
    p.add_argument("--no-steps", action="store_true", help="only the MixedOp")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    print(f"machine: {common.machine('cpu')}; CPU time, one profiled step after one warm-up step\n", flush=True)
    if not args.no_mixed_op:
        res = {v: profile(mixed_op(v)) for v in variants}
        print("\n".join(table("MixedOp, 8 DARTS primitives, 64x16x32x32, forward+backward", res)) + "\n", flush=True)
    for space in [] if args.no_steps else [s for s in args.spaces.split(",") if s]:
        res = {v: profile(search_step(space, v, args.batch)) for v in variants}
        print("\n".join(table(f"{space}: one first-order search step, batch {args.batch}", res)) + "\n", flush=True)


if __name__ == "__main__":
    main()
