"""Pictures of cells and stage DAGs with graphviz, in the paper's colours.

Cells (DARTS style): inputs c_{k-2}, c_{k-1} darkseagreen2; intermediate nodes lightblue; output
c_{k} palegoldenrod; every concat node feeds c_{k}. Stages (H-DAS style): inputs darkgoldenrod1;
cells indianred1 pentagons; output honeydew2; only concat states feed the output; dead cells (no
path to the output) are drawn dashed. Edges are labelled with their op.
Drawing needs the graphviz Python package (the ``viz`` extra), imported on first use so that the
rest of the package works without it; rendering needs the graphviz ``dot`` binary, and
:func:`render` falls back to writing the .dot source.
"""
import os

from .extras import require
from .genotypes import StageGenotype, cell_nodes, cells, dead_cells, flatten_nodes, stages

FORMATS = ("png", "svg", "pdf")
CELL_COLOURS = {"input": "darkseagreen2", "node": "lightblue", "output": "palegoldenrod"}
STAGE_COLOURS = {"input": "darkgoldenrod1", "cell": "indianred1", "output": "honeydew2"}

_GRAPH = dict(rankdir="LR", fontsize="20", fontname="times")
_NODE = dict(style="filled", shape="rect", align="center", fontsize="20", height="0.5", width="0.5",
             penwidth="2", fontname="times")
_EDGE = dict(fontsize="16", fontname="times")


def _graphviz():
    return require("graphviz")


def _add_cell(g, flat, concat, prefix=""):
    nodes = cell_nodes(flat)
    names = [f"{prefix}c_{{k-2}}", f"{prefix}c_{{k-1}}"] + [f"{prefix}{i}" for i in range(len(nodes))]
    label = lambda n: n[len(prefix):]
    for n in names[:2]:
        g.node(n, label=label(n), fillcolor=CELL_COLOURS["input"])
    for n in names[2:]:
        g.node(n, label=label(n), fillcolor=CELL_COLOURS["node"])
    for i, node in enumerate(nodes):
        for op, src in node:
            g.edge(names[src], names[i + 2], label=op, fillcolor="gray")
    out = f"{prefix}c_{{k}}"
    g.node(out, label="c_{k}", fillcolor=CELL_COLOURS["output"])
    for s in concat:
        g.edge(names[s], out, fillcolor="gray")


def _add_stage(g, dag, concat, prefix=""):
    names = [f"{prefix}c_{{k-2}}", f"{prefix}c_{{k-1}}"] + [f"{prefix}{j}" for j in range(len(dag))]
    dead = set(dead_cells(dag, concat))
    for n in names[:2]:
        g.node(n, label=n[len(prefix):], fillcolor=STAGE_COLOURS["input"])
    for j, n in enumerate(names[2:]):
        style = "filled,dashed" if j in dead else "filled"
        g.node(n, label=str(j), fillcolor=STAGE_COLOURS["cell"], shape="pentagon", style=style)
    for j, cell in enumerate(dag):
        for op, src in cell:
            g.edge(names[src], names[j + 2], label=op, fillcolor="gray",
                   style="dashed" if j in dead else "solid")
    out = f"{prefix}c_{{k}}"
    g.node(out, label="c_{k}", fillcolor=STAGE_COLOURS["output"])
    for s in concat:
        g.edge(names[s], out, fillcolor="gray")


def _digraph(caption=None):
    g = _graphviz().Digraph(graph_attr=dict(_GRAPH), node_attr=dict(_NODE), edge_attr=dict(_EDGE), engine="dot")
    if caption:
        g.attr(label=caption, labelloc="t")
    return g


def cell_graph(flat, concat, caption=None):
    """One DARTS cell (flat or nested gene)."""
    if flat and isinstance(flat[0], list):
        flat = flatten_nodes(flat)
    g = _digraph(caption)
    _add_cell(g, flat, concat)
    return g


def stage_graph(dag, concat, caption=None):
    """One stage DAG (one entry per cell, two (op, state) pairs each)."""
    g = _digraph(caption)
    _add_stage(g, dag, concat)
    return g


def genotype_graph(genotype, caption=None):
    """A whole genotype: each cell (Genotype, StageCellsGenotype) or stage (StageGenotype) in its own box."""
    g = _digraph(caption)
    if isinstance(genotype, StageGenotype):
        parts = [(f"DAG{i}", d, c, _add_stage) for i, (d, c) in enumerate(stages(genotype), start=1)]
    else:
        parts = [(name, flat, c, _add_cell) for name, flat, c in cells(genotype)]
    # rankdir=LR stacks clusters bottom-up; add them reversed so the first part is drawn on top
    for name, gene, concat, add in reversed(parts):
        with g.subgraph(name=f"cluster_{name}") as sub:
            sub.attr(label=name, style="rounded", color="gray")
            add(sub, gene, concat, prefix=f"{name}/")
    return g


def dot_available():
    """Whether the graphviz ``dot`` binary runs (needs the graphviz Python package too)."""
    graphviz = _graphviz()
    try:
        graphviz.version()
        return True
    except graphviz.ExecutableNotFound:
        return False


def render(graph, path, format=None):
    """Render ``graph`` to ``path`` (format from the extension or ``format``). Returns the path
    written. Without the ``dot`` binary, writes ``<path without extension>.dot`` instead and raises
    RuntimeError naming that file and the command that renders it."""
    root, ext = os.path.splitext(path)
    fmt = format or ext.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r} (from path {path!r})")
    graphviz = _graphviz()
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        dot_path = root + ".dot"
        with open(dot_path, "w") as f:
            f.write(graph.source)
        raise RuntimeError(f"graphviz 'dot' binary not found; wrote the source to {dot_path}. "
                           f"Install graphviz (e.g. apt-get install graphviz) and run: "
                           f"dot -T{fmt} {dot_path} -o {path}") from None
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
