"""Search settings, one field per `hdas search` option (help and group beside each). Defaults are
the paper's settings where it states them (its appendix: SGD, Adam, weight decay 2.7e-3 for the
H-DAS searches), DARTS' for the DARTS cell search, and the released code's otherwise (the loss
coefficients); the dataset defaults to the embedded 'digits' so a search runs offline on a fresh
machine. docs/algorithms.md says which is which.

A setting left None is the space's: the supernet's own settings (hdas_ext.supernets.SEARCH_SPACES)
default to its constructor's values, the others to SPACE_DEFAULTS; one given for a space it does
not apply to is refused. The supernet checks the values of its own settings when it is built."""
import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .. import genotypes as G
from ..data import DATASETS
from ..runtime import AMP_MODES, ResumePolicy, config_dict, names_list, option
from ..runtime.resume import DATA_ORDER, NETWORK, OPTIMISER
from ..supernets import SEARCH_SPACES, THETA_KINDS, search_space, setting_default
from .losses import MODES as LOSS_MODES, LossMode

SPACES = tuple(SEARCH_SPACES)

# Each space's defaults of the search settings (not the supernet's) left None in SearchConfig
# (docs/algorithms.md): the weight decay is the paper's 2.7e-3 for the H-DAS searches and DARTS'
# 3e-4 for the DARTS cell search; delta 1 is the paper's best (its Table 5 sweep) and the released
# code's; gamma 0.4 is the released code's (the paper gives none).
# A space without an entry for one of them refuses it.
SPACE_DEFAULTS = {
    "cells": dict(weight_decay=3e-4),
    "hc": dict(weight_decay=2.7e-3),
    "hs": dict(weight_decay=2.7e-3, delta=1.0, loss_mode="literal"),
    "distribution": dict(weight_decay=2.7e-3, delta=1.0, gamma=0.4, loss_mode="literal"),
}


def _applies(space, name):
    return name in SEARCH_SPACES[space].settings or name in SPACE_DEFAULTS[space]


def space_default(space, name):
    """A setting's default in `space` (None where it does not apply)."""
    if name in SEARCH_SPACES[space].settings:
        return setting_default(space, name)
    return SPACE_DEFAULTS[space].get(name)


def _short(v):
    """3e-4, 2.7e-3, 0.4, 1, skip_connect,none: how the paper writes its settings."""
    if isinstance(v, (tuple, list)):
        return ",".join(map(str, v))
    if isinstance(v, float) and 0 < abs(v) < 0.01:
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _per_space(name):
    """'default: ...' of a per-space setting: one value, or one per space; and where it applies."""
    spaces = [s for s in SPACES if _applies(s, name)]
    values = [_short(space_default(s, name)) for s in spaces]
    text = values[0] if len(set(values)) == 1 else ", ".join(f"{s} {v}" for s, v in zip(spaces, values))
    return f" (default: {text}{'' if len(spaces) == len(SPACES) else '; ' + ', '.join(spaces) + ' only'})"


