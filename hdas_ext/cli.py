"""The `hdas` command line. Each subcommand lives in hdas_ext.commands.<name> and defines
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed args)."""
import argparse
import importlib
import sys

# One line per subcommand module; kept explicit so a missing module is an error, not a silence.
COMMANDS = [
    "space_size",
    "plot",
    "search",
    "train",
    "random_baseline",
]


def build_parser():
    parser = argparse.ArgumentParser(prog="hdas", description="H-DAS: hierarchical differentiable architecture search")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"hdas_ext.commands.{name}").register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
