"""Search settings, one field per `hdas search` option (help and group beside each). Defaults are
the paper's settings where it states them (its appendix: SGD, Adam, weight decay 2.7e-3 for the
H-DAS searches), DARTS' for the DARTS cell search, and the released code's otherwise (the loss
coefficients); the dataset defaults to the embedded 'digits' so a search runs offline on a fresh
machine. docs/algorithms.md says which is which."""
import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .. import genotypes as G
from ..data import DATASETS
from ..runtime import ResumePolicy, config_dict, option
from ..runtime.resume import DATA_ORDER, NETWORK, OPTIMISER
from ..primitives import STAGE_PRIMITIVES
from ..utils import check_device
from .losses import DEFAULT_MODE, MODES as LOSS_MODES, check_mode

SPACES = ("cells", "hc", "hs", "distribution")
AMP_MODES = ("none", "bf16", "fp16")
THETA_KINDS = ("1", "flops", "params")
MEMORY_MODES = ("default", "lean")

# Each space's defaults of the settings left None in SearchConfig (docs/algorithms.md): the weight
# decay is the paper's 2.7e-3 for the H-DAS searches and DARTS' 3e-4 for the DARTS cell search; the
# depth and complexity coefficients are the released code's.
SPACE_DEFAULTS = {
    "cells": dict(weight_decay=3e-4, delta=0.0, gamma=0.0),
    "hc": dict(weight_decay=2.7e-3, delta=0.0, gamma=0.0),
    "hs": dict(weight_decay=2.7e-3, delta=1.0, gamma=0.0),
    "distribution": dict(weight_decay=2.7e-3, delta=1.0, gamma=0.4),
}


def _short(v):
    """3e-4, 2.7e-3, 0.4, 1: how the paper writes its settings."""
    if 0 < abs(v) < 0.01:
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:g}"


def _per_space(key):
    return ", ".join(f"{s} {_short(v[key])}" for s, v in SPACE_DEFAULTS.items())


