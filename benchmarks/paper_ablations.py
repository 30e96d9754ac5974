"""The paper's search ablations at CPU scale on the embedded digits data, several seeds each, one
intra-op thread (runs are bit-identical at a fixed thread count only): Table 4 (window m = 7, 4, 3
with 6 cells per stage), Table 5 (delta in {0, 0.33, 1, 1.5}) and a gamma sweep of the
distribution search (the paper's Figs. 10/11 sweep gamma; its values are not ours to copy, the
default list is our choice). Prints one markdown table per experiment: the derived architecture
of the last epoch (average longest chain of cells, live cells, dead cells) and the supernet's
arch-half top-1, mean and spread (min-max) over the seeds.

    python benchmarks/paper_ablations.py                        # all, seeds 2 3 4 (about 2 CPU-min a run)
    python benchmarks/paper_ablations.py --experiments table5 --seeds 2,3,4
    python benchmarks/paper_ablations.py --experiments table5 --loss-mode literal-one-input
    python benchmarks/paper_ablations.py --dry-run              # the commands only

Runs go to --out/<experiment>-<setting>-s<seed>; a finished run is read back, not rerun, an
interrupted one resumed from its checkpoint. The GPU-days commands are in docs/reproduction.md."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

import torch

# The depth ablation of docs/reproduction.md: small supernet, short run, arch lr 3e-3.
CPU_SCALE = ["--init-channels", "4", "--batch-size", "32", "--epochs", "8", "--steps-per-epoch", "12",
             "--arch-lr", "3e-3", "--threads", "1", "--no-progress", "--no-tensorboard", "--no-plot"]
QUICK = ["--init-channels", "4", "--batch-size", "8", "--epochs", "1", "--steps-per-epoch", "2",
         "--eval-batches", "1", "--arch-lr", "3e-3", "--threads", "1", "--no-progress", "--no-tensorboard",
         "--no-plot"]

EXPERIMENTS = {
    # name: (space, [(setting label, extra args)], what the paper reports)
    "table4": ("hs", [(f"m={m}", ["--cells-per-stage", "6", "--window", str(m)]) for m in (7, 4, 3)],
               "Table 4: window m = 7 (none), 4, 3 with 6 cells per stage"),
    "table5": ("hs", [(f"delta={d}", ["--cells-per-stage", "4", "--delta", d]) for d in ("0", "0.33", "1", "1.5")],
               "Table 5: delta in {0, 0.33, 1, 1.5} (the paper: 1 best, 2.34 %)"),
    "gamma": ("distribution", [(f"gamma={g}", ["--gamma", g]) for g in ("0", "0.2", "0.4", "1")],
              "gamma sweep of the distribution search (values: our choice; 0.4 is the released code's)"),
}


def run_dir(out, exp, label, seed):
    return os.path.join(out, f"{exp}-{label.replace('=', '')}-s{seed}")


def command(space, extra, seed, folder, quick):
    return [sys.executable, "-m", "hdas_ext.cli", "search", space, *(QUICK if quick else CPU_SCALE), *extra,
            "--seed", str(seed), "--output", folder]


def last_epoch(folder):
    path = os.path.join(folder, "log.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rows = [r for r in map(json.loads, f) if r.get("event") == "epoch"]
    return rows[-1] if rows else None


def finished(folder, epochs):
    r = last_epoch(folder)
    return r is not None and r["epoch"] == epochs and os.path.isfile(os.path.join(folder, "genotype_last.json"))


def spread(xs, fmt):
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def torch_threads(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f).get("torch_threads")


def summarise(exp, settings, seeds, out):
    lines = ["| setting | seeds | avg depth | live cells (3 stages) | dead cells | arch-half top-1 % | threads |",
             "|---|---|---|---|---|---|---|"]
    for label, _ in settings:
        rows = [last_epoch(run_dir(out, exp, label, s)) for s in seeds]
        rows = [r for r in rows if r is not None]
        if not rows:
            continue
        threads = {torch_threads(run_dir(out, exp, label, s)) for s in seeds}
        a = [r["analysis"] for r in rows]
        lines.append(f"| {label} | {len(rows)} | {spread([x['avg_depth'] for x in a], '{:.2f}')} | "
                     f"{spread([sum(st['live_cells'] for st in x['stages']) for x in a], '{:.1f}')} | "
                     f"{spread([x['num_dead_cells'] for x in a], '{:.1f}')} | "
                     f"{spread([r['eval_acc'] for r in rows], '{:.1f}')} | {','.join(map(str, sorted(threads)))} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiments", default="table4,table5,gamma")
    p.add_argument("--seeds", default="2,3,4")
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--quick", action="store_true", help="1 epoch of 2 steps (checks the script, not the paper)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--loss-mode", default=None, help="the searches' --loss-mode (default: theirs, literal); "
                                                     "the runs go to --out/<mode>/")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.experiments.split(",")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"--experiments: unknown {unknown}; known: {sorted(EXPERIMENTS)}")
    epochs = 1 if args.quick else 8
    if args.loss_mode:
        args.out = os.path.join(args.out, args.loss_mode)
    for exp in names:
        space, settings, _ = EXPERIMENTS[exp]
        for label, extra in settings:
            for seed in seeds:
                folder = run_dir(args.out, exp, label, seed)
                mode = ["--loss-mode", args.loss_mode] if args.loss_mode else []
                cmd = command(space, extra + mode, seed, folder, args.quick)
                if args.dry_run:
                    print(" ".join(cmd[1:]) if cmd[0] == sys.executable else " ".join(cmd))
                    continue
                if finished(folder, epochs):
                    continue
                if os.path.isfile(os.path.join(folder, "checkpoint.pt")):  # an interrupted run goes on
                    cmd.append("--resume")
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    if args.dry_run:
        return 0
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()} CPU kernels); "
          f"{'quick check, not a result' if args.quick else 'CPU scale: C 4, batch 32, 8 epochs x 12 steps, digits'}\n")
    for exp in names:
        _, settings, what = EXPERIMENTS[exp]
        print(f"### {what}\n\n{summarise(exp, settings, seeds, args.out)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
