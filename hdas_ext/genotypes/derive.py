"""Discrete architectures from architecture weights (docs/algorithms.md).

Rules, both choosing for every edge the best op other than ``'none'`` (found by name, so the
primitive list may have it first (DARTS) or last (H-DAS)) and keeping the k strongest edges per node:
- ``'darts'`` (quark0/darts): edge strength = largest non-none *softmax* probability of the row
  (softmax over all ops, 'none' included);
- ``'hdas'`` (H-DAS / pt.darts): edge strength = largest non-none *raw logit*.
The op choice per edge is the same under both rules (softmax is monotone); the ranking of edges
can differ. Ties go to the lower op index / lower edge index. Pairs are listed strongest first.

Weights may be torch tensors, numpy arrays or nested lists; either one tensor per node (ragged
list) or all edges stacked row-wise in one 2-D array.
"""
import math

from ..primitives import DARTS_PRIMITIVES, STAGE_PRIMITIVES
from ..stage_geometry import check_window, window_inputs, window_sources

RULES = ("darts", "hdas")


def _rows(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    if hasattr(x, "tolist"):
        x = x.tolist()
    return [[float(v) for v in row] for row in x]


def _depth(x):
    if hasattr(x, "dim"):
        return x.dim()
    if hasattr(x, "ndim"):
        return x.ndim
    if isinstance(x, (list, tuple)):
        return 1 + (_depth(x[0]) if x else 0)
    return 0


def _split(alpha_rows, edges_per_node, what):
    """Per-node row lists from either one stacked 2-D array or a list of per-node 2-D arrays;
    ``edges_per_node(n)`` gives the edge counts of an n-node layout."""
    depth = _depth(alpha_rows)
    if depth == 2:
        flat = _rows(alpha_rows)
        n, acc = 0, 0
        while acc < len(flat):
            n += 1
            acc = sum(edges_per_node(n))
        if acc != len(flat) or not flat:
            raise ValueError(f"{what}: {len(flat)} stacked weight rows match no node count "
                             f"(nearest layout {edges_per_node(n)} has {acc} rows)")
        nodes, start = [], 0
        for c in edges_per_node(n):
            nodes.append(flat[start:start + c])
            start += c
        return nodes
    if depth != 3:
        raise ValueError(f"{what}: weights must be one 2-D array of stacked edge rows or a list of "
                         f"per-node 2-D arrays, got {depth} dimensions")
    nodes = [_rows(a) for a in alpha_rows]
    expected = edges_per_node(len(nodes))
    got = [len(r) for r in nodes]
    if got != expected:
        raise ValueError(f"{what}: node edge counts {got} do not match the expected {expected}")
    return nodes


def _best_op(row, none_index):
    best = None
    for k, v in enumerate(row):
        if k != none_index and (best is None or v > row[best]):
            best = k
    return best


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _select(rows, primitives, rule, k, first_state, edge_weights=None):
    """One node: the k strongest edges as (op, state) pairs; edge e reads state first_state + e.
    edge_weights (PC-DARTS' edge normalisation): edge e's strength is scaled by edge_weights[e]."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    P = len(primitives)
    for r in rows:
        if len(r) != P:
            raise ValueError(f"each weight row must have {P} entries (one per primitive {list(primitives)}), got {len(r)}")
    if k < 1 or k > len(rows):
        raise ValueError(f"k must be in [1, {len(rows)}] for a node with {len(rows)} edges, got {k}")
    none_index = primitives.index("none") if "none" in primitives else -1
    if P - (none_index >= 0) < 1:
        raise ValueError("primitives must contain at least one op other than 'none'")
    scored = []
    for e, row in enumerate(rows):
        vals = _softmax(row) if rule == "darts" else row
        op = _best_op(vals, none_index)
        scored.append((-vals[op] * (1.0 if edge_weights is None else edge_weights[e]), e, op))
    scored.sort()
    return [(primitives[op], first_state + e) for _, e, op in scored[:k]]


def cell_edge_counts(n):
    """A DARTS cell: node i reads all i+2 earlier states."""
    return [i + 2 for i in range(n)]


def stage_edge_counts(n, window):
    """A stage with window m: cell j reads the min(j+2, m) most recent states."""
    return [window_inputs(j, window) for j in range(n)]


def derive_cell(alpha_rows, primitives=DARTS_PRIMITIVES, rule="darts", k=2, multiplier=None, edge_weights=None):
    """Derive a DARTS-style cell. Returns ``(flat_gene, concat)`` with concat = the last
    `multiplier` nodes, the states the searched cell concatenated (None: all nodes), as DARTS does.
    edge_weights: one weight per edge (PC-DARTS' normalised betas), scaling each edge's strength;
    PC-DARTS ranks by softmax probability times edge weight (rule 'darts')."""
    nodes = _split(alpha_rows, cell_edge_counts, "derive_cell")
    if edge_weights is not None:
        if rule != "darts":
            raise ValueError(f"derive_cell: edge_weights scale softmax probabilities (rule 'darts'), got rule {rule!r}")
        flat = [float(v) for v in (edge_weights.detach().cpu().tolist() if hasattr(edge_weights, "detach")
                                   else edge_weights)]
        counts = [len(rows) for rows in nodes]
        if len(flat) != sum(counts):
            raise ValueError(f"derive_cell: edge_weights must have one entry per edge ({sum(counts)}), got {len(flat)}")
        starts = [sum(counts[:i]) for i in range(len(counts))]
        edge_weights = [flat[s:s + c] for s, c in zip(starts, counts)]
    n = len(nodes)
    multiplier = n if multiplier is None else multiplier
    if isinstance(multiplier, bool) or not isinstance(multiplier, int) or not 1 <= multiplier <= n:
        raise ValueError(f"multiplier must be an int in [1, {n}] (the cell's nodes), got {multiplier!r}")
    gene = []
    for i, rows in enumerate(nodes):
        gene.extend(_select(rows, tuple(primitives), rule, k, 0, None if edge_weights is None else edge_weights[i]))
    return gene, list(range(n + 2 - multiplier, n + 2))


def derive_stage(alpha_rows, primitives=STAGE_PRIMITIVES, window=3, k=2, rule="hdas"):
    """Derive one stage DAG. Cell j has min(j+2, window) edges from the most recent states, edge e
    reading state e + max(0, j+2-window). window must be in [2, N+1] (N+1 = no window, every cell
    sees every earlier state). Returns ``(dag, concat)`` with concat = the last two cells
    ``[N, N+1]`` (plain Hs-DAS output; see :func:`derive_stage_length` for the searched length)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2, got {window!r}")
    nodes = _split(alpha_rows, lambda n: stage_edge_counts(n, window), "derive_stage")
    n = len(nodes)
    check_window(window, n)
    dag = [_select(rows, tuple(primitives), rule, k, window_sources(j, window)[0]) for j, rows in enumerate(nodes)]
    return dag, [n, n + 1]


def derive_stage_length(beta, n_min):
    """Distribution search: stage length N = n_min + argmax(beta) (first maximum on ties) and
    concat = the last two cells of that length, states ``[N, N+1]``. Returns ``(N, concat)``."""
    if isinstance(n_min, bool) or not isinstance(n_min, int) or n_min < 1:
        raise ValueError(f"n_min must be an int >= 1, got {n_min!r}")
    if hasattr(beta, "detach"):
        beta = beta.detach().cpu().reshape(-1)
    if hasattr(beta, "tolist"):
        beta = beta.tolist()
    b = [float(v[0] if isinstance(v, (list, tuple)) else v) for v in beta]  # (K,) or (K, 1)
    if not b:
        raise ValueError("beta must have at least one entry")
    best = max(range(len(b)), key=lambda i: (b[i], -i))
    length = n_min + best
    return length, [length, length + 1]


def derive_genotype(alpha_normal, alpha_reduce, primitives=DARTS_PRIMITIVES, rule="darts", k=2):
    """A DARTS ``Genotype`` from the normal and reduction weights."""
    from .types import Genotype
    normal, normal_concat = derive_cell(alpha_normal, primitives, rule, k)
    reduce, reduce_concat = derive_cell(alpha_reduce, primitives, rule, k)
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def derive_stage_cells_genotype(alpha_sets, primitives, rule="hdas", k=2):
    """A ``StageCellsGenotype`` from five weight sets in field order (normal1, reduce1, normal2, reduce2,
    normal3), as the Hc-DAS search holds them."""
    from .types import StageCellsGenotype
    if len(alpha_sets) != 5:
        raise ValueError(f"alpha_sets must hold 5 weight sets (normal1, reduce1, normal2, reduce2, normal3), got {len(alpha_sets)}")
    fields = []
    for a in alpha_sets:
        fields.extend(derive_cell(a, primitives, rule, k))
    return StageCellsGenotype(*fields)


def derive_stage_genotype(stage_alphas, primitives=STAGE_PRIMITIVES, window=3, k=2, rule="hdas",
                     betas=None, n_min=None):
    """A ``StageGenotype`` from three per-stage weight sets. With ``betas`` (one per stage) the concat
    comes from :func:`derive_stage_length` (cells after the chosen pair stay in the DAG and are
    dead; prune them with :func:`prune_dead_cells`)."""
    from .types import StageGenotype
    if len(stage_alphas) != 3:
        raise ValueError(f"stage_alphas must hold 3 stages, got {len(stage_alphas)}")
    if betas is not None and (len(betas) != 3 or n_min is None):
        raise ValueError("betas needs one entry per stage (3) and n_min")
    fields = []
    for s, a in enumerate(stage_alphas):
        dag, concat = derive_stage(a, primitives, window, k, rule)
        if betas is not None:
            length, concat = derive_stage_length(betas[s], n_min)
            if length > len(dag):
                raise ValueError(f"stage {s + 1}: beta selects length {length} but the stage has {len(dag)} cells")
        fields.extend([dag, concat])
    return StageGenotype(*fields)
