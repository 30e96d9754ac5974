"""torch.compile of the eager supernets' search step: the time the first two steps take (compiling
the architecture-step and weight-step graphs), then median step time and peak memory.

    python benchmarks/bench_search_compile.py --spaces hs                  # CPU, batch 8
    python benchmarks/bench_search_compile.py --device cuda --compile-timeout 55

Each space compiles in a child process capped by --compile-timeout (compiling a whole supernet
can take many minutes); one that does not finish in time is reported as such. Compare the step
time with the eager and fused rows of bench_search_step.py at the same settings.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import common  # noqa: E402
from common import fmt, median_ms, peak_extra_mb, sync, write_json  # noqa: E402


def worker(space, args):
    _, opt = common.build_search(space, args.init_channels, False, args.device, compiled=True)
    step = common.search_step(opt, common.search_batches(args.batch, args.image_size, args.device))
    t0 = time.perf_counter()
    step()  # compiles the architecture-step and the weight-step graphs
    step()
    sync(args.device)
    compile_s = time.perf_counter() - t0
    ms = median_ms(step, args.device, args.reps, warmup=1)
    print(json.dumps({"ms": ms, "peak_mb": peak_extra_mb(step, args.device), "compile_s": compile_s}))


def measure(space, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", space, "--device", args.device,
           "--batch", str(args.batch), "--init-channels", str(args.init_channels),
           "--image-size", str(args.image_size), "--reps", str(args.reps)]
    t0 = time.perf_counter()
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # CPU peak memory (see common.py)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ms": None, "peak_mb": None, "compile_s": None,
                "note": f"compile + {args.reps} steps did not finish within {args.compile_timeout:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"ms": None, "peak_mb": None, "compile_s": None,
                "note": f"failed after {time.perf_counter() - t0:.0f} s: {last}"}
    return json.loads(lines[-1])


def main(argv=None):
    p = common.search_parser(__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=None, help="timed steps (default 10 on CUDA, 5 on CPU)")
    p.add_argument("--compile-timeout", type=float, default=None,
                   help="cap in seconds for compile + timing, per space (default 120 on CUDA, 300 on CPU)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = common.parse_search_args(p, argv)
    args.reps = args.reps or (10 if args.cuda else 5)
    args.compile_timeout = args.compile_timeout or (120.0 if args.cuda else 300.0)
    if args.worker:
        return worker(args.worker, args)
    results = dict(common.search_header("torch.compile of the eager search step", args), rows={})
    print(f"{'space':<13}{'step ms':>10}{'peak MB':>10}{'compile s':>11}  note")
    for s in args.spaces:
        r = measure(s, args)
        print(f"{s:<13}{fmt(r['ms'], '.1f'):>10}{fmt(r['peak_mb'], '.0f'):>10}{fmt(r['compile_s'], '.1f'):>11}"
              f"  {r.get('note', '')}", flush=True)
        results["rows"][s] = r
        write_json(args.json, results)  # kept if a time cap stops the run later


if __name__ == "__main__":
    main()
