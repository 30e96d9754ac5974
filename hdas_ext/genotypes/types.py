"""Genotype data types and accessors (hdas_ext.genotypes.parse reads the published repr strings).

Conventions:
- ``Genotype`` (DARTS): ``normal``/``reduce`` are *flat* lists of ``(op, input_state)`` tuples,
  two consecutive pairs per intermediate node; states 0 and 1 are the cell inputs, state i+2 is
  node i. ``*_concat`` are lists of state indices.
- ``StageCellsGenotype`` (Hc-DAS; ``Genotype3`` in the released code): five stage-specific cells in
  the same flat format.
- ``StageGenotype`` (Hs-DAS; ``Genotype2`` in the released code): ``DAGx`` is *nested*: one entry
  per cell of stage x, each a list of two ``(op, state)`` tuples (state 0/1 = the stage inputs,
  state j+2 = cell j); ``DAGx_concat`` are the state indices concatenated into the stage output.
"""
from typing import List, NamedTuple, Tuple

Pair = Tuple[str, int]


class Genotype(NamedTuple):
    normal: List[Pair]
    normal_concat: List[int]
    reduce: List[Pair]
    reduce_concat: List[int]


class StageCellsGenotype(NamedTuple):
    normal1: List[Pair]
    normal1_concat: List[int]
    reduce1: List[Pair]
    reduce1_concat: List[int]
    normal2: List[Pair]
    normal2_concat: List[int]
    reduce2: List[Pair]
    reduce2_concat: List[int]
    normal3: List[Pair]
    normal3_concat: List[int]


class StageGenotype(NamedTuple):
    DAG1: List[List[Pair]]
    DAG1_concat: List[int]
    DAG2: List[List[Pair]]
    DAG2_concat: List[int]
    DAG3: List[List[Pair]]
    DAG3_concat: List[int]


GENOTYPE_TYPES = {cls.__name__: cls for cls in (Genotype, StageCellsGenotype, StageGenotype)}

# The released H-DAS code's names, which published genotype strings and code use: read wherever a
# type name is read (parse, from_json), importable as aliases.
Genotype2, Genotype3 = StageGenotype, StageCellsGenotype
TYPE_NAMES = {**GENOTYPE_TYPES, "Genotype2": StageGenotype, "Genotype3": StageCellsGenotype}


def cell_nodes(flat):
    """Group a flat DARTS gene into nodes: ``[[pair, pair], ...]`` (node i = pairs 2i, 2i+1)."""
    flat = list(flat)
    if len(flat) % 2:
        raise ValueError(f"flat cell gene must have an even number of (op, input) pairs, got {len(flat)}")
    return [[tuple(flat[2 * i]), tuple(flat[2 * i + 1])] for i in range(len(flat) // 2)]


def flatten_nodes(nodes, what="cell"):
    """Inverse of :func:`cell_nodes`: nested node list -> flat list of pairs. Every node must hold
    exactly two pairs: the flat form cannot say where a node of another size ends."""
    for j, node in enumerate(nodes):
        if len(node) != 2:
            raise ValueError(f"{what}[{j}]: a cell node takes 2 (op, input) pairs, got {len(node)}")
    return [tuple(pair) for node in nodes for pair in node]


def cells(g):
    """The cells of a Genotype or StageCellsGenotype as ``[(name, flat_gene, concat), ...]`` in field order."""
    if isinstance(g, StageGenotype):
        raise TypeError("cells() takes a Genotype or StageCellsGenotype; use stages() for a StageGenotype")
    if not isinstance(g, (Genotype, StageCellsGenotype)):
        raise TypeError(f"cells() takes a Genotype or StageCellsGenotype, got {type(g).__name__}")
    names = g._fields[0::2]
    return [(name, getattr(g, name), list(getattr(g, name + "_concat"))) for name in names]


def stages(g2):
    """The stages of a StageGenotype as ``[(dag, concat), ...]`` (DAG1, DAG2, DAG3)."""
    if not isinstance(g2, StageGenotype):
        raise TypeError(f"stages() takes a StageGenotype, got {type(g2).__name__}")
    return [(g2.DAG1, list(g2.DAG1_concat)), (g2.DAG2, list(g2.DAG2_concat)),
            (g2.DAG3, list(g2.DAG3_concat))]


# Ops a genotype may name: the search lists plus the two extra DARTS ops hdas_ext.nn.OPS defines.
KNOWN_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "sep_conv_7x7", "conv_7x1_1x7")


def _check_pair(pair, limit, where):
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise ValueError(f"{where}: expected an (op, input) pair, got {pair!r}")
    op, src = pair
    if op not in KNOWN_OPS:
        raise ValueError(f"{where}: unknown op {op!r}; expected one of {', '.join(KNOWN_OPS)}")
    if isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < limit:
        raise ValueError(f"{where}: input state {src!r} must be an int in [0, {limit})")


def _check_concat(concat, num_states, where):
    if not concat:
        raise ValueError(f"{where}: concat must list at least one state")
    for s in concat:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < num_states:
            raise ValueError(f"{where}: concat state {s!r} must be an int in [0, {num_states})")
    if len(set(concat)) != len(concat):
        raise ValueError(f"{where}: concat {list(concat)} repeats a state")


def validate(g):
    """Raise ValueError naming the field if ``g`` is not a well-formed genotype; return ``g``.

    Cells: node i may read states [0, i+2). Stages: cell j may read states [0, j+2). Every node /
    cell has exactly two inputs (the published format)."""
    if isinstance(g, StageGenotype):
        for x, (dag, concat) in enumerate(stages(g), start=1):
            if not dag:
                raise ValueError(f"DAG{x}: a stage needs at least one cell")
            for j, cell in enumerate(dag):
                if not isinstance(cell, list) or len(cell) != 2:
                    raise ValueError(f"DAG{x}[{j}]: expected a list of two (op, state) pairs, got {cell!r}")
                for pair in cell:
                    _check_pair(pair, j + 2, f"DAG{x}[{j}]")
            _check_concat(concat, len(dag) + 2, f"DAG{x}_concat")
        return g
    for name, flat, concat in cells(g):
        if not flat or len(flat) % 2:
            raise ValueError(f"{name}: expected a non-empty flat list with two pairs per node, got {len(flat)} pairs")
        for i, node in enumerate(cell_nodes(flat)):
            for pair in node:
                _check_pair(pair, i + 2, f"{name} node {i}")
        _check_concat(concat, len(flat) // 2 + 2, f"{name}_concat")
    return g
