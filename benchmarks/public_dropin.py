"""hdas_ext.fuse_mixed_ops on the search networks of public DARTS-family code, from local checkouts
(nothing of them is copied into this repository): per network, the mixed ops found, fused and left
alone (with the reason) in the default and the lean (recompute=True) mode; the float64 error of the
fused network against the unfused one, and its float32 error beside eager's own float32 error (both
against the float64 truth) over training steps and the codebase's own state changes; whether the
codebase's methods (genotype(), new(), ...), the state-dict round trip and pickling still work after
fusing; training-step time and peak memory, fused against as written, in the same run.

    python benchmarks/public_dropin.py --public /work/public --markdown        # all nine, small sizes
    python benchmarks/public_dropin.py --darts /work/public/darts --sgas /work/public/sgas
    python benchmarks/public_dropin.py --public /work/public --batch 64 --size 32 --C 16 --layers 8 --markdown
    python benchmarks/public_dropin.py --render rows.json      # the table of a run made with --json rows.json

Each codebase runs in a process of its own (they import clashing bare module names), on CPU with their
.cuda() calls made no-ops and absent packages their imports name stubbed. A failure in one network
(fusing, a step, a comparison) becomes that row's note, never a crash of the run. See
public_codebases.py for what each codebase builds and which state changes it drives, and
public_lockstep.py for how networks are compared. Step time: min of --reps interleaved steps
(forward, loss, backward) after the first phase. Peak memory: a step's peak allocated memory above
what was allocated before it, gradients freed before it (CUDA: the caching allocator's counters;
CPU: the running total of the CPU allocator as torch's profiler records it)."""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's hdas_ext, not another installed one

from public_codebases import CODEBASES  # noqa: E402
from public_lockstep import MODES, STEPS, Lockstep, one_line, peak_mb, time_steps, train_step, trained  # noqa: E402


# ---- one codebase, in a child process -------------------------------------------------------------

def child(args):
    import public_codebases as pc
    if args.device == "cpu":
        pc.cpu_only()
    label, loader, _ = CODEBASES[args.child]
    try:
        variants = loader(args.path, args)
    except Exception as e:
        rows = [{"codebase": label, "variant": "-", "error": f"importing it raised {one_line(e)}"}]
    else:
        rows = [variant_row(label, v, args) for v in variants]
    for row in rows:
        row["stubbed"] = list(pc.STUBBED)
    with open(args.out, "w") as f:
        json.dump(rows, f)


def variant_row(label, v, args):
    row = {"codebase": label, "variant": v.name, "phases": [p[0] for p in v.phases], "ms": {}, "peak_mb": {}}
    ls = Lockstep(v, args)
    try:
        ls.build()
    except Exception as e:
        return dict(row, error=f"building it raised {one_line(e)}")
    row["edges"] = ls.sites

    def perf(ls):
        nets = {k: n for k, n in ls.alive().items() if k.endswith("32")}
        x, y = ls.inputs(32)
        try:
            row["ms"] = time_steps(v, nets, x, y, args.reps)
            row["peak_mb"] = peaks(v, {k: copy.deepcopy(n) for k, n in nets.items()}, x, y, args.device)
        except Exception as e:
            row["perf_error"] = one_line(e)
    try:
        ls.run(after_first_phase=perf)
    except Exception as e:
        row["error"] = one_line(e)
    eager = ls.trackers["eager32"]
    row["eager"] = {"err32": eager.error, "err32_where": eager.where, "err32_by_kind": eager.by_kind}
    row["modes"] = {mode: mode_summary(ls, mode, "error" not in row) for mode in MODES}
    row["methods_unfused"] = next((x.pop("methods_unfused") for x in row["modes"].values() if x.get("methods_unfused")), None)
    for x in row["modes"].values():
        x.pop("methods_unfused", None)
    return row


def mode_summary(ls, mode, ran):
    out = {}
    for bits in ("32", "64"):
        rep = ls.reports.get(mode + bits)
        if rep is None:
            continue
        left = [(getattr(e, "reason", str(e)), f"{getattr(e, 'path', '?')} ({getattr(e, 'kind', '?')}): "
                 f"{getattr(e, 'detail', '')}") for e in rep.left_alone]
        counts = {"fused": len(rep.fused), "partial": sum(getattr(f, "k", 1) > 1 for f in rep.fused),
                  "left_alone": {r: sum(1 for q, _ in left if q == r) for r, _ in left},
                  "examples": {r: ex[:300] for r, ex in reversed(left)}, "fuse_s": ls.fuse_s[mode + bits]}
        if bits == "32":
            out.update(counts)
        elif counts["fused"] != out.get("fused") or counts["left_alone"] != out.get("left_alone"):
            out["float64_fuse"] = counts  # fusing the float64 copy found something else
        key = mode + bits
        if key in ls.trackers and ran:
            out["err" + bits] = ls.trackers[key].error  # up to its failure, if it failed
            out["err" + bits + "_where"] = ls.trackers[key].where
            out["err" + bits + "_by_kind"] = ls.trackers[key].by_kind
            if bits == "32":
                out["ratio32"], out["ratio32_where"] = ls.trackers[key].ratio, ls.trackers[key].ratio_where
    out["failed"] = "; ".join(f"float{k[-2:]}: {ls.dead[k]}" for k in (mode + "64", mode + "32") if k in ls.dead) or None
    if ran and mode + "64" in ls.nets and mode + "64" not in ls.dead:
        out["methods"], out["methods_unfused"] = ls.check_methods(mode + "64")
    return out


