"""Fused MixedOp vs eager PyTorch (DARTS' MixedOp) vs torch.compile of the eager op, side by side.

    python benchmarks/bench_mixed_op.py                 # CPU, the DARTS shapes
    python benchmarks/bench_mixed_op.py --device cuda --json $OUT/mixed_op.json

Rows: DARTS search shapes (stride 1 and 2) for two primitive sets: the 4 parameter-free ones
(max/avg pool with BN, skip, none: H-DAS' stage-level set, where the kernel is the whole cost) and
the full 8 DARTS primitives. Columns: median ms of forward, backward and both; ratios vs eager and vs
compile; memory kept for backward (all devices) and peak extra memory (CUDA); achieved GB/s
against the ideal byte count (GPU)."""
import json
import sys
import time

import torch

from common import SavedBytes, cpu_memory, fmt, machine, median_ms, parser, peak_extra_mb, write_json  # noqa: E402

import hdas_ext  # noqa: E402
from hdas_ext.nn import FusedMixedOp  # noqa: E402
from hdas_ext.primitives import DARTS_PRIMITIVES, STAGE_PRIMITIVES  # noqa: E402
from hdas_ext.reference import MixedOp  # noqa: E402

SHAPES = [  # (N, C, H, W, stride)
    (64, 16, 32, 32, 1),
    (64, 32, 16, 16, 1),
    (64, 64, 8, 8, 1),
    (64, 16, 32, 32, 2),
    (64, 32, 16, 16, 2),
]
LARGE = (128, 64, 56, 56, 1)  # 103 MB in fp32: larger than the H200's 60 MB L2
SETS = {"free4": STAGE_PRIMITIVES, "darts8": DARTS_PRIMITIVES}


def build(shape, set_name, device, dtype):
    N, C, H, W, stride = shape
    prims = SETS[set_name]
    eager = MixedOp(C, stride, prims).to(device, dtype)
    fused = FusedMixedOp(C, stride, prims).to(device, dtype)
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(N, C, H, W, device=device, dtype=dtype, requires_grad=True)
    w = torch.softmax(torch.randn(len(prims), device=device), 0).to(dtype).requires_grad_()
    g = torch.ones(N, C, (H - 1) // stride + 1, (W - 1) // stride + 1, device=device, dtype=dtype)
    return {"eager": eager, "fused": fused}, x, w, g


def memory_case(spec):
    variants, x, w, g = build(tuple(spec["shape"]), spec["set"], "cpu", getattr(torch, spec["dtype"]))
    result = {}
    for name, mod in variants.items():
        mod(x, w).backward(g)  # warm-up
        result[name] = peak_extra_mb(lambda: mod(x, w).backward(g), "cpu")
    print(json.dumps(result))


def run_case(shape, set_name, device, dtype, reps, compile_mode):
    N, C, H, W, stride = shape
    prims = SETS[set_name]
    variants, x, w, g = build(shape, set_name, device, dtype)
    eager = variants["eager"]
    compile_s = None
    if compile_mode != "off":
        torch._dynamo.reset()
        variants["compile"] = torch.compile(eager, mode=None if compile_mode == "default" else compile_mode)
        t0 = time.perf_counter()
        variants["compile"](x, w).sum().backward()
        compile_s = time.perf_counter() - t0
    row = {"shape": list(shape), "set": set_name, "compile_s": compile_s}
    for name, mod in variants.items():
        fwd = median_ms(lambda: mod(x, w), device, reps)

        def make_graph():
            return mod(x, w)

        bwd = median_ms(lambda out: out.backward(g), device, reps, setup=make_graph)
        both = median_ms(lambda: mod(x, w).backward(g), device, reps)
        with SavedBytes() as saved:
            out = mod(x, w)
        del out
        peak = peak_extra_mb(lambda: mod(x, w).backward(g), device)
        row[name] = {"fwd_ms": fwd, "bwd_ms": bwd, "both_ms": both, "saved_mb": saved.mb, "peak_mb": peak}
    if device == "cpu":  # peak memory from a child process whose allocator returns freed memory
        spec = {"shape": list(shape), "set": set_name, "dtype": str(dtype).split(".")[-1]}
        for name, mb in cpu_memory(__file__, spec).items():
            row[name]["peak_mb"] = mb
    # Ideal bytes: read x (and the conv outputs) once, write out once; backward reads x, grad and
    # the conv outputs, writes grad x and the conv grads.
    el = torch.finfo(dtype).bits // 8
    n_in, n_out = N * C * H * W, N * C * ((H - 1) // stride + 1) * ((W - 1) // stride + 1)
    n_conv = sum(1 for p in prims if p not in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")) + \
        (1 if stride == 2 and "skip_connect" in prims else 0)
    row["ideal_fwd_bytes"] = el * (n_in + n_out * (1 + n_conv))
    row["ideal_bwd_bytes"] = el * (2 * n_in + n_out * (1 + 2 * n_conv))
    return row


def table(rows, device):
    lines = ["| prims | shape (N,C,H,W,s) | eager fwd/bwd/both ms | compile fwd/bwd/both ms | fused fwd/bwd/both ms "
             "| both: x eager | both: x compile | saved MB eager/compile/fused | peak MB eager/fused | fused GB/s fwd/bwd |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, f, c = r["eager"], r["fused"], r.get("compile")
        trip = lambda d: f"{d['fwd_ms']:.2f} / {d['bwd_ms']:.2f} / {d['both_ms']:.2f}" if d else "-"  # noqa: E731
        gbs = "-"
        if device.startswith("cuda"):
            gbs = f"{r['ideal_fwd_bytes'] / f['fwd_ms'] / 1e6:.0f} / {r['ideal_bwd_bytes'] / f['bwd_ms'] / 1e6:.0f}"
        lines.append(
            f"| {r['set']} | {tuple(r['shape'])} | {trip(e)} | {trip(c)} | {trip(f)} | {e['both_ms'] / f['both_ms']:.2f} "
            f"| {fmt(c['both_ms'] / f['both_ms'] if c else None)} | {e['saved_mb']:.1f} / {fmt(c['saved_mb'] if c else None, '.1f')} / "
            f"{f['saved_mb']:.1f} | {fmt(e['peak_mb'], '.1f')} / {fmt(f['peak_mb'], '.1f')} | {gbs} |")
    return "\n".join(lines)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--sets", default="free4,darts8")
    ap.add_argument("--large", action="store_true", help=f"add the large shape {LARGE}")
    args = ap.parse_args(argv)
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    if not hdas_ext.native_available():
        sys.exit("native ops not built: nothing to benchmark")
    dtype = getattr(torch, args.dtype)
    reps = args.reps or (50 if args.device.startswith("cuda") else 7)
    shapes = SHAPES[:1] if args.only_first else SHAPES + ([LARGE] if args.large else [])
    print(f"machine: {machine(args.device)}; dtype {args.dtype}; compile mode {args.compile}", flush=True)
    rows = []
    for set_name in args.sets.split(","):
        for shape in shapes:
            rows.append(run_case(shape, set_name, args.device, dtype, reps, args.compile))
            print(table(rows[-1:], args.device).splitlines()[-1], flush=True)
            # after every row: a run stopped at its time cap keeps the rows it finished
            write_json(args.json, {"machine": machine(args.device), "dtype": args.dtype, "rows": rows})
    print()
    print(table(rows, args.device))


if __name__ == "__main__":
    main()
