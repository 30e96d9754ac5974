"""fuse_mixed_ops on the DARTS-family stand-in search networks (python_tests/dropin_standins.py):
training-step time and peak memory, each network as its authors wrote it against the same network
after hdas_ext.fuse_mixed_ops; and the partial-channel cell search (k = 4, edge normalisation)
fused against its eager form.

    python benchmarks/bench_dropin.py --markdown            # CPU, batch 16 and 64, the full networks
    python benchmarks/bench_dropin.py --batches 2 --layers 3 --reps 1 --cases darts   # a quick check

--markdown ends with the table for benchmarks/RESULTS.md (one row per network and batch).

float64 error: the largest difference, fused against unfused, of the logits and every gradient of a
small float64 copy of each network (C=8, 3 cells, batch 4, 16 px). A step is forward, cross-entropy and backward into every weight and architecture parameter
(median of --reps after a warm-up). Peak memory: the step's peak above the memory held before it,
measured in a child process whose freed tensors go back to the OS (CPU) or by the CUDA allocator.
Guards (with the darts case): the fused MixedOps' guard checks, the step with them against the step
with them skipped, and one check timed alone, as a share of the step. Refusals: fuse_mixed_ops on
the DARTS stand-in network built of MixedOps it must leave alone (a mean instead of a sum; a
threshold on the weights' values), seconds per distinct MixedOp structure (refusals are proven once
per structure), and the slowest structure refused alone."""
import copy
import json
import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python_tests"))
import dropin_standins as S  # noqa: E402
import dropin_stateful as D  # noqa: E402
from common import cpu_memory, fmt, machine, median_ms, peak_extra_mb, write_json  # noqa: E402

import hdas_ext  # noqa: E402
from hdas_ext.nn import FusedMixedOp  # noqa: E402
from hdas_ext.supernets import DartsCellSearch  # noqa: E402

SUBSETS = ([1, 0, 1, 1, 0, 1, 0, 0], [0, 1, 0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0, 1, 1])
CASES = {  # name: (MixedOp class, SearchNetwork keywords)
    "darts": (S.MixedOp, {}),
    "two_halves_sep_conv": (S.HalvesMixedOp, {}),
    "other_name_subsets": (S.SubsetMixedOp, dict(num_ops=4, edge_kwargs=lambda i, j: {"switches": SUBSETS[(i + j) % 3]})),
    "skip_then_dropout": (S.SubsetMixedOp, dict(edge_kwargs=lambda i, j: {"p": 0.3})),
    "bare_pools": (S.BarePoolMixedOp, {}),
    "sigmoid_weights": (S.MixedOp, dict(weight_fn="sigmoid")),
    "partial_k4_edge_norm": (S.PartialMixedOp, dict(edge_norm=True)),
    "cell_search_partial_k4": None,  # hdas_ext's own DartsCellSearch(partial_channels=4, edge_normalization=True)
}


def build(case, variant, C, layers, device):
    """The network of `case`: 'unfused' as written, 'fused' after fuse_mixed_ops (for the cell
    search: fused=False against fused=True)."""
    torch.manual_seed(0)
    if CASES[case] is None:
        return DartsCellSearch(C, 10, layers, fused=variant == "fused", partial_channels=4,
                               edge_normalization=True).to(device)
    mixed, kw = CASES[case]
    net = S.SearchNetwork(mixed, C=C, layers=layers, **kw).to(device)
    if variant == "fused":
        net = copy.deepcopy(net)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hdas_ext.fuse_mixed_ops(net)
    return net


def fused_count(net):
    """How many MixedOps of net run the fused op (of how many MixedOps it has)."""
    return sum(isinstance(m, FusedMixedOp) for m in net.modules())


