"""`hdas random-baseline`: train architectures sampled uniformly from the search space with the
same recipe as the searched one and report RI = 100 (Acc_searched - Acc_random) / Acc_random."""
import json

from ..runtime import is_main_process
from ..train.config import PRESETS, TrainConfig
from .options import add_config_options, config_values


def _cells_per_stage(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"--cells-per-stage must be three positive ints like 6,6,6, got {text!r}")
    return values


def register(subparsers):
    p = subparsers.add_parser(
        "random-baseline", help="train uniformly sampled architectures and report the relative improvement RI",
        description="Samples cells (--space cell), stage DAGs under the search window (--space stage) or "
                    "stages of the cell-distribution search (--space distribution: N_max-cell DAGs with a "
                    "length drawn in N_min..N_max) uniformly, trains each with the recipe (same options as "
                    "`hdas train`), trains the searched architecture (--cell/--stages) unless --searched-acc is given, and writes "
                    "OUTPUT/random_baseline.json. Rerunning continues unfinished runs.")
    p.add_argument("--preset", default="digits", choices=sorted(PRESETS))
    p.add_argument("--space", default="stage", choices=("cell", "stage", "distribution"))
    p.add_argument("--samples", type=int, default=8, help="number of random architectures (default 8)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture sampler")
    p.add_argument("--cells-per-stage", default=None,
                   help="stage spaces: cells per stage as 'a,b,c' (default: those of --stages, else 6,6,6; "
                        "for the distribution space, N_max)")
    p.add_argument("--window", type=int, default=3, help="stage spaces: sliding-window size (default 3)")
    p.add_argument("--n-min", type=int, default=4,
                   help="distribution space: fewest cells per stage (N_max: --cells-per-stage; default 4)")
    p.add_argument("--searched-acc", type=float, default=None,
                   help="accuracy (percent) of the searched architecture, to skip training it")
    p.add_argument("--metric", default="best", choices=("best", "last"),
                   help="accuracy compared: best test top-1 over epochs (as the papers) or the last")
    add_config_options(p, TrainConfig, skip=("resume",), preset=True)
    p.set_defaults(func=run)


def run(args):
    from ..train import make_config
    from ..train.random_baseline import run_random_baseline

    overrides = config_values(args, TrainConfig, skip=("resume",))
    overrides.setdefault("output", "runs/random_baseline")
    cfg = make_config(args.preset, **overrides)
    cps = _cells_per_stage(args.cells_per_stage) if args.cells_per_stage else None
    summary = run_random_baseline(cfg, space=args.space, samples=args.samples, sample_seed=args.sample_seed,
                                  cells_per_stage=cps, window=args.window, searched_acc=args.searched_acc,
                                  metric=args.metric, n_min=args.n_min)
    if is_main_process():
        print(json.dumps({k: summary[k] for k in ("space", "samples", "random_mean", "random_std",
                                                  "random_best", "RI")} | {"searched": summary["searched"]["acc"]}))
    return 0
