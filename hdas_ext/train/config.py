"""Training recipes: one dataclass of every setting, presets that fill it, validation."""
import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Optional

from ..data import DATASETS
from ..utils import check_device

SCHEDULES = ("cosine", "step", "warmup_cosine")
AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    # architecture
    cell: str = "DARTS_V2"            # library name or genotype string/JSON (Genotype or StageCellsGenotype)
    stages: Optional[str] = None      # Hs-DAS stage genotype (name/string/JSON), None = chain network
    init_channels: int = 36
    layers: int = 20                  # chain networks only; stage networks take it from the DAGs
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2       # final value of a linear ramp from 0 (epoch e: p * e / epochs)
    pool_bn: Optional[bool] = None    # None: the network family's convention (build_eval_network)
    # data
    dataset: str = "cifar10"
    data_root: Optional[str] = None
    download: bool = False
    augment: bool = True              # the dataset's standard training augmentation
    cutout: int = 16
    color_jitter: bool = False
    train_subset: int = 0             # first n training images only (0 = all): quick runs, tests
    test_subset: int = 0
    num_workers: int = 2
    data_on_device: bool = False      # keep the whole (small-image) dataset on the device, augment there
    # optimisation
    epochs: int = 600
    batch_size: int = 96              # per process; the global batch is batch_size * world size
    lr: float = 0.025                 # for one process; multiplied by the world size when scale_lr
    scale_lr: bool = True
    lr_min: float = 0.0
    schedule: str = "cosine"          # cosine (per epoch, DARTS), step (x decay per epoch), warmup_cosine (per step)
    decay: float = 0.97
    warmup_epochs: int = 0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0            # 0 = off
    label_smoothing: float = 0.0      # training loss only; evaluation uses plain cross-entropy
    max_train_steps: int = 0          # per epoch, 0 = the whole loader (smoke tests, benchmarks)
    max_eval_steps: int = 0
    # system
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"              # auto, cpu, cuda, cuda:N
    amp: str = "none"                 # none, bf16, fp16
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    output: str = "runs/train"
    resume: Optional[str] = None      # 'auto' (output/checkpoint.pt if present) or a checkpoint path
    tensorboard: bool = True
    progress: Optional[bool] = None   # None: progress bars when stderr is a terminal
    eval_every: int = 1

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


PRESETS = {
    # DARTS train.py / H-DAS augment (spec §7.3, §8.2)
    "cifar10": dict(dataset="cifar10", epochs=600, batch_size=96, lr=0.025, schedule="cosine",
                    weight_decay=3e-4, grad_clip=5.0, cutout=16, auxiliary=True,
                    auxiliary_weight=0.4, drop_path_prob=0.2, init_channels=36, layers=20,
                    label_smoothing=0.0, num_workers=2),
    # DARTS train_imagenet.py: StepLR x0.97 per epoch; for the H-DAS DDP recipe (spec §7.3) pass
    # --schedule warmup_cosine --warmup-epochs 10 --lr-min 1e-4 (10 warm-up epochs, cosine to 1e-3 lr).
    "imagenet": dict(dataset="imagenet", epochs=250, batch_size=128, lr=0.1, schedule="step",
                     decay=0.97, weight_decay=3e-5, grad_clip=5.0, cutout=0, auxiliary=True,
                     auxiliary_weight=0.4, drop_path_prob=0.0, init_channels=48, layers=14,
                     label_smoothing=0.1, color_jitter=True, num_workers=8),
    # The embedded dataset: a CPU-friendly run of a few minutes.
    "digits": dict(dataset="digits", epochs=10, batch_size=64, lr=0.05, schedule="cosine",
                   weight_decay=3e-4, grad_clip=5.0, cutout=0, auxiliary=True,
                   auxiliary_weight=0.4, drop_path_prob=0.1, init_channels=8, layers=5,
                   label_smoothing=0.0, num_workers=0, output="runs/digits"),
}


def make_config(preset="cifar10", check_data=True, **overrides):
    """A validated TrainConfig: the preset's values, then `overrides` (None values ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(names)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return validate(TrainConfig(**values), check_data)


def _need(ok, name, expect, value):
    if not ok:
        raise ValueError(f"{name} must be {expect}, got {value!r}")


def _int(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def validate(cfg, check_data=True):
    """Raise ValueError naming the first bad option; return cfg. check_data=False skips the
    data_root requirement (printing a configuration needs no data)."""
    _need(cfg.dataset in DATASETS, "dataset", f"one of {DATASETS}", cfg.dataset)
    _need(cfg.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", cfg.schedule)
    _need(cfg.amp in AMP_MODES, "amp", f"one of {AMP_MODES}", cfg.amp)
    for name in ("epochs", "batch_size", "init_channels", "layers", "eval_every"):
        _need(_int(getattr(cfg, name), 1), name, "an int >= 1", getattr(cfg, name))
    for name in ("cutout", "train_subset", "test_subset", "num_workers", "max_train_steps",
                 "max_eval_steps", "warmup_epochs", "seed"):
        _need(_int(getattr(cfg, name), 0), name, "an int >= 0", getattr(cfg, name))
    _need(cfg.lr > 0, "lr", "> 0", cfg.lr)
    _need(0 <= cfg.lr_min <= cfg.lr, "lr_min", f"in [0, lr={cfg.lr}]", cfg.lr_min)
    _need(0 < cfg.decay <= 1, "decay", "in (0, 1]", cfg.decay)
    _need(cfg.warmup_epochs < cfg.epochs or cfg.schedule != "warmup_cosine", "warmup_epochs",
          f"< epochs={cfg.epochs}", cfg.warmup_epochs)
    _need(cfg.warmup_epochs == 0 or cfg.schedule == "warmup_cosine", "warmup_epochs",
          f"0 unless schedule is 'warmup_cosine' (the {cfg.schedule!r} schedule has no warm-up)", cfg.warmup_epochs)
    _need(0 <= cfg.momentum < 1, "momentum", "in [0, 1)", cfg.momentum)
    _need(cfg.weight_decay >= 0, "weight_decay", ">= 0", cfg.weight_decay)
    _need(cfg.grad_clip >= 0, "grad_clip", ">= 0 (0 = off)", cfg.grad_clip)
    _need(0 <= cfg.label_smoothing < 1, "label_smoothing", "in [0, 1)", cfg.label_smoothing)
    _need(0 <= cfg.drop_path_prob < 1, "drop_path_prob", "in [0, 1)", cfg.drop_path_prob)
    _need(cfg.auxiliary_weight >= 0, "auxiliary_weight", ">= 0", cfg.auxiliary_weight)
    check_device(cfg.device)
    _need(bool(cfg.output), "output", "a folder path", cfg.output)
    if check_data and cfg.dataset in ("cifar10", "imagenet") and not cfg.data_root:
        raise ValueError(f"data_root is required for dataset {cfg.dataset!r} (the folder holding, or with "
                         f"--download receiving, {'cifar-10-batches-py' if cfg.dataset == 'cifar10' else 'train/ and val/'})")
    return cfg
