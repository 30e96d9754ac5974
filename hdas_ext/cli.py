"""The `hdas` command line. Each subcommand lives in hdas_ext.commands.<name> and defines
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed args).
Command modules import optional packages (graphviz, tensorboard, ...) only where they are used,
so `hdas --help` and `hdas space-size` work on a bare install."""
import argparse
import os
import sys

from .commands import plot, random_baseline, search, space_size, train
from .extras import install_hint

COMMANDS = (space_size, plot, search, train, random_baseline)

# What bad options, names, files and genotypes raise, each with a message naming the culprit.
_USAGE_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError)


def build_parser():
    parser = argparse.ArgumentParser(prog="hdas", description="H-DAS: hierarchical differentiable architecture search")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv=None):
    """Run one command. Its usage errors, and a missing optional package, end in one line naming
    the culprit (HDAS_DEBUG=1 raises them with their traceback instead)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ModuleNotFoundError, *_USAGE_ERRORS) as e:
        hint = install_hint(e.name) if isinstance(e, ModuleNotFoundError) else None
        if os.environ.get("HDAS_DEBUG") or (isinstance(e, ModuleNotFoundError) and hint is None):
            raise
        message = hint or (e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e))
        raise SystemExit(f"hdas {args.command}: error: {message} (HDAS_DEBUG=1 shows the traceback)") from None


if __name__ == "__main__":
    sys.exit(main())
