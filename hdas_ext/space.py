"""Exact search-space sizes (labelled DAGs, no graph isomorphism) for the rows of the H-DAS
complexity analysis.

Counting rule, shared by cells and stages: a node that may read ``p`` earlier states chooses
``k`` *distinct* inputs (C(p, k) ways, the derivation keeps the top-k distinct edges) and one of
``ops`` operations for each of them (ops**k ways); nodes choose independently, so a graph is the
product over its nodes. 'none' is not an op choice (derivation never keeps it), hence 7 ops for
DARTS cells and 3 (max_pool, avg_pool, skip) for stage edges.

* DARTS cell, ``nodes`` intermediate nodes, node i reads the 2 cell inputs and the i earlier nodes:
  ``cell = prod_{i=0}^{nodes-1} C(i+2, k) * ops**k``; DARTS defaults (4, 7, 2):
  1*3*6*10 * 7**8 = 180 * 5_764_801 = 1_037_664_180 (~1e9).
* DARTS network: one normal and one reduction cell: ``cell**2`` (~1e18).
* Hc-DAS: 3 normal + 2 reduction stage-specific cells: ``cell**5`` (~1e45).
* Hs-DAS stage of N cells, window m (cell j reads the min(j+2, m) most recent states; m = N+1 means
  no window): ``stage(N, m) = prod_{j=0}^{N-1} C(min(j+2, m), k) * ops**k``.
  No window, N = 6: 1*3*6*10*15*21 * 9**6 = 56_700 * 531_441 ~ 3.0e10;
  window 3: 3**(N-1) * 9**N = 243 * 531_441 ~ 1.3e8.
* Hs-DAS network: independent stage DAGs, ``prod_s stage(N_s, m)``; 3 x 6 cells, m = 3 ~ 2.2e24.
  Hs-DAS* (one DAG shared by the stages): ``stage(N, m)``.
* H-DAS as the paper counts it (~1e42): DARTS' shared normal and reduction cells x windowed
  Hs-DAS stage DAGs, 1.08e18 x 2.15e24 = 2.32e42. Stage-specific (Hc-DAS) cells x Hs-DAS stage
  DAGs is a larger space (~2.6e69), labelled as such.
* Distribution search: a stage has N cells with N in [n_min, n_max] (the output is the last two
  of them; later cells are dead and pruned), so one stage has ``sum_{N=n_min}^{n_max} stage(N, m)``
  architectures and the network the product over stages. Counted as genotypes *before* pruning
  (all n_max cells kept plus the choice of N) it would be ``(n_max-n_min+1) * stage(n_max, m)`` per
  stage (``distribution_genotypes``); the pruned count is the architecture count.
"""
from math import comb, prod

from .stage_geometry import check_window, window_inputs

__all__ = ["cell_space", "stage_space", "darts_network_space", "hc_das_space", "hs_das_space",
           "distribution_stage_space", "distribution_genotypes", "space_table", "DEFAULTS",
           "PAPER_ORDERS", "order_of_magnitude"]


def _pos_int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")


def cell_space(nodes=4, ops=7, k=2, cell_inputs=2):
    """Labelled DARTS cells: prod_{i<nodes} C(cell_inputs+i, k) * ops**k."""
    _pos_int("nodes", nodes), _pos_int("ops", ops), _pos_int("k", k), _pos_int("cell_inputs", cell_inputs)
    if k > cell_inputs:
        raise ValueError(f"k={k} inputs per node needs at least k cell inputs, got cell_inputs={cell_inputs}")
    return prod(comb(cell_inputs + i, k) * ops ** k for i in range(nodes))


def stage_space(n, ops=3, k=2, window=None):
    """Labelled stage DAGs of n cells: prod_{j<n} C(min(j+2, window), k) * ops**k; window None or
    n+1 = no window (every cell reads every earlier state)."""
    _pos_int("n (cells per stage)", n), _pos_int("ops", ops), _pos_int("k", k)
    m = check_window(n + 1 if window is None else window, n)
    if k > 2:
        raise ValueError(f"k={k} exceeds the 2 inputs the first cell of a stage can read")
    return prod(comb(window_inputs(j, m), k) * ops ** k for j in range(n))


def darts_network_space(nodes=4, ops=7, k=2):
    """One normal + one reduction cell: cell_space**2."""
    return cell_space(nodes, ops, k) ** 2


def hc_das_space(nodes=4, ops=7, k=2, normal_types=3, reduce_types=2):
    """Stage-specific cells: cell_space**(normal_types + reduce_types)."""
    _pos_int("normal_types", normal_types, 0), _pos_int("reduce_types", reduce_types, 0)
    return cell_space(nodes, ops, k) ** (normal_types + reduce_types)


def hs_das_space(cells_per_stage=(6, 6, 6), ops=3, k=2, window=None):
    """Independent stage DAGs: prod over stages of stage_space (window None = none; a window larger
    than a stage's N+1 is capped to N+1 for that stage)."""
    return prod(stage_space(n, ops, k, None if window is None else min(window, n + 1)) for n in cells_per_stage)