def peaks(v, nets, x, y, device):
    """Peak memory of a step of each network, its gradients freed before (the profiler cannot
    count frees of memory allocated before it started)."""
    out = {}
    for k, net in nets.items():
        train_step(v, net, x, y, seed=0)  # a warm-up
        for t in trained(v, net).values():
            t.grad = None
        out[k] = peak_mb(lambda: train_step(v, net, x, y, seed=0), device)
    return out


# ---- the run --------------------------------------------------------------------------------------

SIZES = ("batch", "size", "C", "layers", "N", "reps", "device", "threads")


def run_child(key, path, args):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", key, "--path", path, "--out", out]
        cmd += [a for s in SIZES for a in (f"--{s}", str(getattr(args, s)))]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            return [{"codebase": CODEBASES[key][0], "variant": "-", "error": f"no result within {args.timeout} s"}]
        if os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [{"codebase": CODEBASES[key][0], "variant": "-", "error": f"its process exited {res.returncode}: {last[:200]}"}]


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def errors(row, bits):
    return [row["modes"].get(m, {}).get(f"err{bits}") for m in MODES]


def progress(row):
    if "modes" not in row:
        return f"{row['codebase']}: {row['variant']}: {row.get('error')}"
    d, lean = (row["modes"][m] for m in MODES)
    e64, e32 = errors(row, 64), errors(row, 32)
    ms, mb = row.get("ms", {}), row.get("peak_mb", {})
    line = (f"{row['codebase']}: {row['variant']}: {row.get('edges')} edges; fused {d.get('fused')} (lean {lean.get('fused')}), "
            f"left alone {sum(d.get('left_alone', {}).values())} (lean {sum(lean.get('left_alone', {}).values())}); "
            f"float64 error {fmt(e64[0], '.1e')} / {fmt(e64[1], '.1e')}; float32 eager {fmt(row['eager']['err32'], '.1e')}, "
            f"fused {fmt(e32[0], '.1e')} / {fmt(e32[1], '.1e')} (worst tensor against eager's: "
            f"{fmt(d.get('ratio32'), '.1f')}x / {fmt(lean.get('ratio32'), '.1f')}x); fusing s {fmt(d.get('fuse_s'), '.1f')} / "
            f"{fmt(lean.get('fuse_s'), '.1f')}; step ms "
            + " / ".join(fmt(ms.get(k), ".1f") for k in ("eager32", "default32", "lean32"))
            + "; peak MB " + " / ".join(fmt(mb.get(k), ".1f") for k in ("eager32", "default32", "lean32")))
    problems = [f"{m}: {row['modes'][m]['failed']}" for m in MODES if row["modes"][m].get("failed")]
    problems += [f"{m} methods: {row['modes'][m]['methods']}" for m in MODES if row["modes"][m].get("methods", "ok") != "ok"]
    problems += [f"unfused too: {row['methods_unfused']}"] if row.get("methods_unfused") else []
    problems += [f"error: {row['error']}"] if row.get("error") else []
    return line + "".join("\n    " + p for p in problems)


