"""The `hdas` command line. Each subcommand lives in hdas_ext.commands.<name> and defines
`register(subparsers)`, which adds its parser and sets `func` (called with the parsed args).
Command modules import optional packages (graphviz, tensorboard, ...) only where they are used,
so `hdas --help` and `hdas space-size` work on a bare install."""
import argparse
import difflib
import os
import sys

from .commands import plot, random_baseline, search, space_size, train
from .extras import install_hint

COMMANDS = (space_size, plot, search, train, random_baseline)

# What bad options, names, files, genotypes and checkpoints raise, each with a message naming the
# culprit; OSError covers files that cannot be read or written and downloads that fail.
_USAGE_ERRORS = (ValueError, TypeError, KeyError, OSError)
INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def build_parser():
    parser = argparse.ArgumentParser(prog="hdas", description="H-DAS: hierarchical differentiable architecture search",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    for p in sub.choices.values():
        p.allow_abbrev = False  # one spelling per option: no prefixes of it
    return parser


def _parse(parser, argv):
    """parse_args, but an unknown option is reported by its subcommand's parser (its usage, and
    the option it may have meant)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = parser._subparsers._group_actions[0].choices[args.command]
        known = [s for a in sub._actions for s in a.option_strings]
        hints = [f"{x} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(x, known, 1)) else x
                 for x in extra]
        sub.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def _message(e):
    hint = install_hint(e.name) if isinstance(e, ModuleNotFoundError) else None
    return hint or (e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e))


def main(argv=None):
    """Run one command. Its usage errors, unreadable files and a missing optional package end in
    one line naming the culprit (HDAS_DEBUG=1 raises them with their traceback instead); Ctrl-C
    ends in one line saying how to continue, with exit code 130."""
    args = _parse(build_parser(), argv)
    debug = os.environ.get("HDAS_DEBUG")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(f"hdas {args.command}: {str(e) or 'interrupted'}", file=sys.stderr, flush=True)
        return INTERRUPTED
    except (ModuleNotFoundError, *_USAGE_ERRORS) as e:
        if debug or (isinstance(e, ModuleNotFoundError) and install_hint(e.name) is None):
            raise
        raise SystemExit(f"hdas {args.command}: error: {_message(e)} (HDAS_DEBUG=1 shows the traceback)") from None


if __name__ == "__main__":
    sys.exit(main())
