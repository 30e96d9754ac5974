"""Derivation on hand-constructed weights whose answers are known."""
import math
import re

import pytest
import torch

import hdas_ext.genotypes as G
from hdas_ext.primitives import DARTS_PRIMITIVES, HDAS_PRIMITIVES, STAGE_PRIMITIVES


def row(primitives, **logits):
    return [logits.get(p, 0.0) for p in primitives]


def cell_rows(primitives):
    """4-node cell. Node 1 is built so that the two rules disagree:
    edge 0: max_pool 5.0 but six other ops at 4.9 -> softmax best ~0.155, raw 5.0
    edge 1: sep_conv_3x3 3.0, rest 0 -> softmax ~0.742, raw 3.0
    edge 2: skip_connect 2.0, rest 0 -> softmax ~0.514, raw 2.0
    DARTS keeps edges 1, 2; H-DAS keeps edges 0, 1. 'none' is the largest entry of several rows
    and must never be chosen."""
    p = primitives
    crowd = {q: 4.9 for q in p if q not in ("none", "max_pool_3x3")}
    return [
        [row(p, none=9.0, dil_conv_5x5=1.0), row(p, avg_pool_3x3=2.0, none=7.0)],
        [row(p, max_pool_3x3=5.0, **crowd), row(p, sep_conv_3x3=3.0), row(p, skip_connect=2.0)],
        [row(p, sep_conv_5x5=1.0), row(p), row(p, none=50.0, dil_conv_3x3=0.5), row(p, sep_conv_3x3=3.0)],
        [row(p, skip_connect=1.0), row(p), row(p), row(p, sep_conv_3x3=0.2), row(p, dil_conv_5x5=4.0)],
    ]


def test_softmax_numbers_used_in_the_construction():
    edge0 = torch.tensor(cell_rows(DARTS_PRIMITIVES)[1][0]).softmax(0).max().item()
    assert math.isclose(edge0, math.exp(5) / (1 + math.exp(5) + 6 * math.exp(4.9)), rel_tol=1e-6)
    assert edge0 < 0.2 < 0.5 < math.exp(2) / (7 + math.exp(2)) < math.exp(3) / (7 + math.exp(3))


@pytest.mark.parametrize("primitives", [DARTS_PRIMITIVES, HDAS_PRIMITIVES], ids=["none_first", "none_last"])
def test_cell_rules(primitives):
    rows = cell_rows(primitives)
    darts, concat = G.derive_cell([torch.tensor(r) for r in rows], primitives, rule="darts")
    assert concat == [2, 3, 4, 5]
    assert darts == [("avg_pool_3x3", 1), ("dil_conv_5x5", 0),
                     ("sep_conv_3x3", 1), ("skip_connect", 2),
                     ("sep_conv_3x3", 3), ("sep_conv_5x5", 0),
                     ("dil_conv_5x5", 4), ("skip_connect", 0)]
    hdas, _ = G.derive_cell(rows, primitives, rule="hdas")
    assert hdas[2:4] == [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]
    assert hdas[:2] == darts[:2] and hdas[4:] == darts[4:]
    # one stacked 14 x P array gives the same answer as the per-node list
    stacked = torch.tensor([r for node in rows for r in node])
    assert G.derive_cell(stacked, primitives, rule="darts")[0] == darts
    # the concat is the last `multiplier` nodes, the states the searched cell concatenated
    assert G.derive_cell(stacked, primitives, multiplier=2) == (darts, [4, 5])
    with pytest.raises(ValueError, match=re.escape("multiplier must be an int in [1, 4]")):
        G.derive_cell(stacked, primitives, multiplier=5)
    g = G.derive_genotype(stacked, stacked, primitives, rule="hdas")
    assert G.validate(g).normal == hdas


def test_cell_edge_weights_scale_edge_strength():
    """PC-DARTS' edge normalisation: an edge's strength is its best op's probability times its
    normalised edge weight; the op chosen per edge does not change."""
    rows = cell_rows(DARTS_PRIMITIVES)
    darts, _ = G.derive_cell(rows, DARTS_PRIMITIVES, rule="darts")
    flat = [1.0] * 14
    assert G.derive_cell(rows, DARTS_PRIMITIVES, edge_weights=flat)[0] == darts
    # node 1 (edges 2, 3, 4): darts keeps edges 1 and 2 (sep 0.742, skip 0.514); weighting edge 2
    # of the node (skip) down and edge 0 (max_pool, ~0.155) up swaps skip for max_pool
    flat[2:5] = [6.0, 1.0, 0.1]
    got, _ = G.derive_cell(rows, DARTS_PRIMITIVES, edge_weights=torch.tensor(flat))
    assert got[2:4] == [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]
    assert got[:2] == darts[:2] and got[4:] == darts[4:]
    with pytest.raises(ValueError, match=r"edge_weights must have one entry per edge \(14\), got 13"):
        G.derive_cell(rows, DARTS_PRIMITIVES, edge_weights=flat[:13])
    with pytest.raises(ValueError, match="edge_weights scale softmax probabilities"):
        G.derive_cell(rows, DARTS_PRIMITIVES, rule="hdas", edge_weights=flat)


