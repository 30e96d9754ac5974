"""Structural analysis of stage DAGs: dead cells, pruning, depth.

A stage DAG is a list with one entry per cell, each a list of (op, state) pairs; states 0 and 1 are
the stage inputs, state j+2 is cell j; ``concat`` lists the states concatenated into the output.
"""
from fractions import Fraction


def _check_stage(dag, concat):
    n = len(dag)
    for j, cell in enumerate(dag):
        for op, src in cell:
            if not 0 <= src < j + 2:
                raise ValueError(f"cell {j} reads state {src}; a cell j may only read states [0, {j + 2})")
    for s in concat:
        if not 0 <= s < n + 2:
            raise ValueError(f"concat state {s} out of range [0, {n + 2}) for a stage of {n} cells")


def live_states(dag, concat):
    """States from which some path reaches the stage output (backward reachability)."""
    _check_stage(dag, concat)
    live = set(concat)
    for j in range(len(dag) - 1, -1, -1):  # sources precede their readers, so one sweep suffices
        if j + 2 in live:
            live.update(src for _, src in dag[j])
    return live


def dead_cells(dag, concat):
    """Indices of cells with no path to the stage output, ascending."""
    live = live_states(dag, concat)
    return [j for j in range(len(dag)) if j + 2 not in live]


def prune_dead_cells(dag, concat):
    """Drop dead cells and renumber states so that live cells keep their order.
    Returns ``(dag, concat)``; the pruned DAG may violate the search window (a cell may now read a
    state more than ``window`` positions back), which evaluation networks must accept."""
    dead = set(dead_cells(dag, concat))
    mapping = {0: 0, 1: 1}
    new_dag = []
    for j, cell in enumerate(dag):
        if j in dead:
            continue
        new_dag.append([(op, mapping[src]) for op, src in cell])
        mapping[j + 2] = len(new_dag) + 1
    return new_dag, [mapping[s] for s in concat]


def _cell_depths(dag):
    depth = [0, 0]
    for cell in dag:
        depth.append(1 + max(depth[src] for _, src in cell))
    return depth


def stage_depth(dag, concat):
    """Number of cells on the longest path from a stage input to the stage output."""
    _check_stage(dag, concat)
    depth = _cell_depths(dag)
    return max(depth[s] for s in concat)


def path_stats(dag, concat):
    """``(num_paths, average_length)`` over all distinct input->output paths (each edge counted
    separately, so two edges from the same source are two paths); length = cells on the path.
    The average is an exact Fraction."""
    _check_stage(dag, concat)
    count, total = [1, 1], [0, 0]
    for cell in dag:
        c = sum(count[src] for _, src in cell)
        count.append(c)
        total.append(sum(total[src] + count[src] for _, src in cell))
    n_paths = sum(count[s] for s in concat)
    return n_paths, Fraction(sum(total[s] for s in concat), n_paths)


def average_path_length(dag, concat):
    """Mean number of cells over all input->output paths (see :func:`path_stats`), as a float."""
    return float(path_stats(dag, concat)[1])


def expected_depth(dag, concat):
    """Expected depth of the stage output: d(input) = 0, a cell's depth is the mean over its
    inputs of (d(src) + 1) (the depth recursion of the depth loss, docs/algorithms.md, with equal edge weights), and the
    stage value is the mean over the concat states: the expected number of cells on a path walked
    back from the output that picks each incoming edge with equal probability. Not the depth
    loss's stage value, which averages d over all cells (search.losses)."""
    _check_stage(dag, concat)
    d = [Fraction(0), Fraction(0)]
    for cell in dag:
        d.append(sum(d[src] + 1 for _, src in cell) / len(cell))
    return float(sum(d[s] for s in concat) / len(concat))
