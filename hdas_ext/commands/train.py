"""`hdas train`: train an evaluation network with a recipe preset; every recipe value can be
overridden by the option of the same name (e.g. --epochs, --batch-size, --lr, --amp bf16)."""
import argparse
import json
import typing
from dataclasses import MISSING, fields

from ..train.config import AMP_MODES, PRESETS, SCHEDULES, TrainConfig

_CHOICES = {"schedule": SCHEDULES, "amp": AMP_MODES, "dataset": ("digits", "cifar10", "imagenet")}
_HELP = {
    "cell": "cell genotype: library name (DARTS_V2, PDARTS, HC_DAS, ...), genotype string or JSON",
    "stages": "Hs-DAS stage genotype (HS_DAS_CIFAR, HS_DAS_IMAGENET, string or JSON); omit for a chain network",
    "resume": "'auto' (continue from OUTPUT/checkpoint.pt when present) or a checkpoint path; "
              "--resume alone means auto",
    "data_on_device": "keep the whole dataset on the device and augment there (digits, cifar10)",
    "scale_lr": "multiply lr by the number of processes (DDP)",
    "sync_bn": "BatchNorm statistics over the global batch when running under torchrun",
    "train_subset": "use only the first N training images (0 = all)",
    "max_train_steps": "cap optimizer steps per epoch (0 = whole epoch)",
}


def add_config_arguments(parser, skip=()):
    """One option per TrainConfig field, default None (= the preset's value)."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        base = f.default if f.default is not MISSING else None
        hint = hints[f.name]
        kind = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        help_text = _HELP.get(f.name, "") + f" (default: preset, else {base!r})"
        if f.name == "resume":
            parser.add_argument(flag, nargs="?", const="auto", default=None, help=help_text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, choices=_CHOICES.get(f.name), help=help_text)


def config_overrides(args, skip=()):
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train an evaluation network (DARTS / Hc-DAS / Hs-DAS) from a genotype",
        description="Train an evaluation network. Presets: " + ", ".join(
            f"{k} ({v['epochs']} epochs, batch {v['batch_size']}, lr {v['lr']})" for k, v in PRESETS.items())
        + ". Multi-GPU: torchrun --nproc_per_node N -m hdas_ext.cli train ...")
    p.add_argument("--preset", default="digits", choices=sorted(PRESETS),
                   help="recipe to start from (default: digits, the embedded offline dataset)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args):
    from ..train import make_config, train

    cfg = make_config(args.preset, check_data=not args.print_config, **config_overrides(args))
    if args.print_config:
        print(cfg.to_json())
        return 0
    summary = train(cfg)
    if summary.get("world", 1) == 1 or _is_main():
        print(json.dumps(summary))
    return 0


def _is_main():
    import os
    return os.environ.get("RANK", "0") == "0"
