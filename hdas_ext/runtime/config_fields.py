"""What the search and training configurations share: fields that carry their command-line help,
and the plain dict a configuration is saved as (config.json, checkpoints)."""
import dataclasses
import enum

from .. import genotypes as G


def option(default, help, **cli):
    """A dataclass field with its command-line face in the metadata: `help`, and optionally
    group, choices, positional, nargs, const, type, metavar (hdas_ext.commands reads them)."""
    return dataclasses.field(default=default, metadata=dict(help=help, **cli))


def genotype_text(g):
    """A genotype as text: its library name when it is one, else its JSON."""
    for name in G.names():
        if G.LIBRARY[name] == g:
            return name
    return G.to_json(g)


def config_dict(cfg):
    """A configuration as plain values: genotype objects as text, enums as their values, tuples as lists."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, tuple(G.GENOTYPE_TYPES.values())):
            v = genotype_text(v)
        elif isinstance(v, enum.Enum):
            v = v.value
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out
