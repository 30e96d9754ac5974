"""`hdas random-baseline`: train architectures sampled uniformly from a search space with the
same recipe as the searched one and report RI = 100 (Acc_searched - Acc_random) / Acc_random."""
import json

from ..runtime import is_main_process
from ..search.config import per_stage_counts
from ..train.config import PRESETS, TrainConfig
from ..train.random_baseline import DEFAULTS, SPACES
from .options import add_config_options, config_values


def register(subparsers):
    p = subparsers.add_parser(
        "random-baseline", help="train uniformly sampled architectures and report the relative improvement RI",
        description="Samples architectures uniformly from a search space, the words of `hdas search`: DARTS "
                    "cells (cells), stage-specific cells (hc), stage DAGs under the search window (hs), or "
                    "stages of the cell-distribution search (distribution: N_max-cell DAGs with a length drawn "
                    "in N_min..N_max); trains each with the recipe (the options of `hdas train`), trains the "
                    "searched architecture (--cell/--stages) unless --searched-acc is given, and writes "
                    "OUTPUT/random_baseline.json after each. --resume continues unfinished runs.")
    p.add_argument("--preset", default="digits", metavar="{" + ",".join(sorted(PRESETS)) + "}",
                   help="recipe to start from (default: digits, the embedded offline dataset)")
    p.add_argument("--space", default="hs", metavar="{" + ",".join(SPACES) + "}",
                   help="the search space sampled (default: hs)")
    p.add_argument("--samples", type=int, default=8, help="number of random architectures (default: 8)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the architecture sampler (default: 0)")
    p.add_argument("--cells-per-stage", type=per_stage_counts, default=None,
                   help="hs, distribution: cells per stage, one count or one per stage (6,6,4) (default: those "
                        "of --stages, else 6; for distribution, N_max)")
    p.add_argument("--window", type=int, default=None,
                   help=f"hs, distribution: sliding-window size (default: {DEFAULTS['window']})")
    p.add_argument("--n-min", type=int, default=None,
                   help=f"distribution: fewest cells per stage (default: {DEFAULTS['n_min']})")
    p.add_argument("--searched-acc", type=float, default=None,
                   help="accuracy (percent) of the searched architecture, to skip training it (default: train it)")
    p.add_argument("--metric", default="best", metavar="{best,last}",
                   help="accuracy compared: best test top-1 over epochs (as the papers) or the last (default: best)")
    add_config_options(p, TrainConfig, preset=True)
    p.set_defaults(func=run)


def run(args):
    from ..train import make_config
    from ..train.random_baseline import run_random_baseline

    overrides = config_values(args, TrainConfig)
    overrides.setdefault("output", "runs/random_baseline")
    cfg = make_config(args.preset, **overrides)
    summary = run_random_baseline(cfg, space=args.space, samples=args.samples, sample_seed=args.sample_seed,
                                  cells_per_stage=args.cells_per_stage, window=args.window,
                                  searched_acc=args.searched_acc, metric=args.metric, n_min=args.n_min)
    if is_main_process():
        if summary["RI"] is None:
            print("[random-baseline] RI undefined: the random architectures' mean accuracy is 0 %", flush=True)
        print(json.dumps({k: summary[k] for k in ("space", "samples", "random_mean", "random_std",
                                                  "random_best", "RI")} | {"searched": summary["searched"]["acc"]}))
    return 0
