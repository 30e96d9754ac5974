"""`hdas search cells|hc|hs|distribution`: run an architecture search (hdas_ext.search).
Defaults are the paper's settings; the dataset defaults to the embedded 'digits' (offline).
Multi-process: `torchrun --nproc_per_node N -m hdas_ext.cli search ...` (DDP)."""
import argparse

from ..search.config import SPACE_DEFAULTS, SPACES, SearchConfig


def _pos_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return v


def _nonneg_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option with its default, except where the default is None (the help says what
    happens then)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action) if action.help else "(default: %(default)s)"


def register(subparsers):
    d = SearchConfig()
    p = subparsers.add_parser(
        "search", help="architecture search: DARTS cells, Hc-DAS, Hs-DAS stages, cell distribution",
        description="Bi-level differentiable architecture search. Spaces: 'cells' (DARTS, 8 cells, "
                    "shared normal/reduce cells), 'hc' (Hc-DAS stage-specific cells), 'hs' (Hs-DAS "
                    "connections between fixed cells), 'distribution' (Hs-DAS with searched stage "
                    "lengths N_min..N_max). Writes log.jsonl, checkpoint.pt, genotype_{best,last}.json, "
                    "tb/ and genotype.png to --out.",
        formatter_class=_Help)
    p.add_argument("space", choices=SPACES)
    g = p.add_argument_group("run")
    g.add_argument("--out", "--output", default=None, help="output folder (default runs/search-<space>)")
    g.add_argument("--dataset", default=d.dataset, choices=("digits", "cifar10", "imagenet"),
                   help="digits is embedded (offline); the others need --data-root")
    g.add_argument("--data-root", default=None, help="cifar10: folder holding cifar-10-batches-py; imagenet: folder with train/")
    g.add_argument("--download", action="store_true", help="cifar10: download into --data-root first")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=d.augment,
                   help="training augmentation of both halves (crop, flip)")
    g.add_argument("--epochs", type=_pos_int, default=d.epochs, help="search epochs")
    g.add_argument("--batch-size", type=_pos_int, default=d.batch_size, help="global batch per step (all ranks)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of weights, alphas and data order")
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    g.add_argument("--resume", action="store_true", help="continue the search checkpointed in --out")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--amp", default=d.amp, choices=("none", "bf16", "fp16"), help="mixed precision (CUDA)")
    g.add_argument("--accumulate", type=_pos_int, default=d.accumulate, help="micro-batches per step and rank")
    g.add_argument("--workers", "--num-workers", type=int, default=d.workers,
                   help="DataLoader workers (image-folder datasets)")
    g.add_argument("--steps-per-epoch", type=_pos_int, default=None, help="cap on steps per epoch (quick runs)")
    g.add_argument("--eval-batches", type=_pos_int, default=None, help="cap on evaluation batches per epoch")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d.progress, help="progress bars")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=d.tensorboard,
                   help="TensorBoard logs in OUT/tb")
    g.add_argument("--plot", action=argparse.BooleanOptionalAction, default=d.plot, help="genotype picture")
    g.add_argument("--fused", action=argparse.BooleanOptionalAction, default=d.fused,
                   help="fused mixed-op kernels (--no-fused: eager reference modules)")
    n = p.add_argument_group("network")
    n.add_argument("--C", "--init-channels", dest="C", type=_pos_int, default=d.C, help="initial channels")
    n.add_argument("--layers", type=_pos_int, default=d.layers, help="cells, hc: cells in the network")
    n.add_argument("--cells-per-stage", type=_pos_int, default=d.cells_per_stage,
                   help="hs: cells per stage (6 = CIFAR setting, 4 = ImageNet setting)")
    n.add_argument("--window", type=_pos_int, default=d.window, help="hs, distribution: window m in [2, N+1]")
    n.add_argument("--n-max", type=_pos_int, default=d.n_max, help="distribution: cells per stage N_max")
    n.add_argument("--n-min", type=_pos_int, default=d.n_min, help="distribution: shortest stage N_min")
    n.add_argument("--genotype", default=d.genotype,
                   help="hs, distribution: fixed cells (library name, e.g. DARTS_V2, PDARTS, HC_DAS, or a genotype string)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--lr", type=_nonneg_float, default=d.lr, help="weight SGD learning rate (cosine schedule)")
    o.add_argument("--lr-min", type=_nonneg_float, default=d.lr_min, help="learning rate at the end of the cosine")
    o.add_argument("--momentum", type=_nonneg_float, default=d.momentum, help="weight SGD momentum")
    o.add_argument("--weight-decay", type=_nonneg_float, default=d.weight_decay, help="weight SGD weight decay")
    o.add_argument("--grad-clip", type=_nonneg_float, default=d.grad_clip, help="0 disables")
    o.add_argument("--arch-lr", type=_nonneg_float, default=d.arch_lr, help="architecture Adam learning rate")
    o.add_argument("--arch-weight-decay", type=_nonneg_float, default=d.arch_weight_decay,
                   help="architecture Adam weight decay")
    o.add_argument("--arch-betas", type=_nonneg_float, nargs=2, default=list(d.arch_betas),
                   help="architecture Adam betas")
    o.add_argument("--order", type=int, choices=(1, 2), default=d.order,
                   help="1: first order at the current weights; 2: DARTS unrolled (finite-difference Hessian)")
    o.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs, help="epochs without architecture updates")
    o.add_argument("--train-portion", type=float, default=d.train_portion, help="share of the train set for weights")
    lo = p.add_argument_group("auxiliary losses (hs, distribution)")
    lo.add_argument("--delta", type=_nonneg_float, default=None,
                    help="depth-loss coefficient (default: " + ", ".join(
                        f"{s} {v['delta']}" for s, v in SPACE_DEFAULTS.items()) + ")")
    lo.add_argument("--gamma", type=_nonneg_float, default=None,
                    help="complexity-loss coefficient (default: distribution 0.4, others 0)")
    lo.add_argument("--loss-mode", choices=("paper", "released"), default=d.loss_mode,
                    help="paper: L_cls + delta L_depth + gamma L_comp in one step; released: the released "
                         "code's raw-logit depth in a separate Adam step")
    p.set_defaults(func=run)


def config_from_args(args):
    fields = {k: v for k, v in vars(args).items() if k in SearchConfig.__dataclass_fields__}
    fields["arch_betas"] = tuple(fields["arch_betas"])
    if fields.get("out") is None:
        fields["out"] = f"runs/search-{args.space}"
    return SearchConfig(**fields)


def run(args):
    from ..search import run_search
    try:
        cfg = config_from_args(args).resolved()
    except ValueError as e:
        raise SystemExit(f"hdas search: error: {e}")
    try:
        result = run_search(cfg)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"hdas search: error: {e}")
    print(f"final genotype (last epoch) = {result['last']!r}")
    print(f"best genotype (epoch {result['best_epoch']}, arch-half top-1 {result['best_acc']:.2f}%) = {result['best']!r}")
    if result["analysis"]:
        a = result["analysis"]
        print(f"derived stages: average depth {a['avg_depth']:.2f} cells, dead cells {a['num_dead_cells']}")
    return 0
