"""Search-space sizes: brute-force enumeration on small spaces, hand numbers, paper orders."""
import itertools
import json
from math import comb

import pytest

from hdas_ext import space
from hdas_ext.cli import main


def brute_force(n, ops, first_source):
    """Count labelled graphs in the published genotype format: node j lists two (op, state)
    pairs with distinct states in [first_source(j), j+2); pair order is irrelevant."""
    graphs = set()
    per_node = []
    for j in range(n):
        choices = set()
        for a, b in itertools.product(itertools.product(range(ops), range(first_source(j), j + 2)), repeat=2):
            if a[1] != b[1]:
                choices.add(tuple(sorted((a, b))))
        per_node.append(sorted(choices))
    for g in itertools.product(*per_node):
        graphs.add(g)
    return len(graphs)


@pytest.mark.parametrize("nodes, ops", [(1, 3), (2, 2), (3, 2)])
def test_cell_space_matches_enumeration(nodes, ops):
    assert space.cell_space(nodes, ops) == brute_force(nodes, ops, lambda j: 0)


@pytest.mark.parametrize("window", [2, 3, 4, None])
def test_stage_space_matches_enumeration(window):
    n = 3
    m = n + 1 if window is None else window
    assert space.stage_space(n, 2, window=window) == brute_force(n, 2, lambda j: max(0, j + 2 - m))


def test_hand_numbers():
    assert space.cell_space() == 1 * 3 * 6 * 10 * 7 ** 8 == 1_037_664_180
    assert space.darts_network_space() == 1_037_664_180 ** 2
    assert space.hc_das_space() == 1_037_664_180 ** 5
    assert space.stage_space(6) == 1 * 3 * 6 * 10 * 15 * 21 * 9 ** 6 == 30_132_704_700
    assert space.stage_space(6, window=3) == 3 ** 5 * 9 ** 6 == 129_140_163
    assert space.stage_space(6, window=7) == space.stage_space(6)          # m = N+1 is no window
    assert space.hs_das_space((6, 6, 6), window=3) == 129_140_163 ** 3
    assert space.hs_das_space((4, 4, 4), window=3) == (3 ** 3 * 9 ** 4) ** 3
    assert space.distribution_stage_space(4, 8, window=3) == sum(3 ** (n - 1) * 9 ** n for n in range(4, 9))
    assert space.distribution_stage_space(6, 6) == space.stage_space(6)
    assert space.distribution_genotypes(4, 8, window=3) == 5 * 3 ** 7 * 9 ** 8
    # 8 ops (none counted as an op) would be 180 * 8**8, about 3e9: the convention matters
    assert space.cell_space(ops=8) == 180 * 8 ** 8
    assert space.cell_space(nodes=5) == 180 * comb(6, 2) * 7 ** 10


def test_paper_orders_of_magnitude():
    rows = {k: v for k, _, v in space.space_table()}
    for key in ("darts_cell", "darts_network", "hc_das", "hs_stage_nowin", "hs_network_win"):
        assert len(str(rows[key])) - 1 == space.PAPER_ORDERS[key], (key, rows[key])
    assert sorted(space.PAPER_ORDERS.values()) == [9, 10, 15, 18, 24, 33, 42, 45, 51]
    for key, order in space.PAPER_ORDERS.items():
        assert space.order_of_magnitude(rows[key]) == order, (key, rows[key])
    # the paper's H-DAS row: DARTS' shared cells x windowed Hs-DAS stages (not the appendix's
    # (1e10)^3 x (1e9)^2 = 1e48), and the larger stage-specific-cells space labelled as such
    assert rows["hdas_paper"] == rows["darts_network"] * rows["hs_network_win"]
    assert 2.31e42 < rows["hdas_paper"] < 2.33e42
    assert rows["hc_x_hs_win"] == rows["hc_das"] * rows["hs_network_win"]
    assert 2.59e69 < rows["hc_x_hs_win"] < 2.60e69
    assert rows["hs_star_win"] == rows["hs_stage_win"]
    assert 9.34e32 < rows["dist_network_win"] < 9.35e32 and space.order_of_magnitude(rows["dist_network_win"]) == 33
    assert rows["dist_network_win"] == space.distribution_stage_space(window=3) ** 3


@pytest.mark.parametrize("call, match", [
    (lambda: space.stage_space(6, window=8), r"window must be in \[2, N\+1\] = \[2, 7\]"),
    (lambda: space.stage_space(6, window=1), r"window must be in \[2, N\+1\] = \[2, 7\] for 6 cells per stage, got 1"),
    (lambda: space.distribution_stage_space(8, 4), "n_max"),
    (lambda: space.cell_space(nodes=0), "nodes must be an int >= 1"),
    (lambda: space.space_table(cells=3), "unknown space parameter"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli_json_and_table(capsys):
    assert main(["space-size", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["darts_cell"]["count"] == 1_037_664_180 and rows["darts_cell"]["paper_order"] == 9
    assert rows["hc_das"]["count"] == 1_037_664_180 ** 5          # exact, not a float
    assert main(["space-size"]) == 0
    table = capsys.readouterr().out
    assert "1.038e+09" in table and "~1e24" in table and "2153693963075557766310747" in table
    lines = {line.split("  ")[0]: line.split() for line in table.splitlines()}
    paper_row = lines["H-DAS as the paper counts it: DARTS cells x Hs-DAS (m=3), 20 cells"]
    assert paper_row[-3:-1] == ["~1e42", "yes"]
    assert sum(line[-2] == "yes" for line in lines.values()) == 9 and not any(line[-2] == "no" for line in lines.values())
    assert rows["darts_cell"]["order"] == 9 and rows["dist_network_win"]["order"] == 33
    assert main(["space-size", "--json", "--cells-per-stage", "4", "--window", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["key"]: r for r in doc["rows"]}
    assert rows["hs_stage_win"]["count"] == rows["hs_stage_nowin"]["count"] == space.stage_space(4)
    assert rows["darts_cell"]["paper_order"] is None                # non-default parameters
    with pytest.raises(SystemExit, match="window must be in"):
        main(["space-size", "--window", "9"])