def markdown(rows, head):
    """The table of docs/drop-in.md: one row per network; failures and reasons as numbered notes.
    An error is n/a where that mode fused nothing (the network ran as written). 'worst tensor':
    the largest ratio of the fused network's float32 error on one tensor in one step to eager's
    on the same tensor in the same step, both relative to the tensor's norm (eager's below 1e-5
    counted as 1e-5; see public_lockstep.py)."""
    print(f"\n{head}\n")
    print("| code | network | edges | found | fused: default / lean | left alone: default / lean | float64 error: default / lean "
          "| float32 error: eager / default / lean | float32 vs eager, worst tensor: default / lean | fusing s: default / lean | step ms: as written / default / lean "
          "| peak MB: as written / default / lean | methods after fusing |\n|" + "---|" * 13)
    notes = []

    def note(text):
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"
    for r in rows:
        if "modes" not in r:
            print(f"| {r['codebase']} | {r['variant']} |" + " |" * 10 + f" {note(r['error'])} |")
            continue
        m = [r["modes"][k] for k in MODES]
        found = m[0].get("fused", 0) + sum(m[0].get("left_alone", {}).values()) if "fused" in m[0] else "-"
        cells = [str(found), " / ".join(str(x.get("fused", "-")) for x in m)
                 + (" (partial channels)" if any(x.get("partial") for x in m) else "")]
        left = []
        for x in m:
            n = sum(x.get("left_alone", {}).values())
            left.append(str(n) + ("" if not n else " " + note(f"{r['codebase']}: " + "; ".join(
                f"{c} x {reason} (e.g. {x['examples'][reason]})" for reason, c in x["left_alone"].items()))))
        cells.append(" / ".join(left))
        for bits in (64, 32):
            es = [] if bits == 64 else [fmt(r["eager"]["err32"], ".1e")]
            es += [fmt(e, ".1e") if x.get("fused") else "n/a" for e, x in zip(errors(r, bits), m)]
            text = " / ".join(es)
            fails = [f"{mode}: {x['failed']}" for mode, x in zip(MODES, m) if x.get("failed")]
            cells.append(text + (" then fails " + note(f"{r['codebase']}: " + "; ".join(fails)) if fails and bits == 64 else ""))
        cells.append(" / ".join(f"{x['ratio32']:.1f}x" if x.get("fused") and x.get("ratio32") is not None else "n/a"
                                for x in m))
        cells.append(" / ".join(fmt(x.get("fuse_s"), ".1f") for x in m))
        for what in ("ms", "peak_mb"):
            cells.append(" / ".join(fmt(r.get(what, {}).get(k), ".1f") for k in ("eager32", "default32", "lean32")))
        bad = {}
        for mode, x in zip(MODES, m):
            if x.get("methods", "ok") != "ok":
                bad.setdefault(x["methods"], []).append(mode)
        meth = [f"{' and '.join(modes)}: {text}" for text, modes in bad.items()]
        cells.append(("ok" if all(x.get("methods") == "ok" for x in m) else "-")
                     if not meth else note(f"{r['codebase']}: " + "; ".join(meth)))
        if r.get("methods_unfused"):
            cells[-1] += " " + note(f"{r['codebase']}, not counted: {r['methods_unfused']}")
        if r.get("error"):
            cells[-1] += " " + note(f"{r['codebase']}, {r['variant']}: {r['error']}")
        print(f"| {r['codebase']} | {r['variant']} | {r.get('edges', '-')} | " + " | ".join(cells) + " |")
    print()
    for i, text in enumerate(notes, 1):
        print(f"{i}. {text}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, (label, _, folder) in CODEBASES.items():
        p.add_argument(f"--{key}", metavar="PATH", help=f"checkout of {label} (under --public: {folder})")
    p.add_argument("--public", metavar="DIR", help="a folder holding the checkouts under their usual names")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=16, help="image size (px)")
    p.add_argument("--C", type=int, default=8, help="initial channels")
    p.add_argument("--layers", type=int, default=5, help="cells (DARTS-style networks)")
    p.add_argument("--N", type=int, default=1, help="cells per stage (AutoDL-Projects)")
    p.add_argument("--reps", type=int, default=3, help="timed steps per network")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per codebase")
    p.add_argument("--markdown", action="store_true", help="end with the table for docs/drop-in.md")
    p.add_argument("--json", metavar="PATH")
    for hidden in ("--child", "--path", "--out"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--render", metavar="JSON", help="print the table of an earlier run's --json and exit")
    args = p.parse_args()
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        return markdown(saved["rows"], saved["machine"])
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    from common import machine, write_json
    import hdas_ext
    head = (f"{machine(args.device)}; hdas_ext {hdas_ext.__version__} from {os.path.dirname(hdas_ext.__file__)}; "
            f"batch {args.batch}, {args.size}px, C={args.C}, {args.layers} cells (AutoDL: N={args.N}); "
            f"{STEPS} training steps per phase")
    print(head, flush=True)
    rows = []
    for key, (label, _, folder) in CODEBASES.items():
        path = getattr(args, key) or (os.path.join(args.public, folder) if args.public else None)
        if not path or not os.path.isdir(path):
            why = f"skipped: {'no --' + key + ' given' if not path else path + ' is not a folder'}"
            got = [{"codebase": label, "variant": "-", "error": why}]
        else:
            got = run_child(key, path, args)
        for r in got:
            print(progress(r), flush=True)
        rows += got
        write_json(args.json, {"machine": head, "settings": {s: getattr(args, s) for s in SIZES}, "rows": rows})
    if args.markdown:
        markdown(rows, head)


if __name__ == "__main__":
    main()
