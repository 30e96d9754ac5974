"""The `hdas` command line. Each subcommand lives in hdas_ext.commands.<name> and defines
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed args)."""
import argparse
import importlib
import os
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


# What bad options, names, files and genotypes raise, each with a message naming the culprit.
_USAGE_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except _USAGE_ERRORS as e:
        if os.environ.get("HDAS_DEBUG"):
            raise
        message = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
        raise SystemExit(f"hdas {args.command}: error: {message} (HDAS_DEBUG=1 shows the traceback)") from None


if __name__ == "__main__":
    sys.exit(main())
