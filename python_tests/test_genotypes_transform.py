"""The paper's Table 6 as an evaluation experiment: a fixed stage genotype with its stage ops
swapped ({none, skip, max, avg} -> {none, skip}), trained by `hdas train --stage-primitives`."""
import json

import pytest
import torch

from hdas_ext import genotypes as G
from hdas_ext.cli import main as cli_main
from hdas_ext.networks import build_eval_network, count_params
from hdas_ext.primitives import STAGE_PRIMITIVES
from hdas_ext.train import make_config
from hdas_ext.train.loop import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_pools_become_skip_and_the_connections_stay():
    g = G.get("HS_DAS_CIFAR")
    s = G.swap_stage_ops(g, ("skip_connect", "none"))
    for (dag, concat), (dag2, concat2) in zip(G.stages(g), G.stages(s)):
        assert concat2 == concat
        assert [[src for _, src in cell] for cell in dag2] == [[src for _, src in cell] for cell in dag]
        for cell, cell2 in zip(dag, dag2):
            for (op, _), (op2, _) in zip(cell, cell2):
                assert op2 == ("skip_connect" if op in ("max_pool_3x3", "avg_pool_3x3") else op)
    assert {op for dag, _ in G.stages(s) for cell in dag for op, _ in cell} == {"skip_connect"}
    assert ("max_pool_3x3", 2) in g.DAG1[2] and ("skip_connect", 2) in s.DAG1[2]   # by hand, one edge
    # the full set changes nothing; a set keeping the pools keeps them
    assert G.swap_stage_ops(g, STAGE_PRIMITIVES) == g
    t = G.swap_stage_ops("HS_DAS_IMAGENET", ("avg_pool_3x3", "skip_connect", "none"))
    assert t.DAG1[0] == [("skip_connect", 0), ("skip_connect", 1)] and t.DAG1[3][1] == ("avg_pool_3x3", 4)


def test_bad_sets_are_named():
    with pytest.raises(ValueError, match="primitives must be stage primitives"):
        G.swap_stage_ops("HS_DAS_CIFAR", ("sep_conv_3x3",))
    with pytest.raises(ValueError, match="replacement must be one of primitives"):
        G.swap_stage_ops("HS_DAS_CIFAR", ("max_pool_3x3", "none"))
    with pytest.raises(ValueError, match="replacement"):
        G.swap_stage_ops("HS_DAS_CIFAR", ("skip_connect", "none"), replacement="none")
    with pytest.raises(TypeError, match="genotype must be a StageGenotype"):
        G.swap_stage_ops("DARTS_V2")


def test_train_builds_the_swapped_network():
    cfg = make_config("digits", stages="HS_DAS_CIFAR", stage_primitives=("skip_connect", "none"), init_channels=4)
    net = build_model(cfg)
    swapped = build_eval_network(cfg.cell, G.swap_stage_ops("HS_DAS_CIFAR"), dataset="digits", init_channels=4)
    plain = build_eval_network(cfg.cell, "HS_DAS_CIFAR", dataset="digits", init_channels=4)
    assert count_params(net) == count_params(swapped) < count_params(plain)   # no pool BNs on stage edges
    assert not any("pool" in type(m).__name__.lower() for stage in net.stages for m in stage.edges.modules())
    logits, aux = net.train()(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10)
    with pytest.raises(ValueError, match="stage_primitives"):
        make_config("digits", stage_primitives=("skip_connect", "none"))   # a chain network
    with pytest.raises(ValueError, match="replacement"):
        make_config("digits", stages="HS_DAS_CIFAR", stage_primitives=("max_pool_3x3", "none"))


def test_cli_option(capsys):
    assert cli_main(["train", "--preset", "digits", "--stages", "HS_DAS_CIFAR", "--stage-primitives",
                     "skip_connect,none", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["stage_primitives"] == ["skip_connect", "none"]
