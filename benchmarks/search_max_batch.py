"""The largest power-of-two batch whose search step (architecture + weight step) runs, fused vs
eager, from --batch up to --limit.

    python benchmarks/search_max_batch.py --device cuda --spaces hc,hs --json $OUT/search_batch.json

Meant for CUDA, where running out of memory is an error the script catches. On the CPU memory
runs out by swapping or the kernel's OOM killer instead, so keep --limit small there (a check of
the mechanics, not a measurement).
"""
import gc

import torch

import common  # noqa: E402
from common import sync, write_json  # noqa: E402


def max_batch(space, variant, args):
    """Largest batch that ran, and why the next one did not: an out-of-memory error, or another
    error at that size (cuDNN and cuBLAS report a failed workspace allocation as a plain
    RuntimeError), or the limit."""
    ok, b, why = None, args.batch, f"reached the limit {args.limit}"
    while b <= args.limit:
        try:
            _, opt = common.build_search(space, args.init_channels, variant == "fused", args.device)
            common.search_step(opt, common.search_batches(b, args.image_size, args.device))()
            sync(args.device)
            ok = b
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
            why = f"batch {b}: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            break
        finally:
            opt = None
            gc.collect()
            if args.cuda:
                torch.cuda.empty_cache()
        b *= 2
    return {"batch": ok, "next": why}


def main(argv=None):
    p = common.search_parser(__doc__.split("\n\n")[0], batch_help="first batch tried (default 64 on CUDA, 8 on CPU)")
    p.add_argument("--limit", type=int, default=4096, help="largest batch tried (default 4096)")
    args = common.parse_search_args(p, argv)
    what = f"largest power-of-two batch that fits, up to {args.limit}"
    results = dict(common.search_header(what, args), max_batch={})
    for s in args.spaces:
        mb = {v: max_batch(s, v, args) for v in ("eager", "fused")}
        results["max_batch"][s] = mb
        write_json(args.json, results)  # kept if a time cap stops the run later
        print(f"{s:<13} eager {mb['eager']['batch']}  fused {mb['fused']['batch']}"
              f"  (eager {mb['eager']['next']}; fused {mb['fused']['next']})", flush=True)


if __name__ == "__main__":
    main()