def per_stage_counts(text):
    """'6' -> 6, '6,6,4' -> (6, 6, 4): one count for every stage or one per stage."""
    parts = [int(t) for t in str(text).split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _loss_mode(text):
    """A --loss-mode value; the old name 'paper' maps to 'edge-softmax' (with a warning)."""
    return check_mode(text)


def names_list(text):
    """'skip_connect,none' -> ('skip_connect', 'none')."""
    return tuple(t.strip() for t in str(text).split(",") if t.strip())
_RUN, _NET, _OPT, _AUX = "run", "network", "optimisation", "auxiliary losses (hs, distribution)"


@dataclass
class SearchConfig:
    space: str = option("hs", "search space", positional=True, choices=SPACES)
    output: Optional[str] = option(None, "output folder (default runs/search-<space>)", group=_RUN)
    dataset: str = option("digits", "digits is embedded (offline); the others need --data-root",
                          group=_RUN, choices=DATASETS)
    data_root: Optional[str] = option(None, "cifar10: folder holding cifar-10-batches-py; imagenet: folder "
                                            "with train/", group=_RUN)
    download: bool = option(False, "cifar10: download into --data-root first", group=_RUN)
    augment: bool = option(True, "training augmentation of both halves (crop, flip; the released code's)",
                           group=_RUN)
    epochs: int = option(50, "search epochs", group=_RUN)
    batch_size: int = option(64, "global batch per step (all ranks)", group=_RUN)
    seed: int = option(2, "seed of weights, alphas and data order", group=_RUN)
    deterministic: bool = option(False, "deterministic kernels (slower on GPU)", group=_RUN)
    resume: bool = option(False, "continue the search checkpointed in --output", group=_RUN)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", group=_RUN)
    amp: str = option("none", "mixed precision (CUDA)", group=_RUN, choices=AMP_MODES)
    accumulate: int = option(1, "micro-batches per step and rank", group=_RUN)
    num_workers: int = option(0, "DataLoader workers (image-folder datasets)", group=_RUN)
    steps_per_epoch: Optional[int] = option(None, "cap on steps per epoch (quick runs; default: the whole "
                                                  "half)", group=_RUN)
    eval_batches: Optional[int] = option(None, "cap on evaluation batches per epoch (default: all)", group=_RUN)
    progress: bool = option(True, "progress bars", group=_RUN)
    tensorboard: bool = option(True, "TensorBoard logs in OUTPUT/tb", group=_RUN)
    plot: bool = option(True, "genotype picture (OUTPUT/genotype.png)", group=_RUN)
    log_every: int = option(10, "TensorBoard step scalars every N steps", group=_RUN)
    fused: bool = option(True, "fused mixed-op kernels (--no-fused: eager reference modules)", group=_RUN)
    memory: str = option("default", "lean: the fused supernet keeps only the states for the backward and "
                                    "recomputes the ops' internals there (same results, a fraction of the "
                                    "memory, docs/memory.md)", group=_RUN, choices=MEMORY_MODES)
    # network
    init_channels: int = option(16, "initial channels", group=_NET)
    layers: int = option(8, "cells, hc: cells in the network", group=_NET)
    cells_per_stage: Union[int, Tuple[int, ...]] = option(
        6, "hs: cells per stage, one count (6 = CIFAR setting, 4 = ImageNet setting) or one per stage (6,6,4)",
        group=_NET, type=per_stage_counts)
    window: int = option(3, "hs, distribution: window m in [2, N+1]", group=_NET)
    n_max: int = option(8, "distribution: cells per stage N_max", group=_NET)
    n_min: int = option(4, "distribution: shortest stage N_min", group=_NET)
    partial_channels: int = option(1, "cells, hc: PC-DARTS' partial channels k (each edge mixes C/k channels, "
                                      "passes the rest and shuffles; 1: all channels)", group=_NET)
    edge_normalization: bool = option(False, "cells, hc: PC-DARTS' edge normalisation (a weight per edge, "
                                             "softmax over each node's edges; edges ranked by it)", group=_NET)
    genotype: Union[str, G.Genotype, G.StageCellsGenotype] = option(
        "DARTS_V2", "hs, distribution: fixed cells (library name, e.g. DARTS_V2, PDARTS, HC_DAS, a genotype "
                    "string, JSON or a file holding one). Stage-specific cells (a StageCellsGenotype such as "
                    "HC_DAS, or the result of 'hdas search hc') give each stage its own cells: with 'hs' "
                    "that is the paper's Hs-DAS-dagger (stage-specific cells and DAGs)", group=_NET)
    shared_dag: bool = option(False, "hs: Hs-DAS*, one stage DAG (one alpha set) shared by the three stages",
                              group=_NET)
    stage_primitives: Tuple[str, ...] = option(
        STAGE_PRIMITIVES, "hs, distribution: the ops of a stage edge, comma-separated (e.g. skip_connect,none, "
                          "the reduced set of the paper's Table 6)", group=_NET, type=names_list)
    # weights: SGD + cosine
    lr: float = option(0.025, "weight SGD learning rate (cosine schedule)", group=_OPT)
    lr_min: float = option(0.001, "learning rate at the end of the cosine", group=_OPT)
    momentum: float = option(0.9, "weight SGD momentum", group=_OPT)
    weight_decay: Optional[float] = option(None, "weight SGD weight decay (default: " + _per_space("weight_decay")
                                           + ")", group=_OPT)
    grad_clip: float = option(5.0, "0 disables", group=_OPT)
    # architecture: Adam
    arch_lr: float = option(3e-4, "architecture Adam learning rate", group=_OPT)
    arch_betas: tuple = option((0.5, 0.999), "architecture Adam betas", group=_OPT, nargs=2, type=float)
    arch_weight_decay: float = option(1e-3, "architecture Adam weight decay", group=_OPT)
    order: int = option(1, "1: first order at the current weights; 2: DARTS unrolled (finite-difference "
                           "Hessian)", group=_OPT, choices=(1, 2))
    warmup_epochs: int = option(0, "epochs without architecture updates", group=_OPT)
    train_portion: float = option(0.5, "share of the train set for weights", group=_OPT)
    # auxiliary losses (None: the space's default)
    delta: Optional[float] = option(None, "depth-loss coefficient (default: " + _per_space("delta") + ")",
                                    group=_AUX)
    gamma: Optional[float] = option(None, "complexity-loss coefficient (default: " + _per_space("gamma") + ")",
                                    group=_AUX)
    loss_mode: str = option(DEFAULT_MODE, "literal: the paper's Eq. 2 as written (our reading of its weights "
                                          "and 1/i, docs/algorithms.md); edge-softmax: softmax across a cell's "
                                          "edges, no 1/i (formerly 'paper'); both added to the architecture "
                                          "loss. released: the released code's raw-logit depth in a separate "
                                          "Adam step", group=_AUX, choices=LOSS_MODES, type=_loss_mode)
    theta: str = option("1", "distribution: the cost of a cell in the complexity loss (Eq. 5): 1 (expected "
                             "cells), flops or params (one cell of the stage, in millions)", group=_AUX,
                        choices=THETA_KINDS)

    def resolved(self):
        """A copy with the space's defaults filled in, the genotype parsed and every field checked."""
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        cfg = dataclasses.replace(self, arch_betas=tuple(self.arch_betas))
        if cfg.output is None:
            cfg.output = f"runs/search-{cfg.space}"
        for k, v in SPACE_DEFAULTS[self.space].items():
            if getattr(cfg, k) is None:
                setattr(cfg, k, v)
        cfg.loss_mode = check_mode(cfg.loss_mode)
        if not isinstance(cfg.cells_per_stage, int):
            from ..supernets import per_stage
            counts = per_stage("cells_per_stage", cfg.cells_per_stage)
            cfg.cells_per_stage = counts[0] if len(set(counts)) == 1 else tuple(counts)
        cfg.stage_primitives = tuple(cfg.stage_primitives)
        if cfg.loss_mode == "released" and cfg.space == "distribution" and self.gamma is None:
            cfg.gamma = 0.4
        _check(cfg)
        if cfg.space in ("hs", "distribution"):
            cfg.genotype = G.resolve(cfg.genotype, "genotype", (G.Genotype, G.StageCellsGenotype))
        return cfg

    def to_dict(self):
        return config_dict(self)


def _int(cfg, lo, *names, optional=False):
    for n in names:
        v = getattr(cfg, n)
        if optional and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            kind = "a positive int" if lo == 1 else f"an int >= {lo}"
            raise ValueError(f"{n} must be {kind}{' or None' if optional else ''}, got {v!r}")


def _check(cfg):
    """ValueError naming the first bad setting."""
    from ..supernets import check_stage_primitives, per_stage
    _int(cfg, 1, "epochs", "batch_size", "init_channels", "layers", "window", "n_max", "n_min", "accumulate",
         "log_every", "partial_channels")
    stage_cells = per_stage("cells_per_stage", cfg.cells_per_stage)
    check_stage_primitives(cfg.stage_primitives)
    if cfg.theta not in THETA_KINDS:
        raise ValueError(f"theta must be one of {THETA_KINDS}, got {cfg.theta!r}")
    _int(cfg, 1, "steps_per_epoch", "eval_batches", optional=True)
    _int(cfg, 0, "seed", "num_workers", "warmup_epochs")
    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    if cfg.order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {cfg.order!r}")
    if cfg.amp not in AMP_MODES:
        raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {cfg.amp!r}")
    if cfg.memory not in MEMORY_MODES:
        raise ValueError(f"memory must be 'default' or 'lean', got {cfg.memory!r}")
    if cfg.memory == "lean" and not cfg.fused:
        raise ValueError("memory='lean' is a mode of the fused supernets: it needs fused=True (drop --no-fused)")
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs={cfg.epochs}], got {cfg.warmup_epochs}")
    for k in ("delta", "gamma", "lr", "lr_min", "arch_lr", "weight_decay", "arch_weight_decay", "grad_clip"):
        if getattr(cfg, k) < 0:
            raise ValueError(f"{k} must be >= 0, got {getattr(cfg, k)}")
    for k in ("lr", "arch_lr"):
        if not getattr(cfg, k) > 0:
            raise ValueError(f"{k} must be > 0, got {getattr(cfg, k)}")
    if cfg.lr_min > cfg.lr:
        raise ValueError(f"lr_min must be in [0, lr={cfg.lr}] (the cosine schedule runs from lr down to it), "
                         f"got {cfg.lr_min}")
    if not 0 <= cfg.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if not all(0 <= b < 1 for b in cfg.arch_betas) or len(cfg.arch_betas) != 2:
        raise ValueError(f"arch_betas must be two numbers in [0, 1), got {cfg.arch_betas}")
    if not 0 < cfg.train_portion < 1:
        raise ValueError(f"train_portion must be in (0, 1), got {cfg.train_portion}")
    check_device(cfg.device)
    if cfg.space in ("cells", "hc") and (cfg.delta or cfg.gamma):
        raise ValueError("delta/gamma (depth and complexity losses) apply to the stage searches "
                         "'hs' and 'distribution' only")
    if cfg.dataset != "digits" and cfg.data_root is None:
        raise ValueError(f"data_root (--data-root) is required for dataset {cfg.dataset!r}")
    cells = {"hs": min(stage_cells), "distribution": cfg.n_max}.get(cfg.space)
    if cells is not None and not 2 <= cfg.window <= cells + 1:
        raise ValueError(f"window must be in [2, N+1] = [2, {cells + 1}] for {cells} cells per stage, got {cfg.window}")
    if cfg.space == "distribution" and cfg.n_min > cfg.n_max:
        raise ValueError(f"n_min must be <= n_max ({cfg.n_max}), got {cfg.n_min}")
    if cfg.space == "hs" and cfg.gamma:
        raise ValueError("gamma (complexity loss) needs beta: use the 'distribution' search")
    if cfg.space in ("hs", "distribution") and (cfg.partial_channels != 1 or cfg.edge_normalization):
        raise ValueError("partial_channels and edge_normalization apply to the cell searches 'cells' and 'hc' only")
    if cfg.memory == "lean" and cfg.partial_channels != 1:
        raise ValueError("memory='lean' runs full-channel mixed ops: it needs partial_channels=1")
    if cfg.init_channels % cfg.partial_channels:
        raise ValueError(f"partial_channels must divide init_channels ({cfg.init_channels}), "
                         f"got {cfg.partial_channels}")
    if cfg.shared_dag and (cfg.space != "hs" or len(set(stage_cells)) != 1):
        raise ValueError("shared_dag (Hs-DAS*) is an 'hs' search option and needs the same cells_per_stage in "
                         f"every stage, got space {cfg.space!r}, cells_per_stage {cfg.cells_per_stage!r}")


