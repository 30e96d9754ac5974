"""The search settings of the paper's appendix per space, the loss-mode names, and the options of
the paper's stage-search variants, from `hdas search --help` to a finished run."""
import json
import os
import re

import pytest

from hdas_ext import cli
from hdas_ext.cli import build_parser
from hdas_ext.genotypes import DARTS_V2
from hdas_ext.search import LossMode, SearchConfig
from hdas_ext.search.config import PER_SPACE
from hdas_ext.supernets import stage_cell_costs

pytestmark = pytest.mark.usefixtures("single_thread")


def search_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["search", "hs", "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("space, weight_decay, delta, gamma, loss_mode", [
    ("cells", 3e-4, None, None, None),      # DARTS' search: no auxiliary losses
    ("hc", 2.7e-3, None, None, None),       # the paper's appendix: H-DAS cell search
    ("hs", 2.7e-3, 1.0, None, "literal"),   # ... and both stage searches
    ("distribution", 2.7e-3, 1.0, 0.4, "literal"),
])
def test_each_space_resolves_its_defaults(space, weight_decay, delta, gamma, loss_mode):
    cfg = SearchConfig(space=space).resolved()
    assert (cfg.weight_decay, cfg.delta, cfg.gamma, cfg.loss_mode) == (weight_decay, delta, gamma, loss_mode)
    # the appendix's settings shared by every space
    assert (cfg.lr, cfg.lr_min, cfg.momentum, cfg.batch_size, cfg.epochs, cfg.init_channels) == \
        (0.025, 0.001, 0.9, 64, 50, 16)
    assert (cfg.arch_lr, cfg.arch_betas, cfg.arch_weight_decay) == (3e-4, (0.5, 0.999), 1e-3)
    assert SearchConfig(space=space, weight_decay=1e-4).resolved().weight_decay == 1e-4
    # the supernet's own settings default to its constructor's, the others are None
    expected = {"cells": dict(layers=8, partial_channels=1, edge_normalization=False),
                "hc": dict(layers=8, partial_channels=1, edge_normalization=False),
                "hs": dict(cells_per_stage=6, window=3, shared_dag=False, genotype=DARTS_V2),
                "distribution": dict(n_max=8, n_min=4, window=3, theta="1", genotype=DARTS_V2)}[space]
    for name in PER_SPACE:
        if name not in ("weight_decay", "delta", "gamma", "loss_mode", "stage_primitives"):
            assert getattr(cfg, name) == expected.get(name), name


def test_help_shows_every_space_default_and_the_variants(capsys):
    text = search_help(capsys)
    assert "weight SGD weight decay (default: cells 3e-4, hc 2.7e-3, hs 2.7e-3, distribution 2.7e-3)" in text
    assert "depth-loss coefficient (default: 1; hs, distribution only)" in text
    assert "complexity-loss coefficient (default: 0.4; distribution only)" in text
    assert re.search(r"--loss-mode \{literal,edge-softmax,released\} literal: the paper's Eq. 2 as written", text)
    assert "(default: literal; hs, distribution only)" in text
    assert "(default: max_pool_3x3,avg_pool_3x3,skip_connect,none; hs, distribution only)" in text  # as typed
    assert "architecture Adam betas (default: 0.5 0.999)" in text
    assert "HC_DAS" in text and "Hs-DAS-dagger" in text and "Hs-DAS*" in text
    assert "--theta {1,flops,params}" in text and "--stage-primitives" in text
    assert "paper default" not in text.lower()


def parse(*argv):
    args = build_parser().parse_args(["search", *argv])
    return SearchConfig(**{k: v for k, v in vars(args).items() if k in SearchConfig.__dataclass_fields__
                           and v is not None}).resolved()


def test_new_options_parse():
    cfg = parse("hs", "--cells-per-stage", "6,6,4", "--stage-primitives", "skip_connect,none", "--loss-mode",
                "edge-softmax")
    assert cfg.cells_per_stage == (6, 6, 4) and cfg.stage_primitives == ("skip_connect", "none")
    assert cfg.loss_mode is LossMode.EDGE_SOFTMAX
    assert parse("hs", "--shared-dag").shared_dag
    assert parse("distribution", "--theta", "params").theta == "params"
    with pytest.raises(ValueError, match="loss_mode must be one of literal, edge-softmax, released, got 'paper'"):
        parse("hs", "--loss-mode", "paper")


@pytest.mark.parametrize("argv, words", [
    (["search", "distribution", "--shared-dag"], "shared_dag (--shared-dag) applies to the hs search, not to"),
    (["search", "hs", "--shared-dag", "--cells-per-stage", "3,3,2"], "a shared stage DAG needs the same number"),
    (["search", "hs", "--cells-per-stage", "3,3"], "cells_per_stage must be an int >= 1 or 3 of them"),
    (["search", "hs", "--cells-per-stage", "4,4,2", "--window", "4"], "window must be in [2, N+1] = [2, 3]"),
    (["search", "hs", "--stage-primitives", "none"], "stage_primitives must be distinct names"),
    (["search", "hs", "--stage-primitives", "sep_conv_3x3,none"], "stage_primitives must be distinct names"),
])
def test_bad_variant_settings_are_named(argv, words, monkeypatch, tmp_path):
    monkeypatch.delenv("HDAS_DEBUG", raising=False)
    quick = ["--epochs", "1", "--steps-per-epoch", "1", "--eval-batches", "1", "--output", str(tmp_path)]
    with pytest.raises(SystemExit, match=re.escape(words)):
        cli.main(argv + quick)      # a check that let the settings through would run one short epoch


TINY = ["--init-channels", "4", "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--eval-batches",
        "1", "--no-fused", "--no-progress", "--no-tensorboard", "--no-plot", "--seed", "1"]


def last_genotype(out):
    with open(os.path.join(out, "genotype_last.json")) as f:
        return json.load(f)


def test_per_stage_counts_and_reduced_primitives_search(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["search", "hs", "--output", out, "--cells-per-stage", "3,3,2", "--stage-primitives",
                     "skip_connect,none", *TINY]) == 0
    g = last_genotype(out)
    assert [len(g[f"DAG{s}"]) for s in (1, 2, 3)] == [3, 3, 2]
    assert (g["DAG1_concat"], g["DAG3_concat"]) == ([3, 4], [2, 3])
    assert {op for s in (1, 2, 3) for cell in g[f"DAG{s}"] for op, _ in cell} == {"skip_connect"}
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["cells_per_stage"] == [3, 3, 2] and cfg["loss_mode"] == "literal" and cfg["weight_decay"] == 2.7e-3


def test_shared_dag_search_writes_one_dag_three_times(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["search", "hs", "--output", out, "--cells-per-stage", "3", "--shared-dag", *TINY]) == 0
    g = last_genotype(out)
    assert g["DAG1"] == g["DAG2"] == g["DAG3"]


def test_distribution_search_with_theta(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["search", "distribution", "--output", out, "--n-max", "3", "--n-min", "2", "--theta", "flops",
                     *TINY]) == 0
    with open(os.path.join(out, "log.jsonl")) as f:
        row = [json.loads(line) for line in f][0]
    # theta_s = multiply-adds of one cell of stage s (millions) at C=4 on 16-px digits; after two
    # steps beta is still about uniform over the lengths 2 and 3 (expected length 2.5 per stage)
    theta = stage_cell_costs("DARTS_V2", 4, "flops", 16)
    assert row["comp_loss"] == pytest.approx(2.5 * sum(theta), rel=1e-3)
    assert row["comp_loss"] < 7.5 / 5           # far from theta = 1 (7.5)
