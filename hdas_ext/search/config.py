"""Search settings. Defaults are the paper's / released code's (spec §6.1), except the dataset,
which defaults to the embedded 'digits' so a search runs offline on a fresh machine."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..utils import check_device

SPACES = ("cells", "hc", "hs", "distribution")

# Per-space defaults that differ from the dataclass defaults (paper settings).
SPACE_DEFAULTS = {
    "cells": dict(layers=8, delta=0.0, gamma=0.0),
    "hc": dict(layers=8, delta=0.0, gamma=0.0),
    "hs": dict(cells_per_stage=6, delta=1.0, gamma=0.0),
    "distribution": dict(n_max=8, n_min=4, delta=1.0, gamma=0.4),
}


@dataclass
class SearchConfig:
    space: str = "hs"
    out: str = "runs/search"
    dataset: str = "digits"
    data_root: Optional[str] = None
    download: bool = False
    augment: bool = True            # training augmentation of both halves (the released code's)
    epochs: int = 50
    batch_size: int = 64
    seed: int = 2
    deterministic: bool = False
    # network
    C: int = 16
    layers: int = 8                 # cells / hc: cells in the network
    cells_per_stage: int = 6        # hs: 6 (CIFAR setting), 4 (ImageNet setting)
    window: int = 3                 # hs / distribution: sliding window m
    n_max: int = 8                  # distribution
    n_min: int = 4                  # distribution
    genotype: str = "DARTS_V2"      # hs / distribution: the fixed cells (name or genotype string)
    fused: bool = True
    # weights: SGD + cosine
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture: Adam
    arch_lr: float = 3e-4
    arch_betas: tuple = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    order: int = 1
    warmup_epochs: int = 0
    # auxiliary losses
    delta: Optional[float] = None   # depth coefficient (None: the space's default)
    gamma: Optional[float] = None   # complexity coefficient (None: the space's default)
    loss_mode: str = "paper"        # 'paper' (in the objective) or 'released' (separate Adam step)
    # execution
    device: str = "auto"
    amp: str = "none"               # none | bf16 | fp16 (CUDA only)
    accumulate: int = 1             # micro-batches per step and rank
    workers: int = 0
    train_portion: float = 0.5
    steps_per_epoch: Optional[int] = None   # cap (quick runs); None = the whole half
    eval_batches: Optional[int] = None      # cap on the per-epoch evaluation of the arch half
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    plot: bool = True
    log_every: int = 10

    def resolved(self):
        """A copy with the space's defaults filled in and every field checked."""
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        cfg = dataclasses.replace(self, arch_betas=tuple(self.arch_betas))
        for k, v in SPACE_DEFAULTS[self.space].items():
            if k in ("delta", "gamma") and getattr(cfg, k) is None:
                setattr(cfg, k, v)
        if cfg.loss_mode == "released" and cfg.space == "distribution" and self.gamma is None:
            cfg.gamma = 0.4
        _positive_int(cfg, "epochs", "batch_size", "C", "layers", "cells_per_stage", "window", "n_max",
                      "n_min", "accumulate", "log_every")
        if cfg.order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {cfg.order!r}")
        if cfg.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {cfg.amp!r}")
        if cfg.loss_mode not in ("paper", "released"):
            raise ValueError(f"loss_mode must be 'paper' or 'released', got {cfg.loss_mode!r}")
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
        check_device(cfg.device)
        if cfg.space in ("cells", "hc") and (cfg.delta or cfg.gamma):
            raise ValueError("delta/gamma (depth and complexity losses) apply to the stage searches "
                             "'hs' and 'distribution' only")
        if cfg.dataset != "digits" and cfg.data_root is None:
            raise ValueError(f"data_root (--data-root) is required for dataset {cfg.dataset!r}")
        cells = {"hs": cfg.cells_per_stage, "distribution": cfg.n_max}.get(cfg.space)
        if cells is not None and not 2 <= cfg.window <= cells + 1:
            raise ValueError(f"window must be in [2, N+1] = [2, {cells + 1}] for {cells} cells per stage, got {cfg.window}")
        if cfg.space == "distribution" and cfg.n_min > cfg.n_max:
            raise ValueError(f"n_min must be <= n_max ({cfg.n_max}), got {cfg.n_min}")
        if cfg.space in ("hs", "distribution"):
            from ..supernets import resolve_genotype
            resolve_genotype(cfg.genotype)
        if cfg.space == "hs" and cfg.gamma:
            raise ValueError("gamma (complexity loss) needs beta: use the 'distribution' search")
        return cfg

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["arch_betas"] = list(d["arch_betas"])
        return d


def _positive_int(cfg, *names):
    for n in names:
        v = getattr(cfg, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{n} must be a positive int, got {v!r}")


def build_supernet(cfg, num_classes, in_channels):
    from ..supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch
    if cfg.space == "cells":
        return DartsCellSearch(cfg.C, num_classes, cfg.layers, in_channels, fused=cfg.fused)
    if cfg.space == "hc":
        return HcDasSearch(cfg.C, num_classes, cfg.layers, in_channels, fused=cfg.fused)
    if cfg.space == "hs":
        return HsDasSearch(cfg.genotype, cfg.C, num_classes, cfg.cells_per_stage, cfg.window, in_channels,
                           fused=cfg.fused)
    return DistributionSearch(cfg.genotype, cfg.C, num_classes, cfg.n_max, cfg.n_min, cfg.window, in_channels,
                              fused=cfg.fused)
