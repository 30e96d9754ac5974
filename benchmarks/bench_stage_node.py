"""Fused Hs-DAS stage aggregation vs eager PyTorch vs torch.compile of the eager modules.

    python benchmarks/bench_stage_node.py
    python benchmarks/bench_stage_node.py --device cuda --json $OUT/stage_node.json

Rows: an Hs-DAS node (window m inputs, the 4 stage primitives, pool BN per edge) on the CIFAR
search shapes (64 x 4C x 32 x 32 with C = 16, then the 16x16 and 8x8 stages), and the distribution
search's beta-weighted pair concat over 5 candidate pairs of a 10-state stage."""
import json
import sys
import time

import torch

from common import cpu_memory, fmt, machine, median_ms, parser, peak_extra_mb, write_json  # noqa: E402

import hdas_ext  # noqa: E402
from hdas_ext.nn import FusedWindowedCellInput, WeightedPairConcat  # noqa: E402
from hdas_ext.primitives import STAGE_PRIMITIVES  # noqa: E402
from hdas_ext.reference import WindowedCellInput  # noqa: E402
from hdas_ext.reference import WeightedPairConcat as EagerPairConcat  # noqa: E402

NODES = [(3, 64, 64, 32, 32), (2, 64, 64, 32, 32), (3, 64, 128, 16, 16), (3, 64, 256, 8, 8)]  # (m, N, W, H, W)
PAIRS = [(64, 64, 32, 32), (64, 256, 8, 8)]


def leaves_of(args):
    flat = [t for a in args for t in (a if isinstance(a, list) else [a])]
    return [t for t in flat if isinstance(t, torch.Tensor) and t.requires_grad]


def measure(variants, make_inputs, device, reps):
    row = {}
    for name, fn in variants.items():
        args = make_inputs()
        leaves = leaves_of(args)
        g = torch.ones_like(fn(*args))
        fwd = median_ms(lambda: fn(*args), device, reps)
        bwd = median_ms(lambda o: torch.autograd.grad(o, leaves, g, allow_unused=True), device, reps, setup=lambda: fn(*args))
        both = median_ms(lambda: torch.autograd.grad(fn(*args), leaves, g, allow_unused=True), device, reps)
        peak = peak_extra_mb(lambda: torch.autograd.grad(fn(*args), leaves, g, allow_unused=True), device)
        row[name] = {"fwd_ms": fwd, "bwd_ms": bwd, "both_ms": both, "peak_mb": peak}
    return row


def build_node(case, device, dtype):
    m, N, C, H, W = case
    eager = WindowedCellInput(C, m, STAGE_PRIMITIVES).to(device, dtype)
    fused = FusedWindowedCellInput(C, m, STAGE_PRIMITIVES).to(device, dtype)
    fused.load_state_dict(eager.state_dict())

    def make_inputs():
        xs = [torch.randn(N, C, H, W, device=device, dtype=dtype, requires_grad=True) for _ in range(m)]
        return xs, torch.softmax(torch.randn(m, 4, device=device), -1).to(dtype).requires_grad_()

    return {"eager": eager, "fused": fused}, make_inputs, f"node m={m}", [N, C, H, W]


def build_pairs(case, device, dtype, n_states=10, n_pairs=5):
    N, C, H, W = case
    pairs = [(k + 4, k + 5) for k in range(n_pairs)]

    def make_inputs():
        states = [torch.randn(N, C, H, W, device=device, dtype=dtype, requires_grad=True) for _ in range(n_states)]
        return states, torch.softmax(torch.randn(n_pairs, device=device), 0).to(dtype).requires_grad_(), pairs

    return {"eager": EagerPairConcat(), "fused": WeightedPairConcat()}, make_inputs, f"pair concat K={n_pairs}", [N, C, H, W]


BUILDERS = {"node": build_node, "pairs": build_pairs}


def run_row(kind, case, device, dtype, reps, compile_mode):
    variants, make_inputs, label, shape = BUILDERS[kind](case, device, dtype)
    compile_s = None
    if compile_mode != "off":
        torch._dynamo.reset()
        variants["compile"] = torch.compile(variants["eager"], mode=None if compile_mode == "default" else compile_mode)
        t0 = time.perf_counter()
        variants["compile"](*make_inputs()).sum().backward()
        compile_s = time.perf_counter() - t0
    row = measure(variants, make_inputs, device, reps)
    if device == "cpu":  # peak memory from a child process whose allocator returns freed memory
        for name, mb in cpu_memory(__file__, {"kind": kind, "case": list(case), "dtype": str(dtype)}).items():
            row[name]["peak_mb"] = mb
    row.update(kind=label, shape=shape, compile_s=compile_s)
    return row


def memory_case(spec):
    variants, make_inputs, _, _ = BUILDERS[spec["kind"]](tuple(spec["case"]), "cpu", getattr(torch, spec["dtype"].split(".")[-1]))
    result = {}
    for name, fn in variants.items():
        args = make_inputs()
        leaves = leaves_of(args)
        g = torch.ones_like(fn(*args))
        torch.autograd.grad(fn(*args), leaves, g, allow_unused=True)  # warm-up
        result[name] = peak_extra_mb(lambda: torch.autograd.grad(fn(*args), leaves, g, allow_unused=True), "cpu")
    print(json.dumps(result))


def table(rows):
    lines = ["| op | shape | eager fwd/bwd/both ms | compile fwd/bwd/both ms | fused fwd/bwd/both ms | both: x eager "
             "| both: x compile | peak extra MB eager/compile/fused | compile s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, f, c = r["eager"], r["fused"], r.get("compile")
        trip = lambda d: f"{d['fwd_ms']:.2f} / {d['bwd_ms']:.2f} / {d['both_ms']:.2f}" if d else "-"  # noqa: E731
        lines.append(f"| {r['kind']} | {tuple(r['shape'])} | {trip(e)} | {trip(c)} | {trip(f)} | "
                     f"{e['both_ms'] / f['both_ms']:.2f} | {fmt(c['both_ms'] / f['both_ms'] if c else None)} | "
                     f"{fmt(e['peak_mb'], '.1f')} / {fmt(c['peak_mb'] if c else None, '.1f')} / {fmt(f['peak_mb'], '.1f')} | "
                     f"{fmt(r['compile_s'], '.1f')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = parser(__doc__)
    args = ap.parse_args(argv)
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    if not hdas_ext.native_available():
        sys.exit("native ops not built: nothing to benchmark")
    dtype = getattr(torch, args.dtype)
    reps = args.reps or (50 if args.device.startswith("cuda") else 5)
    print(f"machine: {machine(args.device)}; dtype {args.dtype}; compile mode {args.compile}", flush=True)
    rows = []
    for kind, cases in (("node", NODES), ("pairs", PAIRS)):
        for case in cases[:1] if args.only_first else cases:
            rows.append(run_row(kind, case, args.device, dtype, reps, args.compile))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            # after every row: a run stopped at its time cap keeps the rows it finished
            write_json(args.json, {"machine": machine(args.device), "dtype": args.dtype, "rows": rows})
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
