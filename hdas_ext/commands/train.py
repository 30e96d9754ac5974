"""`hdas train`: train an evaluation network with a recipe preset; every recipe value can be
overridden by the option of the same name (e.g. --epochs, --batch-size, --lr, --amp bf16)."""
import json

from ..runtime import is_main_process
from ..train.config import FAMILY_PRESETS, PRESETS, TrainConfig
from .options import add_config_options, config_values


def _family_notes():
    return "; ".join(f"{dataset} with {family} networks: " + ", ".join(f"{k} {v}" for k, v in values.items())
                     for (dataset, family), values in FAMILY_PRESETS.items())


def register(subparsers):
    p = subparsers.add_parser(
        "train", help="train an evaluation network (DARTS / Hc-DAS / Hs-DAS) from a genotype",
        description="Train an evaluation network. Presets: " + ", ".join(
            f"{k} ({v['epochs']} epochs, batch {v['batch_size']}, lr {v['lr']})" for k, v in PRESETS.items())
        + ". A preset adapts to the network's family, chosen from the genotypes given (hs-das: --stages "
          "given; hc-das: stage-specific cells; darts: the rest): " + _family_notes() + ". Any option given "
          "wins. Multi-GPU: torchrun --nproc_per_node N -m hdas_ext.cli train ...")
    p.add_argument("--preset", default="digits", metavar="{" + ",".join(sorted(PRESETS)) + "}",
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
