"""Training recipes: one dataclass of every setting (one `hdas train` option each, help beside it),
presets that fill it, validation and what a resumed run may change."""
import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Optional, Tuple, Union

from .. import genotypes as G
from ..data import DATASETS
from ..networks import CONSTRUCTIONS
from ..runtime import AMP_MODES, ResumePolicy, config_dict, names_list, option
from ..runtime.resume import NETWORK, OPTIMISER

SCHEDULES = ("cosine", "step", "warmup_cosine")


@dataclass
class TrainConfig:
    # architecture
    cell: Union[str, G.Genotype, G.StageCellsGenotype] = option(
        "DARTS_V2", "cell genotype: library name (DARTS_V2, PDARTS, HC_DAS, ...), genotype string, JSON or a "
                    "file holding one")
    stages: Union[None, str, G.StageGenotype] = option(
        None, "Hs-DAS stage genotype (HS_DAS_CIFAR, HS_DAS_IMAGENET, string, JSON or file); omit for a chain network")
    init_channels: int = option(36, "initial channels")
    layers: int = option(20, "cells of a chain network (not with --stages: stage networks take them from the DAGs)")
    auxiliary: bool = option(True, "auxiliary head")
    auxiliary_weight: float = option(0.4, "weight of the auxiliary head's loss (0: no head)")
    drop_path_prob: float = option(0.2, "final drop-path probability of a linear ramp from 0 (epoch e: p * e / epochs)")
    pool_bn: Optional[bool] = option(None, "pools followed by BN (unset: the network family's convention)")
    construction: str = option("released", "how a stage network (--stages) joins its stages: released (1x1 "
                                           "stage-input projections) or paper (the paper's CIFAR counts)",
                               choices=CONSTRUCTIONS)
    stage_primitives: Optional[Tuple[str, ...]] = option(
        None, "the stage genotype with only these stage ops, comma-separated (skip_connect,none: the paper's "
              "Table 6); other ops become skip_connect, so the connections stay", type=names_list)
    # data
    dataset: str = option("cifar10", "dataset (digits is embedded and offline)", choices=DATASETS)
    data_root: Optional[str] = option(None, "cifar10: folder holding cifar-10-batches-py; imagenet: folder with "
                                            "train/ and val/")
    download: bool = option(False, "cifar10: download into --data-root first")
    augment: bool = option(True, "the dataset's standard training augmentation")
    cutout: int = option(16, "cutout length (0 = off)")
    color_jitter: bool = option(False, "colour jitter (ImageNet recipe)")
    autoaugment: bool = option(False, "AutoAugment with torchvision's CIFAR-10 policy after crop and flip (cifar10, "
                                      "digits; needs the 'data' extra): the augmentation of the paper's AutoAugment row")
    train_subset: int = option(0, "use only the first N training images (0 = all)")
    test_subset: int = option(0, "use only the first N test images (0 = all)")
    num_workers: int = option(2, "DataLoader workers")
    data_on_device: bool = option(False, "keep the whole dataset on the device and augment there (digits, cifar10)")
    # optimisation
    epochs: int = option(600, "training epochs")
    batch_size: int = option(96, "batch per process (the global batch is batch_size x processes)")
    lr: float = option(0.025, "SGD learning rate for one process")
    scale_lr: bool = option(True, "multiply lr by the number of processes (DDP)")
    lr_min: float = option(0.0, "learning rate at the end of the schedule")
    schedule: str = option("cosine", "cosine (per epoch, DARTS), step (x decay per epoch), warmup_cosine (per step)",
                           choices=SCHEDULES)
    decay: float = option(0.97, "the step schedule's factor per epoch")
    warmup_epochs: int = option(0, "warmup_cosine: epochs of linear warm-up")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(3e-4, "SGD weight decay")
    grad_clip: float = option(5.0, "gradient-norm clip (0 = off)")
    label_smoothing: float = option(0.0, "label smoothing of the training loss (evaluation uses plain cross-entropy)")
    steps_per_epoch: Optional[int] = option(None, "cap on steps per epoch (quick runs; default: all)")
    eval_batches: Optional[int] = option(None, "cap on evaluation batches (default: the whole test set)")
    # system
    seed: int = option(0, "seed (rank r uses seed + r)")
    threads: Optional[int] = option(None, "torch intra-op CPU threads (unset: torch's default); a CPU run is "
                                          "bit-identical only at the same count on the same CPU ISA "
                                          "(config.json: torch_threads, torch_cpu_capability)")
    deterministic: bool = option(False, "deterministic kernels (slower on GPU)")
    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    amp: str = option("none", "mixed precision: bf16 (any device) or fp16 (CUDA)", choices=AMP_MODES)
    channels_last: bool = option(False, "channels-last memory format")
    compile: bool = option(False, "torch.compile the network")
    sync_bn: bool = option(False, "BatchNorm statistics over the global batch when running under torchrun")
    output: str = option("runs/train", "output folder")
    resume: bool = option(False, "continue the run checkpointed in --output")
    tensorboard: bool = option(True, "TensorBoard logs in OUTPUT/tb")
    progress: bool = option(True, "progress: a bar on a terminal, else a line every 30 s")
    eval_every: int = option(1, "evaluate every N epochs (and after the last)")

    def to_dict(self):
        return config_dict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


