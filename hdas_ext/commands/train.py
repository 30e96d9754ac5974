"""`hdas train`: train an evaluation network with a recipe preset; every recipe value can be
overridden by the option of the same name (e.g. --epochs, --batch-size, --lr, --amp bf16)."""
import json

from ..runtime import is_main_process
from ..train.config import PRESETS, TrainConfig
from .options import add_config_options, config_values


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train an evaluation network (DARTS / Hc-DAS / Hs-DAS) from a genotype",
        description="Train an evaluation network. Presets: " + ", ".join(
            f"{k} ({v['epochs']} epochs, batch {v['batch_size']}, lr {v['lr']})" for k, v in PRESETS.items())
        + ". Multi-GPU: torchrun --nproc_per_node N -m hdas_ext.cli train ...")
    p.add_argument("--preset", default="digits", choices=sorted(PRESETS),
                   help="recipe to start from (default: digits, the embedded offline dataset)")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    add_config_options(p, TrainConfig, preset=True)
    p.set_defaults(func=run)


def run(args):
    from ..train import make_config, train

    cfg = make_config(args.preset, check_data=not args.print_config, **config_values(args, TrainConfig))
    if args.print_config:
        print(cfg.to_json())
        return 0
    summary = train(cfg)
    if is_main_process():
        print(json.dumps(summary))
    return 0
