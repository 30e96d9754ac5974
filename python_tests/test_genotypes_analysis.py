"""Dead cells, pruning and depth on hand-built stage DAGs."""
import random
from fractions import Fraction

import pytest

import hdas_ext.genotypes as G

S = "skip_connect"


def chain(n):
    """The 'DARTS-like' chain: cell j reads states j and j+1."""
    return [[(S, j), (S, j + 1)] for j in range(n)], [n, n + 1]


def shallow(n):
    """Every cell reads only the two stage inputs."""
    return [[(S, 0), (S, 1)] for _ in range(n)], [n, n + 1]


def test_chain():
    dag, concat = chain(6)
    assert G.dead_cells(dag, concat) == []
    assert G.stage_depth(dag, concat) == 6
    # 3-cell chain by hand: paths to state 3: 1->c1, 0->c0->c1, 1->c0->c1 (lengths 1,2,2);
    # to state 4: 5 paths of total length 12. Together 8 paths, 17 cells.
    assert G.path_stats(*chain(3)) == (8, Fraction(17, 8))
    assert G.average_path_length(*chain(3)) == 17 / 8
    # depth recursion by hand: d(c0)=1, d(c1)=(1+2)/2=1.5, d(c2)=(2+2.5)/2=2.25 -> mean(1.5, 2.25)
    assert G.expected_depth(*chain(3)) == pytest.approx(1.875)


def test_shallow_stage_has_four_dead_cells():
    dag, concat = shallow(6)
    assert G.dead_cells(dag, concat) == [0, 1, 2, 3]
    assert G.stage_depth(dag, concat) == 1
    assert G.path_stats(dag, concat) == (4, Fraction(1))
    assert G.prune_dead_cells(dag, concat) == ([[(S, 0), (S, 1)], [(S, 0), (S, 1)]], [2, 3])


def test_one_dead_cell_and_renumbering():
    dag = [[(S, 0), (S, 1)],                      # cell 0 -> state 2
           [("max_pool_3x3", 0), (S, 1)],         # cell 1 -> state 3, read by nobody
           [(S, 1), ("avg_pool_3x3", 2)],         # cell 2 -> state 4
           [(S, 2), ("max_pool_3x3", 4)]]         # cell 3 -> state 5
    concat = [4, 5]
    assert G.dead_cells(dag, concat) == [1]
    pruned, pconcat = G.prune_dead_cells(dag, concat)
    assert pruned == [[(S, 0), (S, 1)], [(S, 1), ("avg_pool_3x3", 2)], [(S, 2), ("max_pool_3x3", 3)]]
    assert pconcat == [3, 4]
    assert G.stage_depth(dag, concat) == G.stage_depth(pruned, pconcat) == 3
    assert G.dead_cells(pruned, pconcat) == []


def test_distribution_tail_is_dead():
    dag, _ = chain(8)
    assert G.dead_cells(dag, [5, 6]) == [5, 6, 7]       # stage length 5 chosen from 8 cells
    assert G.prune_dead_cells(dag, [5, 6]) == chain(5)


def test_published_depths():
    # longest chains CIFAR 5/4/4, ImageNet 4/4/3; no dead cells (docs/reproduction.md)
    assert [G.stage_depth(d, c) for d, c in G.stages(G.HS_DAS_CIFAR)] == [5, 4, 4]
    assert [G.stage_depth(d, c) for d, c in G.stages(G.HS_DAS_IMAGENET)] == [4, 4, 3]
    for g in (G.HS_DAS_CIFAR, G.HS_DAS_IMAGENET):
        assert all(G.dead_cells(d, c) == [] for d, c in G.stages(g))


def test_bad_stage_rejected():
    with pytest.raises(ValueError, match="cell 1 reads state 3"):
        G.dead_cells([[(S, 0), (S, 1)], [(S, 3), (S, 1)]], [2, 3])
    with pytest.raises(ValueError, match="concat state 9"):
        G.stage_depth(*shallow(2)[:1], [9])


def _brute_paths(dag, concat):
    """All input->output paths by explicit enumeration (independent of the DP)."""
    lengths = []

    def walk(state, cells_so_far):
        if state < 2:
            lengths.append(cells_so_far)
            return
        for _, src in dag[state - 2]:
            walk(src, cells_so_far + 1)
    for s in concat:
        walk(s, 0)
    return lengths


def test_random_dags_prune_invariants():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 8)
        dag = [[(S, rng.randrange(j + 2)), (S, rng.randrange(j + 2))] for j in range(n)]
        concat = sorted(rng.sample(range(n + 2), rng.randint(1, min(3, n + 2))))
        lengths = _brute_paths(dag, concat)
        assert G.path_stats(dag, concat) == (len(lengths), Fraction(sum(lengths), len(lengths)))
        assert G.stage_depth(dag, concat) == max(lengths)
        pruned, pconcat = G.prune_dead_cells(dag, concat)
        assert G.dead_cells(pruned, pconcat) == []
        assert len(pruned) == n - len(G.dead_cells(dag, concat))
        assert G.path_stats(pruned, pconcat) == G.path_stats(dag, concat)
        assert G.expected_depth(pruned, pconcat) == G.expected_depth(dag, concat)
