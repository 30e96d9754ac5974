import collections
import dataclasses
import json
import os
import random
import re

import pytest
import torch

from hdas_ext import genotypes as G
from hdas_ext.cli import main as cli_main
from hdas_ext.networks import build_eval_network
from hdas_ext.train import make_config
from hdas_ext.train.random_baseline import (CELL_OPS, STAGE_OPS, relative_improvement, run_random_baseline,
                                            sample_cell, sample_genotype, sample_genotype2, sample_stage)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_sampled_cells_are_valid_and_uniform():
    rng = random.Random(0)
    ops, pairs = collections.Counter(), collections.Counter()
    N = 3000
    for _ in range(N):
        gene = sample_cell(rng)
        for i, node in enumerate(G.cell_nodes(gene)):
            srcs = [s for _, s in node]
            assert len(set(srcs)) == 2 and all(0 <= s < i + 2 for s in srcs)
            ops.update(op for op, _ in node)
            if i == 3:
                pairs[tuple(srcs)] += 1
    assert set(ops) == set(CELL_OPS) and "none" not in ops
    for op in CELL_OPS:  # 8 draws per cell, 1/7 each
        assert ops[op] / (8 * N) == pytest.approx(1 / 7, abs=0.01)
    assert len(pairs) == 10  # C(5, 2) input pairs for the last node, each about 1/10
    assert all(c / N == pytest.approx(0.1, abs=0.02) for c in pairs.values())
    g3 = sample_genotype(rng, stage_specific=True)
    assert isinstance(G.validate(g3), G.StageCellsGenotype)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_sampled_stages_respect_the_window(n):
    rng = random.Random(n)
    for _ in range(200):
        dag, concat = sample_stage(rng, n, window=3)
        assert len(dag) == n and concat == [n, n + 1]
        for j, node in enumerate(dag):
            srcs = [s for _, s in node]
            assert len(set(srcs)) == 2 and all(max(0, j - 1) <= s <= j + 1 for s in srcs)
            assert all(op in STAGE_OPS for op, _ in node)
    g2 = sample_genotype2(rng, (4, 5, 8))
    net = build_eval_network("DARTS_V2", g2, dataset="digits", init_channels=4)
    assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)


def test_sampled_distribution_stages_draw_their_length():
    # The distribution search also searches the output pair: a random stage of its space is an
    # N_max-cell DAG with the pair (N, N+1), N uniform in N_min..N_max, and dead cells after it.
    rng = random.Random(0)
    lengths = set()
    for _ in range(200):
        g2 = sample_genotype2(rng, (6, 6, 6), window=3, n_min=4)
        for dag, concat in G.stages(g2):
            assert len(dag) == 6 and concat == [concat[0], concat[0] + 1] and 4 <= concat[0] <= 6
            lengths.add(concat[0])
            assert set(G.dead_cells(dag, concat)) >= set(range(concat[0], 6))
    assert lengths == {4, 5, 6}
    net = build_eval_network("DARTS_V2", sample_genotype2(rng, (3, 4, 3), n_min=2), dataset="digits",
                             init_channels=4)
    assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)


def test_relative_improvement():
    assert relative_improvement(97.5, 97.0) == pytest.approx(100 * 0.5 / 97.0)
    assert relative_improvement(90.0, 90.0) == 0.0
    assert relative_improvement(90.0, 0.0) is None  # undefined, not an error: the summary is still written


def tiny(tmp_path, **kw):
    base = dict(output=str(tmp_path / "rb"), epochs=1, batch_size=32, train_subset=64, test_subset=32,
                init_channels=4, tensorboard=False, progress=False)
    base.update(kw)
    if base.get("stages") is None:
        base.setdefault("layers", 3)  # a chain network's cells
    return make_config("digits", **base)


def test_stage_baseline_trains_searched_and_random(tmp_path):
    searched = G.to_json(sample_genotype2(random.Random(5), (2, 3, 2)))
    cfg = tiny(tmp_path, stages=searched)
    summary = run_random_baseline(cfg, space="hs", samples=2, sample_seed=1)
    accs = [r["acc"] for r in summary["random"]]
    assert summary["random_mean"] == pytest.approx(sum(accs) / 2)
    assert summary["RI"] == pytest.approx(relative_improvement(summary["searched"]["acc"], summary["random_mean"]))
    on_disk = json.load(open(os.path.join(cfg.output, "random_baseline.json")))
    assert on_disk["RI"] == pytest.approx(summary["RI"])
    for r in summary["random"]:
        g2 = G.parse(r["stages"])
        assert [len(d) for d, _ in G.stages(g2)] == [2, 3, 2]  # the searched genotype's lengths
    assert os.path.isfile(os.path.join(cfg.output, "searched", "best.pt"))
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_random_baseline(cfg, space="hs", samples=2, sample_seed=1)
    again = run_random_baseline(dataclasses.replace(cfg, resume=True), space="hs", samples=2, sample_seed=1)
    assert again["random"] == summary["random"]  # finished runs read back


def test_cell_baseline_with_given_accuracy_and_errors(tmp_path, capsys):
    cfg = tiny(tmp_path)
    s = run_random_baseline(cfg, space="cells", samples=1, searched_acc=50.0, metric="last")
    assert s["searched"] == {"name": "searched", "acc": 50.0}
    assert isinstance(G.parse(s["random"][0]["cell"]), G.Genotype)
    with pytest.raises(ValueError, match="searched"):
        run_random_baseline(tiny(tmp_path), space="hs", samples=1)
    with pytest.raises(ValueError, match="space must be one of cells, hc, hs, distribution"):
        run_random_baseline(cfg, space="stage")
    with pytest.raises(ValueError, match="cell .--cell. must be a StageCellsGenotype"):
        run_random_baseline(cfg, space="hc", searched_acc=50.0)
    with pytest.raises(ValueError, match=re.escape("window (--window) applies to the hs and distribution spaces")):
        run_random_baseline(cfg, space="cells", window=3, searched_acc=50.0)
    with pytest.raises(ValueError, match=re.escape("window must be in [2, N+1] = [2, 7]")):
        run_random_baseline(cfg, space="hs", window=1, searched_acc=50.0)
    with pytest.raises(ValueError, match=re.escape("n_min must be in [1, 2]")):
        run_random_baseline(cfg, space="distribution", cells_per_stage=(2, 3, 2), n_min=3, searched_acc=50.0)
    d = run_random_baseline(tiny(tmp_path, output=str(tmp_path / "dist")), space="distribution", samples=1,
                            cells_per_stage=(3, 3, 3), n_min=2, searched_acc=50.0)
    assert d["space"] == "distribution"
    assert all(2 <= c[0] <= 3 for _, c in G.stages(G.parse(d["random"][0]["stages"])))
    out = str(tmp_path / "cli")
    assert cli_main(["random-baseline", "--space", "hs", "--samples", "1", "--cells-per-stage", "2,2,2",
                     "--searched-acc", "40", "--epochs", "1", "--train-subset", "64", "--test-subset", "32",
                     "--init-channels", "4", "--output", out, "--no-tensorboard", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["samples"] == 1 and printed["searched"] == 40.0
    with pytest.raises(SystemExit, match="random-baseline: error: cells_per_stage must be an int >= 1 or 3 of them"):
        cli_main(["random-baseline", "--cells-per-stage", "6,6", "--searched-acc", "1"])