def per_stage_counts(text):
    """'6' -> 6, '6,6,4' -> (6, 6, 4): one count for every stage or one per stage."""
    parts = [int(t) for t in str(text).split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


_RUN, _NET, _OPT, _AUX = "run", "network", "optimisation", "auxiliary losses"


def _space_option(name, help, group, **cli):
    """A setting whose default is the space's (None until resolved)."""
    return option(None, help + _per_space(name), group=group, per_space=True, **cli)


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
    threads: Optional[int] = option(None, "torch intra-op CPU threads (unset: torch's default); a CPU run is "
                                          "bit-identical only at the same count on the same CPU ISA "
                                          "(config.json: torch_threads, torch_cpu_capability)",
                                    group=_RUN)
    deterministic: bool = option(False, "deterministic kernels (slower on GPU)", group=_RUN)
    resume: bool = option(False, "continue the run checkpointed in --output", group=_RUN)
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", group=_RUN)
    amp: str = option("none", "mixed precision: bf16 (any device) or fp16 (CUDA)", group=_RUN, choices=AMP_MODES)
    accumulate: int = option(1, "micro-batches per step and rank", group=_RUN)
    num_workers: int = option(0, "DataLoader workers (image-folder datasets)", group=_RUN)
    steps_per_epoch: Optional[int] = option(None, "cap on steps per epoch (quick runs; default: all)", group=_RUN)
    eval_batches: Optional[int] = option(None, "cap on evaluation batches per epoch (default: all)", group=_RUN)
    progress: bool = option(True, "progress: a bar on a terminal, else a line every 30 s", group=_RUN)
    tensorboard: bool = option(True, "TensorBoard logs in OUTPUT/tb", group=_RUN)
    plot: bool = option(True, "genotype picture (OUTPUT/genotype.png)", group=_RUN)
    log_every: int = option(10, "TensorBoard step scalars every N steps", group=_RUN)
    fused: bool = option(True, "fused mixed-op kernels (--no-fused: eager reference modules)", group=_RUN)
    recompute: bool = option(False, "the fused supernet keeps only the states for the backward and recomputes "
                                    "the ops' internals there (same results, a fraction of the memory, "
                                    "docs/memory.md)", group=_RUN)
    # network (the supernet's settings)
    init_channels: int = option(16, "initial channels", group=_NET)
    layers: Optional[int] = _space_option("layers", "cells in the network", _NET)
    cells_per_stage: Union[None, int, Tuple[int, ...]] = _space_option(
        "cells_per_stage",
        "cells per stage, one count (6 = CIFAR setting, 4 = ImageNet setting) or one per stage (6,6,4)", _NET,
        type=per_stage_counts)
    window: Optional[int] = _space_option("window", "window m in [2, N+1]", _NET)
    n_max: Optional[int] = _space_option("n_max", "cells per stage N_max", _NET)
    n_min: Optional[int] = _space_option("n_min", "shortest stage N_min", _NET)
    partial_channels: Optional[int] = _space_option(
        "partial_channels",
        "PC-DARTS' partial channels k (each edge mixes C/k channels, passes the rest and shuffles; 1: all "
        "channels)", _NET)
    edge_normalization: Optional[bool] = _space_option(
        "edge_normalization",
        "PC-DARTS' edge normalisation (a weight per edge, softmax over each node's edges; edges ranked by it)", _NET)
    genotype: Union[None, str, G.Genotype, G.StageCellsGenotype] = _space_option(
        "genotype",
        "fixed cells (library name, e.g. DARTS_V2, PDARTS, HC_DAS, a genotype string, JSON or a file holding "
        "one). Stage-specific cells (a StageCellsGenotype such as HC_DAS, or the result of 'hdas search hc') "
        "give each stage its own cells: with 'hs' that is the paper's Hs-DAS-dagger (stage-specific cells and "
        "DAGs)", _NET)
    shared_dag: Optional[bool] = _space_option(
        "shared_dag", "Hs-DAS*, one stage DAG (one alpha set) shared by the three stages", _NET)
    stage_primitives: Optional[Tuple[str, ...]] = _space_option(
        "stage_primitives",
        "the ops of a stage edge, comma-separated (e.g. skip_connect,none, the reduced set of the paper's "
        "Table 6)", _NET, type=names_list)
    # weights: SGD + cosine
    lr: float = option(0.025, "weight SGD learning rate (cosine schedule)", group=_OPT)
    lr_min: float = option(0.001, "learning rate at the end of the cosine", group=_OPT)
    momentum: float = option(0.9, "weight SGD momentum", group=_OPT)
    weight_decay: Optional[float] = _space_option("weight_decay", "weight SGD weight decay", _OPT)
    grad_clip: float = option(5.0, "0 disables", group=_OPT)
    # architecture: Adam
    arch_lr: float = option(3e-4, "architecture Adam learning rate", group=_OPT)
    arch_betas: tuple = option((0.5, 0.999), "architecture Adam betas", group=_OPT, nargs=2, type=float)
    arch_weight_decay: float = option(1e-3, "architecture Adam weight decay", group=_OPT)
    order: int = option(1, "1: first order at the current weights; 2: DARTS unrolled (finite-difference "
                           "Hessian)", group=_OPT, choices=(1, 2))
    warmup_epochs: int = option(0, "epochs without architecture updates", group=_OPT)
    train_portion: float = option(0.5, "share of the train set for weights", group=_OPT)
    # auxiliary losses of the stage searches
    delta: Optional[float] = _space_option("delta", "depth-loss coefficient", _AUX)
    gamma: Optional[float] = _space_option("gamma", "complexity-loss coefficient", _AUX)
    loss_mode: Optional[str] = _space_option(
        "loss_mode",
        "literal: the paper's Eq. 2 as written (our reading of its weights and 1/i, docs/algorithms.md; "
        "two input nodes, cell j is node j + 2); literal-one-input: the same, one input node (node j + 1); "
        "edge-softmax: softmax across a cell's edges, no 1/i; both added to the architecture loss. released: "
        "the released code's raw-logit depth in a separate Adam step", _AUX, choices=LOSS_MODES)
    theta: Optional[str] = _space_option(
        "theta",
        "the cost of a cell in the complexity loss (Eq. 5): 1 (expected cells; the paper's, under its FLOPs "
        "constraint), flops or params (one cell of "
        "the stage, in millions)", _AUX, choices=THETA_KINDS)

    def resolved(self):
        """A copy with the space's defaults filled in, settings that do not apply to the space
        refused, the genotype parsed and the search's own settings checked."""
        search_space(self.space)
        cfg = dataclasses.replace(self, arch_betas=tuple(self.arch_betas))
        if cfg.output is None:
            cfg.output = f"runs/search-{cfg.space}"
        for name in PER_SPACE:
            value = getattr(cfg, name)
            if not _applies(cfg.space, name):
                if value is not None:
                    where = " and ".join(s for s in SPACES if _applies(s, name))
                    raise ValueError(f"{name} (--{name.replace('_', '-')}) applies to the {where} search"
                                     f"{'es' if ' and ' in where else ''}, not to {cfg.space!r}")
            elif value is None:
                setattr(cfg, name, space_default(cfg.space, name))
        if cfg.loss_mode is not None:
            cfg.loss_mode = LossMode(cfg.loss_mode)
        if cfg.stage_primitives is not None:
            cfg.stage_primitives = tuple(cfg.stage_primitives)
        if cfg.genotype is not None:
            cfg.genotype = G.resolve(cfg.genotype, "genotype", (G.Genotype, G.StageCellsGenotype))
        _check(cfg)
        return cfg

    def supernet_settings(self):
        """The resolved space's own supernet settings, by name."""
        return {name: getattr(self, name) for name in SEARCH_SPACES[self.space].settings}

    def to_dict(self):
        return config_dict(self)


PER_SPACE = tuple(f.name for f in dataclasses.fields(SearchConfig) if f.metadata.get("per_space"))


def _int(cfg, lo, *names, optional=False):
    for n in names:
        v = getattr(cfg, n)
        if optional and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            kind = "a positive int" if lo == 1 else f"an int >= {lo}"
            raise ValueError(f"{n} must be {kind}{' or None' if optional else ''}, got {v!r}")


def _check(cfg):
    """ValueError naming the first bad setting of the search itself (the supernet's are checked
    where it is built; the device, the seed and amp where the run starts)."""
    _int(cfg, 1, "epochs", "batch_size", "accumulate", "log_every")
    _int(cfg, 1, "steps_per_epoch", "eval_batches", "threads", optional=True)
    _int(cfg, 0, "num_workers", "warmup_epochs")
    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    if cfg.order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {cfg.order!r}")
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ValueError(f"warmup_epochs must be in [0, epochs={cfg.epochs}], got {cfg.warmup_epochs}")
    for k in ("delta", "gamma", "lr", "lr_min", "arch_lr", "weight_decay", "arch_weight_decay", "grad_clip"):
        if getattr(cfg, k) is not None and getattr(cfg, k) < 0:
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
    if cfg.dataset != "digits" and cfg.data_root is None:
        raise ValueError(f"data_root (--data-root) is required for dataset {cfg.dataset!r}")


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
    free=frozenset(("output", "data_root", "download", "device", "fused", "recompute", "deterministic",
                    "num_workers", "resume", "progress", "tensorboard", "plot", "log_every")),
    genotypes=frozenset(("genotype",)),
)