def distribution_stage_space(n_min=4, n_max=8, ops=3, k=2, window=None):
    """One stage whose length N ranges over [n_min, n_max]: sum_N stage_space(N)."""
    _pos_int("n_min", n_min), _pos_int("n_max", n_max)
    if n_max < n_min:
        raise ValueError(f"n_max ({n_max}) must be >= n_min ({n_min})")
    return sum(stage_space(n, ops, k, None if window is None else min(window, n + 1))
               for n in range(n_min, n_max + 1))


def distribution_genotypes(n_min=4, n_max=8, ops=3, k=2, window=None):
    """Searched genotypes of one stage before pruning: (n_max-n_min+1) * stage_space(n_max)."""
    if n_max < n_min:
        raise ValueError(f"n_max ({n_max}) must be >= n_min ({n_min})")
    return (n_max - n_min + 1) * stage_space(n_max, ops, k, window)


DEFAULTS = dict(nodes=4, cell_ops=7, stage_ops=3, k=2, cells_per_stage=6, stages=3, window=3,
                n_min=4, n_max=8, normal_types=3, reduce_types=2)

# Orders of magnitude the paper quotes, beside the row each one matches at the default parameters
# (docs/reproduction.md: the distribution rows are matched by their counts); a count agrees when
# it rounds to that power of ten.
PAPER_ORDERS = {"darts_cell": 9, "darts_network": 18, "hc_das": 45, "hs_stage_nowin": 10,
                "hs_network_win": 24, "dist_stage_nowin": 15, "dist_network_win": 33, "hdas_paper": 42,
                "dist_x_darts_cells": 51}


def order_of_magnitude(count):
    """The power of ten nearest to `count` on a log scale (9.3e32 -> 33), exact for any int."""
    digits = len(str(count)) - 1
    return digits + (count * count >= 10 ** (2 * digits + 1))


def space_table(**params):
    """Rows ``(key, description, exact_int)`` for the given parameters (see DEFAULTS)."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown space parameter(s) {sorted(unknown)}; expected {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    n, m, S = p["cells_per_stage"], p["window"], p["stages"]
    _pos_int("stages", S)
    cell = cell_space(p["nodes"], p["cell_ops"], p["k"])
    types = p["normal_types"] + p["reduce_types"]
    hc = hc_das_space(p["nodes"], p["cell_ops"], p["k"], p["normal_types"], p["reduce_types"])
    st_nw = stage_space(n, p["stage_ops"], p["k"], None)
    st_w = stage_space(n, p["stage_ops"], p["k"], m)
    dist_nw = distribution_stage_space(p["n_min"], p["n_max"], p["stage_ops"], p["k"], None)
    dist_w = distribution_stage_space(p["n_min"], p["n_max"], p["stage_ops"], p["k"], m)
    L = S * n + (S - 1)
    rng = f"N in [{p['n_min']}, {p['n_max']}]"
    return [
        ("darts_cell", f"DARTS cell ({p['nodes']} nodes, {p['cell_ops']} ops, {p['k']} inputs)", cell),
        ("darts_network", "DARTS network (normal + reduction cell)", cell ** 2),
        ("hc_das", f"Hc-DAS ({p['normal_types']} normal + {p['reduce_types']} reduction cells)", hc),
        ("hs_stage_nowin", f"Hs-DAS stage, N={n}, {p['stage_ops']} ops, no window", st_nw),
        ("hs_stage_win", f"Hs-DAS stage, N={n}, window m={m}", st_w),
        ("hs_network_nowin", f"Hs-DAS network, {S} stages x {n}, no window", st_nw ** S),
        ("hs_network_win", f"Hs-DAS network, {S} stages x {n}, window m={m}", st_w ** S),
        ("hs_star_win", f"Hs-DAS* network (one DAG shared by the stages), m={m}", st_w),
        ("hdas_paper", f"H-DAS as the paper counts it: DARTS cells x Hs-DAS (m={m}), {L} cells", cell ** 2 * st_w ** S),
        ("hc_x_hs_win", f"Hc-DAS cells x Hs-DAS stages (m={m}), {L} cells", hc * st_w ** S),
        ("hc_x_hs_nowin", f"Hc-DAS cells x Hs-DAS stages (no window), {L} cells", hc * st_nw ** S),
        ("dist_stage_nowin", f"distribution stage, {rng}, no window", dist_nw),
        ("dist_stage_win", f"distribution stage, {rng}, window m={m}", dist_w),
        ("dist_network_nowin", f"distribution network, {S} stages, no window", dist_nw ** S),
        ("dist_network_win", f"distribution network, {S} stages, window m={m}", dist_w ** S),
        ("dist_x_darts_cells", f"distribution network (m={m}) x DARTS normal+reduction cells", dist_w ** S * cell ** 2),
        ("dist_x_hc_cells", f"distribution network (m={m}) x Hc-DAS cells ({types} types)", dist_w ** S * hc),
    ]
