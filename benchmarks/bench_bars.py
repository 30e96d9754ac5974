"""The fused ops against the bars of issue 14, on shapes larger than the GPU's L2 cache.

    python benchmarks/bench_bars.py --device cuda            # on an H100 or H200
    python benchmarks/bench_bars.py --device cpu --small     # mechanics only (no bar means anything here)

For hdas::mixed_node (one input, the parameter-free primitives none, max pool, avg pool, skip, pools
with batch-statistics BN) and hdas::pair_concat (4 states, 3 pairs): median ms of forward and of
forward + backward for the fused op, eager PyTorch (the reference ops) and torch.compile of the
reference; the ratios; and the fused op's achieved bandwidth over the bytes it must move at least
(every input read once, every output written once), as a fraction of the card's nominal peak
(NOMINAL_TBS, found by the device's name) and of what a device-to-device copy attains on it,
measured first. One line per measurement as it completes, then each op's verdicts (PASS/FAIL):
    bandwidth >= 70% of nominal peak, >= 5x eager, >= 1.5x torch.compile (forward + backward).
A card missing from NOMINAL_TBS is held to the copy's bandwidth instead, and the line says so.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, median_ms, parser, write_json  # noqa: E402

import hdas_ext  # noqa: E402
from hdas_ext.ops import codes, mixed_node, pair_concat  # noqa: E402
from hdas_ext.ops import reference as ref  # noqa: E402

# Vendors' datasheet bandwidths (TB/s), matched against the device name in this order.
NOMINAL_TBS = [("H200", 4.8), ("H100 PCIe", 2.0), ("H100 NVL", 3.9), ("H100", 3.35)]
BARS = {"bandwidth": 0.70, "x_eager": 5.0, "x_compile": 1.5}
BIG = (128, 64, 56, 56)  # 103 MB per fp32 tensor: above the L2 of an H100 (50 MB) and an H200 (60 MB)
SMALL = (2, 4, 8, 8)
PRIMS = [codes.NONE, codes.MAX_POOL, codes.AVG_POOL, codes.SKIP]
PAIRS = [(0, 1), (1, 2), (3, 0)]


def mixed_case(shape, device, dtype):
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    w = torch.rand(1, len(PRIMS), device=device, dtype=dtype, requires_grad=True)
    fused = lambda: mixed_node([x], w, PRIMS)[0]  # noqa: E731
    eager = lambda: ref.mixed_node([x], w, PRIMS)  # noqa: E731
    n = x.numel() * x.element_size()
    # forward: read x, write out; backward: read x and grad_out, write grad x
    return dict(leaves=[x, w], fused=fused, eager=eager, fwd_bytes=2 * n, both_bytes=5 * n)


def pair_case(shape, device, dtype):
    states = [torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(4)]
    w = torch.rand(len(PAIRS), device=device, dtype=dtype, requires_grad=True)
    fused = lambda: pair_concat(states, w, PAIRS)  # noqa: E731
    eager = lambda: ref.pair_concat(states, w, PAIRS)  # noqa: E731
    n = states[0].numel() * states[0].element_size()
    # forward: read 4 states, write 2; backward: read 4 states and grad (2), write 4 state grads
    return dict(leaves=states + [w], fused=fused, eager=eager, fwd_bytes=6 * n, both_bytes=16 * n)


def copy_tbs(shape, device, dtype, reps):
    """What a device-to-device copy of one such tensor attains (bytes read + written per second)."""
    src = torch.randn(shape, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, reps)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e12


def peak(device, copy):
    """(bandwidth the bar is a fraction of, its name): the card's nominal figure, else the copy's."""
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else ""
    for card, tbs in NOMINAL_TBS:
        if card in name:
            return tbs, f"{card} nominal {tbs} TB/s"
    return copy, f"no nominal figure for {name or device}: the copy's {copy:.3g} TB/s"


def timings(fn, leaves, device, reps):
    fwd = median_ms(lambda: fn(), device, reps)
    with torch.no_grad():
        g = torch.ones_like(fn())

    def both():
        torch.autograd.grad(fn(), leaves, g)

    return {"fwd_ms": fwd, "both_ms": median_ms(both, device, reps)}


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--small", action="store_true", help=f"shape {SMALL} instead of {BIG} (a dry run)")
    args = ap.parse_args(argv)
    if not hdas_ext.native_available():
        sys.exit("native ops not built: nothing to measure")
    dtype = getattr(torch, args.dtype)
    reps = args.reps or (20 if args.device.startswith("cuda") else 3)
    shape = SMALL if args.small else BIG
    copy = copy_tbs(shape, args.device, dtype, reps)
    peak_tbs, peak_name = peak(args.device, copy)
    print(f"machine: {machine(args.device)}; dtype {args.dtype}; shape {shape}; "
          f"device-to-device copy {copy:.3g} TB/s", flush=True)
    print(f"bars: bandwidth >= {BARS['bandwidth']:.0%} of {peak_name}, >= {BARS['x_eager']}x eager, "
          f">= {BARS['x_compile']}x torch.compile (forward + backward)", flush=True)
    rows = []
    for name, make in (("mixed_node", mixed_case), ("pair_concat", pair_case)):
        case = make(shape, args.device, dtype)
        row = {"op": name, "shape": list(shape)}
        for variant in ("fused", "eager", "compile"):
            if variant == "compile" and args.compile == "off":
                continue
            fn = case[variant] if variant != "compile" else torch.compile(case["eager"])
            t0 = time.perf_counter()
            row[variant] = timings(fn, case["leaves"], args.device, reps)
            print(f"{name} {variant}: fwd {row[variant]['fwd_ms']:.3f} ms, fwd+bwd {row[variant]['both_ms']:.3f} ms "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        f, verdicts = row["fused"], []
        for what in ("fwd", "both"):
            tbs = case[f"{what}_bytes"] / (f[f"{what}_ms"] * 1e-3) / 1e12
            row[f"{what}_tbs"] = tbs
            verdicts.append((f"{name} {what} bandwidth",
                             f"{tbs:.2f} TB/s = {tbs / peak_tbs:.0%} of peak, {tbs / copy:.0%} of the copy's",
                             tbs / peak_tbs >= BARS["bandwidth"]))
        for other in ("eager", "compile"):
            if other in row:
                x = row[other]["both_ms"] / f["both_ms"]
                verdicts.append((f"{name} fwd+bwd vs {other}", f"{x:.2f}x", x >= BARS[f"x_{other}"]))
        for what, value, ok in verdicts:  # per op: a run stopped at its cap keeps the finished verdicts
            print(f"  {'PASS' if ok else 'FAIL'}  {what}: {value}", flush=True)
        rows.append(row)
        write_json(args.json, {"machine": machine(args.device), "dtype": args.dtype, "peak_tbs": peak_tbs,
                               "copy_tbs": copy, "rows": rows})


if __name__ == "__main__":
    main()
