"""One full search step (architecture step + weight step, first order) of every supernet, fused vs
eager, side by side: median time and peak memory.

    python benchmarks/bench_search_step.py                        # CPU, batch 8
    python benchmarks/bench_search_step.py --device cuda --json $OUT/search_step.json

The supernets and settings are common.SEARCH_SPACES'. The steps of the variants are interleaved
(fused, eager, fused, ...) so that a slow phase of a shared machine hits all alike. Related
scripts: bench_search_compile.py (torch.compile of the eager step), profile_search_glue.py (where
the time goes), search_max_batch.py (largest batch that fits), count_step_ops.py (operators).
"""
import argparse
import json
import statistics
import sys

import common  # noqa: E402
from common import fmt, median_ms, peak_extra_mb, write_json  # noqa: E402

VARIANTS = ("fused", "eager")


def measure(space, variants, args):
    """Median step time of each variant, steps interleaved; then each one's peak memory."""
    data = common.search_batches(args.batch, args.image_size, args.device)
    steps = {}
    for v in variants:
        _, opt = common.build_search(space, args.init_channels, v == "fused", args.device)
        steps[v] = common.search_step(opt, data)
        steps[v]()  # warm-up: optimiser state, allocator
    times = {v: [] for v in variants}
    for _ in range(args.reps):
        for v, step in steps.items():
            times[v].append(median_ms(step, args.device, 1, warmup=0))
    rows = {}
    for v, step in steps.items():
        if args.cuda:
            peak = peak_extra_mb(step, args.device)
        else:  # resident-memory peak, measured in a child process whose freed memory returns to the OS
            spec = {"space": space, "variant": v, "C": args.init_channels, "batch": args.batch,
                    "size": args.image_size}
            peak = common.cpu_memory(__file__, spec).get("peak_mb")
        rows[v] = {"ms": statistics.median_high(times[v]), "peak_mb": peak}
    return rows


def memory_case(spec):
    _, opt = common.build_search(spec["space"], spec["C"], spec["variant"] == "fused", "cpu")
    step = common.search_step(opt, common.search_batches(spec["batch"], spec["size"], "cpu"))
    step()  # optimiser state and allocator warm
    print(json.dumps({"peak_mb": peak_extra_mb(step, "cpu")}))


def main(argv=None):
    p = common.search_parser(__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--reps", type=int, default=None, help="timed steps (default 10 on CUDA, 5 on CPU)")
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = common.parse_search_args(p, argv)
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown variant {v!r}; expected some of {', '.join(VARIANTS)}")
    args.reps = args.reps or (10 if args.cuda else 5)
    results = dict(common.search_header("search step (arch + weight, first order)", args), rows={})
    print(f"{'space':<13}{'variant':<9}{'step ms':>10}{'peak MB':>10}{'vs eager':>10}")
    for s in args.spaces:
        row = measure(s, variants, args)
        eager_ms = row.get("eager", {}).get("ms")
        for v, r in row.items():
            speed = f"{eager_ms / r['ms']:.2f}x" if eager_ms and r.get("ms") else "-"
            print(f"{s:<13}{v:<9}{fmt(r.get('ms'), '.1f'):>10}{fmt(r.get('peak_mb'), '.0f'):>10}{speed:>10}")
        results["rows"][s] = row
        write_json(args.json, results)  # kept if a time cap stops the run later
        sys.stdout.flush()


if __name__ == "__main__":
    main()