def make_step(net, batch, size, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
    return step


def float64_error(case, C=8, layers=3, batch=4, size=16):
    """Largest |fused - unfused| over the logits and every gradient (weights and architecture
    parameters), float64, training mode, on a small network: the proof fuse_mixed_ops gives, seen
    from outside on a whole network."""
    torch.set_default_dtype(torch.float64)
    try:
        nets = [build(case, v, C, layers, "cpu") for v in ("unfused", "fused")]
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
        outs, grads = [], []
        for net in nets:
            torch.manual_seed(3)  # the same dropout masks in both
            out = net(x)
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys(), "fusing changed which parameters get gradients"
        diffs = [(outs[0] - outs[1]).abs().max()] + [(grads[0][n] - grads[1][n]).abs().max() for n in grads[0]]
        return max(d.item() for d in diffs)
    finally:
        torch.set_default_dtype(torch.float32)


def guard_cost(args, batch):
    """What the guards of the fused MixedOps (hdas_ext.dropin.guards) cost per training step of the
    fused DARTS stand-in: the step timed with the guards checked and with them skipped (the fused
    forward run unconditionally), interleaved, fastest of --reps each; and one check timed alone
    (microseconds per call, times the MixedOp calls of a step, against the guarded step)."""
    from hdas_ext.dropin import adopt
    net = build("darts", "fused", args.init_channels, args.layers, args.device)
    step = make_step(net, batch, args.image_size, args.device)
    admit, times = adopt._admit, {"guarded": [], "skipped": []}
    try:
        for _ in range(max(args.reps, 1) + 1):
            for label, fn in (("guarded", admit), ("skipped", lambda module, a, kw: None)):
                adopt._admit = fn  # the adopted forwards look it up at each call
                times[label].append(median_ms(step, args.device, 1, warmup=0))
    finally:
        adopt._admit = admit
    ops = [m for m in net.modules() if isinstance(m, FusedMixedOp)]
    x = torch.randn(batch, ops[0]._guard.channels, 8, 8, device=args.device)
    w = torch.softmax(torch.randn(8, device=args.device), 0)
    calls = 2000
    t0 = time.perf_counter()
    for _ in range(calls):
        admit(ops[0], (x, w), {})
    per_call_us = (time.perf_counter() - t0) / calls * 1e6
    guarded, skipped = min(times["guarded"][1:]), min(times["skipped"][1:])
    return {"batch": batch, "guarded_ms": guarded, "skipped_ms": skipped, "step_ratio": guarded / skipped,
            "per_call_us": per_call_us, "calls_per_step": len(ops),
            "share_of_step": per_call_us * len(ops) / 1e3 / guarded}


REFUSED = {"threshold on the weights": D.ThresholdMixedOp}


def refusal_cost(args):
    """Seconds fuse_mixed_ops takes to leave alone every MixedOp of the stand-in network built of
    MixedOps it must refuse, per distinct structure (fastest of --reps calls, at least one), and the
    slowest structure refused alone (one module of it in a container)."""
    from hdas_ext.lean.trace import structure_key
    rows = []
    for label, mixed in REFUSED.items():
        torch.manual_seed(0)
        net = S.SearchNetwork(mixed, C=args.init_channels, layers=args.layers).to(args.device)
        firsts = {}
        for m in net.modules():
            if isinstance(m, mixed):
                firsts.setdefault(structure_key(m), m)
        assert None not in firsts, "a stand-in MixedOp without a structure key would be proven every time"

        def seconds(model):
            """(wall, CPU) seconds of the fastest call: fuse_mixed_ops runs on one thread, so its
            process CPU time is its own work even on a busy machine."""
            best = (float("inf"), float("inf"))
            for _ in range(max(args.reps, 1)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0, c0 = time.perf_counter(), time.process_time()
                    report = hdas_ext.fuse_mixed_ops(model, report=True)
                    best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
                assert not report.fused, f"{label}: fuse_mixed_ops fused a MixedOp it must leave alone"
            return best
        (whole, whole_cpu), n = seconds(net), sum(isinstance(m, mixed) for m in net.modules())
        alone = max((seconds(torch.nn.Sequential(m)) for m in firsts.values()), key=lambda t: t[1])
        rows.append({"refused": label, "mixed_ops": n, "structures": len(firsts), "network_s": whole,
                     "network_cpu_s": whole_cpu, "per_structure_s": whole / len(firsts),
                     "per_structure_cpu_s": whole_cpu / len(firsts), "slowest_structure_alone_s": alone[0],
                     "slowest_structure_alone_cpu_s": alone[1]})
        print(f"refusal ({label}): {n} MixedOps of {len(firsts)} structures left alone in {whole:.2f} s "
              f"({whole / len(firsts):.2f} s, CPU {whole_cpu / len(firsts):.2f} s per structure); slowest structure "
              f"alone {alone[0]:.2f} s (CPU {alone[1]:.2f} s)", flush=True)
    return rows


def memory_case(spec):
    net = build(spec["case"], spec["variant"], spec["C"], spec["layers"], "cpu")
    step = make_step(net, spec["batch"], spec["size"], "cpu")
    step()  # warm-up: gradients allocated once
    print(json.dumps({"peak_mb": peak_extra_mb(step, "cpu")}))


def run(args):
    rows, errors = [], {}
    for case in args.cases.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            if case not in errors:
                errors[case] = float64_error(case)
            row = {"case": case, "batch": batch, "float64_error": errors[case]}
            for variant in ("unfused", "fused"):
                net = build(case, variant, args.init_channels, args.layers, args.device)
                row[variant + "_fused_ops"] = fused_count(net)
                step = make_step(net, batch, args.image_size, args.device)
                row[variant + "_ms"] = median_ms(step, args.device, args.reps, warmup=1) if args.reps else None
                spec = dict(case=case, variant=variant, C=args.init_channels, layers=args.layers, batch=batch,
                            size=args.image_size)
                row[variant + "_peak_mb"] = (cpu_memory(__file__, spec).get("peak_mb") if args.device == "cpu"
                                             else peak_extra_mb(step, args.device))
                del net, step
            rows.append(row)
            print(f"{case:<24} batch {batch:>3}: step {fmt(row['unfused_ms'], '.0f')} -> {fmt(row['fused_ms'], '.0f')} ms"
                  f" ({fmt(ratio(row, 'ms'), '.2f')}x), peak {fmt(row['unfused_peak_mb'], '.0f')} -> "
                  f"{fmt(row['fused_peak_mb'], '.0f')} MB ({fmt(ratio(row, 'peak_mb'), '.2f')}x), "
                  f"float64 error {row['float64_error']:.1e}", flush=True)
    return rows


def ratio(row, what):
    a, b = row["unfused_" + what], row["fused_" + what]
    return None if a is None or not b else a / b


def markdown(rows):
    """The RESULTS.md table: unfused (the network as written; the cell search: fused=False) against
    fused, with the ratios unfused / fused."""
    print("| network | batch | MixedOps fused | float64 error | step unfused -> fused (ms) | time ratio "
          "| peak unfused -> fused (MB) | memory ratio |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['batch']} | {r['fused_fused_ops']} | {r['float64_error']:.1e} | "
              f"{fmt(r['unfused_ms'], '.0f')} -> "
              f"{fmt(r['fused_ms'], '.0f')} | {fmt(ratio(r, 'ms'), '.2f')}x | {fmt(r['unfused_peak_mb'], '.0f')} -> "
              f"{fmt(r['fused_peak_mb'], '.0f')} | {fmt(ratio(r, 'peak_mb'), '.2f')}x |")


def main():
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="16,64")
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=3, help="timed steps (0: peak memory only)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", action="store_true", help="end with the RESULTS.md table")
    p.add_argument("--refusals", action=argparse.BooleanOptionalAction, default=True,
                   help="time the refusals (seconds per distinct MixedOp structure left alone)")
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_case:
        return memory_case(json.loads(args.memory_case))
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; choose from {list(CASES)}")
    print(f"machine: {machine(args.device)}; C={args.init_channels}, {args.layers} cells, {args.image_size}px")
    rows = run(args)
    guards = guard_cost(args, int(args.batches.split(",")[0])) if "darts" in args.cases.split(",") else None
    if guards:
        print(f"guards (darts, batch {guards['batch']}): step {guards['guarded_ms']:.1f} ms guarded, "
              f"{guards['skipped_ms']:.1f} ms skipped ({guards['step_ratio']:.3f}x); one check "
              f"{guards['per_call_us']:.1f} us x {guards['calls_per_step']} MixedOp calls = "
              f"{100 * guards['share_of_step']:.2f} % of the guarded step")
    refusals = refusal_cost(args) if args.refusals else None
    if args.markdown:
        markdown(rows)
    write_json(args.json, {"machine": machine(args.device), "settings": vars(args), "rows": rows, "guards": guards,
                           "refusals": refusals})


if __name__ == "__main__":
    main()