def test_cell_errors():
    with pytest.raises(ValueError, match="rule"):
        G.derive_cell(torch.zeros(14, 8), DARTS_PRIMITIVES, rule="softmax")
    with pytest.raises(ValueError, match="13 stacked weight rows"):
        G.derive_cell(torch.zeros(13, 8), DARTS_PRIMITIVES)
    with pytest.raises(ValueError, match="8 entries"):
        G.derive_cell(torch.zeros(14, 7), DARTS_PRIMITIVES)
    with pytest.raises(ValueError, match="edge counts"):
        G.derive_cell([torch.zeros(2, 8), torch.zeros(2, 8)], DARTS_PRIMITIVES)


def first_edge_strongest(counts):
    # edge e of every node gets skip_connect logit 10 - e: the top 2 are always edges 0 and 1.
    return [torch.tensor([row(STAGE_PRIMITIVES, skip_connect=10.0 - e, none=100.0) for e in range(c)])
            for c in counts]


@pytest.mark.parametrize("window, expected", [
    (2, [[0, 1], [1, 2], [2, 3], [3, 4]]),   # window 2: cell j reads states j, j+1
    (3, [[0, 1], [0, 1], [1, 2], [2, 3]]),   # edge e of cell j >= 1 reads state e + j - 1
    (4, [[0, 1], [0, 1], [0, 1], [1, 2]]),
    (5, [[0, 1], [0, 1], [0, 1], [0, 1]]),   # N+1: no window, every cell sees every earlier state
])
def test_stage_window_mapping(window, expected):
    counts = G.stage_edge_counts(4, window)
    assert counts == [min(j + 2, window) for j in range(4)]
    dag, concat = G.derive_stage(first_edge_strongest(counts), window=window)
    assert [[s for _, s in cell] for cell in dag] == expected
    assert all(op == "skip_connect" for cell in dag for op, _ in cell)
    assert concat == [4, 5]


def test_stage_picks_best_edges_and_ops():
    # window 3, 6 cells, stacked 17 x 4 as the search holds it; cell 5 prefers its last two edges.
    rows = torch.zeros(17, 4)
    rows[:, 3] = 100.0                          # none dominates everywhere and must be ignored
    rows[14, 0], rows[15, 1], rows[16, 2] = 0.1, 0.9, 0.5   # cell 5 edges -> states 4, 5, 6
    dag, concat = G.derive_stage(rows)
    assert len(dag) == 6 and concat == [6, 7]
    assert dag[5] == [("avg_pool_3x3", 5), ("skip_connect", 6)]
    with pytest.raises(ValueError, match=r"window must be in \[2, N\+1\]"):
        G.derive_stage(first_edge_strongest([2, 3, 4, 5]), window=6)
    with pytest.raises(ValueError, match="window must be an int >= 2"):
        G.derive_stage(rows, window=1)


def test_stage_rules_differ_on_raw_vs_softmax():
    # cell 1 (window 3): edge 0 raw 5 but flat softmax; edge 2 raw 2 peaked -> rules disagree
    p = STAGE_PRIMITIVES
    rows = [torch.zeros(2, 4), torch.tensor([row(p, max_pool_3x3=5.0, avg_pool_3x3=4.9, skip_connect=4.9),
                                             row(p, avg_pool_3x3=3.0), row(p, skip_connect=2.0)])]
    hdas, _ = G.derive_stage(rows, rule="hdas")
    darts, _ = G.derive_stage(rows, rule="darts")
    assert hdas[1] == [("max_pool_3x3", 0), ("avg_pool_3x3", 1)]
    assert darts[1] == [("avg_pool_3x3", 1), ("skip_connect", 2)]


def test_stage_length_and_distribution_genotype():
    assert G.derive_stage_length(torch.tensor([[0.1], [0.7], [0.2], [0.0], [-1.0]]), 4) == (5, [5, 6])
    assert G.derive_stage_length([0.3, 0.3], 2) == (2, [2, 3])          # first maximum on ties
    assert G.derive_stage_length(torch.tensor([0, 0, 0, 0, 1.0]), 4) == (8, [8, 9])
    with pytest.raises(ValueError, match="n_min"):
        G.derive_stage_length([1.0], 0)
    chain = [first_edge_strongest(G.stage_edge_counts(8, 2))] * 3
    betas = [torch.tensor([0.0, 1.0, 0, 0, 0]), torch.tensor([0.0, 0, 0, 0, 1.0]), torch.tensor([1.0, 0, 0, 0, 0])]
    g2 = G.derive_stage_genotype(chain, window=2, betas=betas, n_min=4)
    assert [c for _, c in G.stages(g2)] == [[5, 6], [8, 9], [4, 5]]
    assert [G.dead_cells(d, c) for d, c in G.stages(g2)] == [[5, 6, 7], [], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="betas"):
        G.derive_stage_genotype(chain, window=2, betas=betas[:2], n_min=4)


def test_genotype3_from_five_sets():
    sets = [torch.tensor([r for node in cell_rows(HDAS_PRIMITIVES) for r in node])] * 5
    g3 = G.derive_stage_cells_genotype(sets, HDAS_PRIMITIVES)
    assert isinstance(g3, G.StageCellsGenotype) and g3.normal3[2:4] == [("max_pool_3x3", 0), ("sep_conv_3x3", 1)]
    assert G.parse(repr(g3)) == g3
