"""Command-line options generated from a configuration dataclass: one option per field, its help,
group, choices and argparse details from the field's metadata (hdas_ext.runtime.option). `hdas
search` and `hdas train` build their options this way, so both spell a setting the same. argparse
only turns text into the field's type; the configuration checks the values (choices included), so
a setting is validated in one place whether it comes from the command line or from Python."""
import argparse
import typing
from dataclasses import MISSING, fields

_ARGPARSE_KEYS = ("nargs", "const", "type", "metavar")


def _option_type(hint):
    """int, float, str or bool from a field's annotation (Optional[X] -> X; a union with str -> str)."""
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    if not args:
        return hint
    return str if str in args else args[0]


def _shown(default, meta):
    """A default as it is typed on the command line: a tuple comma-separated, or space-separated
    where the option takes several values."""
    if not isinstance(default, tuple):
        return str(default)
    return (" " if "nargs" in meta else ",").join(map(str, default))


def add_config_options(parser, config_cls, skip=(), preset=False):
    """Add an option per field of `config_cls` (the field `f` as --f-with-dashes, or positional when
    its metadata says so). Every option defaults to None, meaning: the configuration's value, or
    with preset=True the preset's value, else the field's; --help shows which."""
    hints = typing.get_type_hints(config_cls)
    groups = {}
    for f in fields(config_cls):
        if f.name in skip:
            continue
        meta = f.metadata
        kind = _option_type(hints[f.name])
        kwargs = {k: meta[k] for k in _ARGPARSE_KEYS if k in meta}
        if "choices" in meta:
            kwargs.setdefault("metavar", "{" + ",".join(map(str, meta["choices"])) + "}")
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.setdefault("type", kind)
        if meta.get("positional"):
            parser.add_argument(f.name, help=meta.get("help"), **kwargs)
            continue
        default = f.default if f.default is not MISSING else None
        help_text = meta.get("help", "").replace("%", "%%")
        if preset:
            help_text += f" (default: preset, else {_shown(default, meta)})"
        elif default is not None:
            help_text += f" (default: {_shown(default, meta)})"
        elif "default" not in help_text:
            help_text += " (default: none)"
        group = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            group = groups[meta["group"]]
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, help=help_text.strip(), **kwargs)


def config_values(args, config_cls, skip=()):
    """The fields of `config_cls` given on the command line (options left out are None)."""
    return {f.name: getattr(args, f.name) for f in fields(config_cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}