# What a resumed search may change. Refused: what shapes the supernet and its data, and what the
# checkpoint's optimiser and LR-schedule states would silently override (a resumed run keeps the old
# learning rates and cosine period). Free: where a search runs or what it reports.
RESUME = ResumePolicy(
    refused={**dict.fromkeys(("space", "dataset", "init_channels", "layers", "cells_per_stage", "window", "n_max",
                              "n_min", "genotype", "shared_dag", "stage_primitives", "partial_channels",
                              "edge_normalization"), NETWORK),
             **dict.fromkeys(("batch_size", "seed", "train_portion", "accumulate"), DATA_ORDER),
             "order": "the architecture gradient would change its method mid-search",
             **dict.fromkeys(("epochs", "lr", "lr_min", "momentum", "weight_decay", "arch_lr", "arch_betas",
                              "arch_weight_decay"), OPTIMISER)},
    free=frozenset(("output", "data_root", "download", "device", "fused", "memory", "deterministic", "num_workers",
                    "resume", "progress", "tensorboard", "plot", "log_every")),
    genotypes=frozenset(("genotype",)),
    renamed={"out": "output", "C": "init_channels", "workers": "num_workers"},
)


def build_supernet(cfg, num_classes, in_channels, image_size=32):
    from ..supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch
    mode = dict(fused=cfg.fused, recompute=cfg.memory == "lean")
    if cfg.space in ("cells", "hc"):
        cls = DartsCellSearch if cfg.space == "cells" else HcDasSearch
        return cls(cfg.init_channels, num_classes, cfg.layers, in_channels, **mode,
                   partial_channels=cfg.partial_channels, edge_normalization=cfg.edge_normalization)
    if cfg.space == "hs":
        return HsDasSearch(cfg.genotype, cfg.init_channels, num_classes, cfg.cells_per_stage, cfg.window,
                           in_channels, **mode, stage_primitives=cfg.stage_primitives,
                           shared_dag=cfg.shared_dag)
    return DistributionSearch(cfg.genotype, cfg.init_channels, num_classes, cfg.n_max, cfg.n_min, cfg.window,
                              in_channels, **mode, stage_primitives=cfg.stage_primitives,
                              theta=cfg.theta, image_size=image_size)
