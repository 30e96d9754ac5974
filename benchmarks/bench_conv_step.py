"""One first-order search step (architecture step, then weight step) of the cell supernets, side
by side in one run: eager, torch.compile of the eager network, fused-today (FusedMixedOp with the
convolution candidates as modules) and fused-conv (the convolution candidates through
hdas::conv_candidates, shared per state). PC-DARTS (k=4) and the lean mode as extra rows.

    python benchmarks/bench_conv_step.py                          # CPU, batch 64, DARTS cells and Hc-DAS
    python benchmarks/bench_conv_step.py --spaces cells --reps 3 --no-compile --batch 8   # a quick look

Steps are interleaved (one of each variant per round) and the median per variant reported with the
ratios to eager in one markdown table; the machine is named. Measure on an otherwise idle machine.
"""
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import median_ms  # noqa: E402

VARIANTS = {  # name: (fused, compiled, conv candidates fused, extra supernet options)
    "eager": (False, False, False, {}),
    "compile": (False, True, False, {}),
    "fused-today": (True, False, False, {}),
    "fused-conv": (True, False, True, {}),
}
EXTRA = {  # extra rows per space: PC-DARTS k=4 and the lean mode (fused-conv), against their eager twins
    "pc-darts eager": (False, False, False, {"partial_channels": 4}),
    "pc-darts fused-conv": (True, False, True, {"partial_channels": 4}),
    "lean fused-conv": (True, False, True, {"recompute": True}),
}


def build(space, C, device, fused, compiled, conv, kw):
    torch.manual_seed(0)
    kw = dict(kw, **(common.conv_option(conv) if fused else {}))
    model = common.SEARCH_SPACES[space](C, fused, **kw).to(device)
    if compiled:
        model.net = torch.compile(model.net)
    w = torch.optim.SGD(model.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    return model, common.BilevelOptimizer(model, w, a, order=1)


def measure(space, names, args):
    data = common.search_batches(args.batch, args.image_size, args.device)
    steps = {}
    for name in names:
        fused, compiled, conv, kw = {**VARIANTS, **EXTRA}[name]
        _, opt = build(space, args.init_channels, args.device, fused, compiled, conv, kw)
        steps[name] = common.search_step(opt, data)
        for _ in range(2 if compiled else 1):  # warm-up (and compilation)
            steps[name]()
    times = {n: [] for n in steps}
    for _ in range(args.reps):
        for n, step in steps.items():
            times[n].append(median_ms(step, args.device, 1, warmup=0))
    return {n: statistics.median(t) for n, t in times.items()}


def main(argv=None):
    p = common.search_parser(__doc__, batch_help="default 64")
    p.set_defaults(spaces="cells,hc")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--no-extra", action="store_true", help="leave the PC-DARTS and lean rows out")
    args = common.parse_search_args(p, argv)
    args.batch = args.batch if "--batch" in (argv or sys.argv) else 64
    out = common.search_header("first-order search step: eager vs compile vs fused-today vs fused-conv", args)
    print(f"# {args.reps} interleaved rounds, median per variant\n")
    print("| space | variant | ms/step | x eager | x fused-today |")
    print("|---|---|---:|---:|---:|")
    out["rows"] = {}
    for space in args.spaces:
        names = [n for n in VARIANTS if not (args.no_compile and n == "compile")]
        if not args.no_extra and space == "cells":
            names += list(EXTRA)
        ms = measure(space, names, args)
        out["rows"][space] = ms
        for n, t in ms.items():
            base = ms["pc-darts eager"] if n.startswith("pc-darts") else ms["eager"]
            today = ms["fused-today"] if not n.startswith("pc-darts") else None
            print(f"| {space} | {n} | {t:.1f} | {base / t:.2f} | {common.fmt(today and today / t)} |")
    common.write_json(args.json, out)


if __name__ == "__main__":
    main()
