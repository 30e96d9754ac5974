"""The roofline floor of a cell search step on this machine, beside the measured steps.

    python benchmarks/roofline.py                     # DARTS cells, batch 64, CPU: floor, eager, compile, fused
    python benchmarks/roofline.py --spaces cells,hc --reps 5

Measured here: the attainable FLOP rate (the best of a few large float32 GEMMs) and the streaming
bandwidth (the best of a few large copies and additions, bytes read + written). Counted for one
first-order search step (architecture step + weight step): the FLOPs (torch.utils.flop_counter on
the eager step: convolutions and matrix products, forward and backward) and the compulsory bytes:
every state a mixed op reads (written once in the forward, read again in the backward, its gradient
written and read: 4 passes) for each of the two passes, the input batches, and the parameters
(read in the forward and the backward, gradient written, optimiser reading and writing them and
their momentum: 7 passes). The floor is max(FLOPs / rate, bytes / bandwidth), the time no
implementation on this machine can beat; each variant's ratio to it is printed (bench_conv_step.py's
variants). Measure on an otherwise idle machine.
"""
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_conv_step  # noqa: E402
import common  # noqa: E402


def best_s(fn, reps=5):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_rate(n=2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    return 2 * n ** 3 / best_s(lambda: torch.mm(a, b, out=c))


def bandwidth(numel=1 << 26):
    a, b, c = torch.randn(numel), torch.randn(numel), torch.empty(numel)
    copy = 2 * 4 * numel / best_s(lambda: c.copy_(a))
    add = 3 * 4 * numel / best_s(lambda: torch.add(a, b, out=c))
    return max(copy, add)


def step_counts(space, args):
    """(FLOPs, compulsory bytes) of one first-order search step of the eager supernet."""
    model, opt = bench_conv_step.build(space, args.init_channels, "cpu", False, False, False, {})
    data = common.search_batches(args.batch, args.image_size, "cpu")
    states = {}

    def seen(module, inputs):
        x = inputs[0]
        states[(x.data_ptr(), tuple(x.shape))] = x.numel() * x.element_size()

    mixed = [m for m in model.modules() if type(m).__name__ in ("MixedOp", "PartialMixedOp")]
    hooks = [m.register_forward_pre_hook(seen) for m in mixed]
    step = common.search_step(opt, data)
    with FlopCounterMode(display=False) as counter:
        step()
    for h in hooks:
        h.remove()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    inputs = sum(t.numel() * t.element_size() for batch in data for t in batch[0])
    return counter.get_total_flops(), 4 * sum(states.values()) + 7 * params + inputs


def main(argv=None):
    p = common.search_parser(__doc__, batch_help="default 64")
    p.set_defaults(spaces="cells")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    args = common.parse_search_args(p, argv)
    args.batch = args.batch if "--batch" in (argv or sys.argv) else 64
    if args.cuda:
        p.error("roofline.py measures the CPU (--device cpu)")
    out = common.search_header("roofline floor of a first-order search step", args)
    rate, bw = gemm_rate(), bandwidth()
    print(f"# attainable: {rate / 1e9:.1f} GFLOP/s (float32 GEMM 2048^3), {bw / 1e9:.1f} GB/s (streaming)\n")
    out.update(gflops=rate / 1e9, gbps=bw / 1e9, rows={})
    print("| space | GFLOP/step | MB/step | compute floor ms | memory floor ms | floor ms | variant | ms/step | x floor |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for space in args.spaces:
        flops, nbytes = step_counts(space, args)
        t_c, t_m = 1e3 * flops / rate, 1e3 * nbytes / bw
        floor = max(t_c, t_m)
        names = [n for n in bench_conv_step.VARIANTS if not (args.no_compile and n == "compile")]
        ms = bench_conv_step.measure(space, names, args)
        out["rows"][space] = dict(flops=flops, bytes=nbytes, floor_ms=floor, steps=ms)
        for i, (n, t) in enumerate(ms.items()):
            head = (f"{flops / 1e9:.2f} | {nbytes / 2**20:.1f} | {t_c:.1f} | {t_m:.1f} | {floor:.1f}" if i == 0
                    else " | | | | ")
            print(f"| {space if i == 0 else ''} | {head} | {n} | {t:.1f} | {t / floor:.2f} |")
    common.write_json(args.json, out)


if __name__ == "__main__":
    main()