PRESETS = {
    # DARTS' train.py, which the paper's appendix says DARTS-family and Hc-DAS cells are evaluated
    # with; the H-DAS release trains its CIFAR networks with the same values.
    "cifar10": dict(dataset="cifar10", epochs=600, batch_size=96, lr=0.025, schedule="cosine",
                    weight_decay=3e-4, grad_clip=5.0, cutout=16, auxiliary=True,
                    auxiliary_weight=0.4, drop_path_prob=0.2, init_channels=36, layers=20,
                    label_smoothing=0.0, num_workers=2),
    # DARTS' train_imagenet.py (250 epochs, batch 128, lr 0.1, StepLR x0.97 per epoch, wd 3e-5,
    # label smoothing 0.1, auxiliary 0.4), also the paper's ImageNet recipe. The release's multi-GPU
    # script instead warms up and anneals per step: --schedule warmup_cosine --warmup-epochs 10
    # --lr-min 1e-4 (10 warm-up epochs, cosine to 1e-3 lr).
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


# What a dataset's preset changes for an architecture family (docs/training.md). The paper's
# appendix trains Hs-DAS on CIFAR-10 with batch 128, DARTS-family and Hc-DAS cells as DARTS does
# (batch 96), and its ImageNet Hs-DAS network at C = 39 (5.1 M parameters); the Hc-DAS and DARTS
# ImageNet chains keep DARTS' C = 48 (Hc-DAS: 578 M multiply-adds, the paper's figure).
FAMILY_PRESETS = {
    ("cifar10", "hs-das"): dict(batch_size=128),
    ("imagenet", "hs-das"): dict(init_channels=39),
}


def family(cell, stages):
    """The architecture family of a network: 'hs-das' (a stage genotype given), 'hc-das'
    (stage-specific cells in a chain) or 'darts' (one normal and one reduction cell)."""
    if stages is not None:
        return "hs-das"
    g = G.resolve(cell, "cell", (G.Genotype, G.StageCellsGenotype))
    return "hc-das" if isinstance(g, G.StageCellsGenotype) else "darts"


def make_config(preset="cifar10", check_data=True, **overrides):
    """A validated TrainConfig: the preset's values, its values for the network's family
    (FAMILY_PRESETS), then `overrides` (None values ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(names)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "layers" in given and given.get("stages") is not None:
        raise ValueError("layers (--layers) applies to chain networks, not with stages (--stages): a stage "
                         "network's cells are those of its DAGs")
    values = dict(PRESETS[preset])
    dataset = given.get("dataset", values["dataset"])
    kind = family(given.get("cell", TrainConfig.cell), given.get("stages"))
    values.update(FAMILY_PRESETS.get((dataset, kind), {}))
    values.update(given)
    return validate(TrainConfig(**values), check_data)


def _need(ok, name, expect, value):
    if not ok:
        raise ValueError(f"{name} must be {expect}, got {value!r}")


def _int(v, lo=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def validate(cfg, check_data=True):
    """Raise ValueError naming the first bad option; return cfg with its genotypes parsed (a copy
    when they were text). check_data=False skips the data_root requirement (printing a
    configuration needs no data)."""
    _need(cfg.dataset in DATASETS, "dataset", f"one of {DATASETS}", cfg.dataset)
    _need(not (cfg.autoaugment and cfg.dataset == "imagenet"), "autoaugment",
          "off for imagenet (it is torchvision's CIFAR-10 policy, for cifar10 and digits)", cfg.autoaugment)
    _need(cfg.construction in CONSTRUCTIONS, "construction", f"one of {CONSTRUCTIONS}", cfg.construction)
    _need(cfg.construction == "released" or cfg.stages is not None, "construction",
          "'released' for a chain network (the paper construction applies to stage networks, --stages)",
          cfg.construction)
    _need(cfg.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", cfg.schedule)
    for name in ("epochs", "batch_size", "init_channels", "layers", "eval_every"):
        _need(_int(getattr(cfg, name), 1), name, "an int >= 1", getattr(cfg, name))
    for name in ("cutout", "train_subset", "test_subset", "num_workers", "warmup_epochs", "seed"):
        _need(_int(getattr(cfg, name), 0), name, "an int >= 0", getattr(cfg, name))
    for name in ("steps_per_epoch", "eval_batches", "threads"):
        _need(getattr(cfg, name) is None or _int(getattr(cfg, name), 1), name, "an int >= 1 or None",
              getattr(cfg, name))
    _need(cfg.lr > 0, "lr", "> 0", cfg.lr)
    _need(0 <= cfg.lr_min <= cfg.lr, "lr_min", f"in [0, lr={cfg.lr}]", cfg.lr_min)
    _need(0 < cfg.decay <= 1, "decay", "in (0, 1]", cfg.decay)
    _need(cfg.decay == TrainConfig.decay or cfg.schedule == "step", "decay",
          f"left unset unless schedule is 'step' (the {cfg.schedule!r} schedule has no per-epoch factor)", cfg.decay)
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
    _need(bool(cfg.output), "output", "a folder path", cfg.output)
    if check_data and cfg.dataset in ("cifar10", "imagenet") and not cfg.data_root:
        raise ValueError(f"data_root is required for dataset {cfg.dataset!r} (the folder holding, or with "
                         f"--download receiving, {'cifar-10-batches-py' if cfg.dataset == 'cifar10' else 'train/ and val/'})")
    cell = G.resolve(cfg.cell, "cell", (G.Genotype, G.StageCellsGenotype))
    stages = None if cfg.stages is None else G.resolve(cfg.stages, "stages", (G.StageGenotype,))
    prims = cfg.stage_primitives
    if prims is not None:
        _need(stages is not None, "stage_primitives", "unset for a chain network (it swaps the ops of --stages)",
              prims)
        prims = tuple(prims)
        G.swap_stage_ops(stages, prims)  # raises on a bad set
    if cell is cfg.cell and stages is cfg.stages and prims == cfg.stage_primitives:
        return cfg
    return dataclasses.replace(cfg, cell=cell, stages=stages, stage_primitives=prims)


def network_stages(cfg):
    """The stage genotype the network is built from: cfg.stages, its ops swapped when
    cfg.stage_primitives is set (G.swap_stage_ops)."""
    if cfg.stages is None or cfg.stage_primitives is None:
        return cfg.stages
    return G.swap_stage_ops(cfg.stages, cfg.stage_primitives)


def has_aux_head(config):
    """Whether the network gets an auxiliary head (config: a TrainConfig's dict): one whose loss
    weighs 0 is not built (its parameters would get no gradient, which DDP refuses)."""
    return bool(config.get("auxiliary")) and config.get("auxiliary_weight", 0) > 0


# What a resumed run may change. Refused: the network, and what the checkpoint's optimiser and
# LR-schedule states (learning rates, the schedule's period, steps per epoch) would silently
# override. Free: where it runs and what it reports.
RESUME = ResumePolicy(
    refused={**dict.fromkeys(("cell", "stages", "dataset", "init_channels", "layers", "auxiliary", "pool_bn",
                                 "construction", "stage_primitives"), NETWORK),
             **dict.fromkeys(("lr", "scale_lr", "lr_min", "momentum", "weight_decay", "epochs", "schedule", "decay",
                              "warmup_epochs", "batch_size", "steps_per_epoch", "train_subset"), OPTIMISER)},
    free=frozenset(("resume", "output", "progress", "tensorboard", "num_workers", "download", "data_root")),
    genotypes=frozenset(("cell", "stages")),
    refused_when={"auxiliary_weight": (has_aux_head, NETWORK)},  # a weight of 0 builds no head
)
