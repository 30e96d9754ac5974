"""The two stage-network constructions: 'released' (the default) and 'paper' (no stage-input
projections, reduction cells on one cell's width), their parameter counts against the paper's."""
import json

import pytest
import torch

from hdas_ext.cli import main as cli_main
from hdas_ext.networks import build_eval_network, count_params
from hdas_ext.train import make_config
from hdas_ext.train.loop import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def meta(*args, **kw):
    with torch.device("meta"):
        return build_eval_network(*args, **kw)


def M(net):
    return count_params(net) / 1e6


@pytest.mark.parametrize("cell,paper_m,measured", [("PDARTS", 3.5, 3.506), ("DARTS_V2", 3.4, 3.423)])
def test_paper_construction_gives_the_papers_cifar_counts(cell, paper_m, measured):
    net = meta(cell, "HS_DAS_CIFAR", init_channels=36, construction="paper")
    assert M(net) == pytest.approx(paper_m, abs=0.05)  # H-DAS paper, CIFAR-10 Hs-DAS rows
    assert M(net) == pytest.approx(measured, abs=0.0005)


def test_released_construction_keeps_its_counts():
    assert M(meta("DARTS_V2", "HS_DAS_IMAGENET", dataset="imagenet", init_channels=39)) == \
        pytest.approx(5.151, abs=0.0005)  # the paper's ImageNet 5.1 M
    assert M(meta("PDARTS", "HS_DAS_CIFAR")) == pytest.approx(4.484, abs=0.0005)
    assert build_eval_network("PDARTS", "HS_DAS_CIFAR", init_channels=4).construction == "released"
    # the paper construction does not give the ImageNet 5.1 M: no single construction fits every row
    assert M(meta("DARTS_V2", "HS_DAS_IMAGENET", dataset="imagenet", init_channels=39,
                  construction="paper")) == pytest.approx(4.003, abs=0.0005)


@pytest.mark.parametrize("cell", ["PDARTS", "DARTS_V2"])
def test_the_difference_is_the_projections_and_the_reduction_inputs(cell):
    # By hand: stage s (width W = 4C*2^s) loses two 1x1 convs W->W with their BNs (W^2 + 2W each);
    # reduction cell s reads W instead of 2W channels in both preprocessing convs (to 2C*2^s).
    C = 36
    Ws = [4 * C * 2 ** s for s in range(3)]
    projections = sum(2 * (W * W + 2 * W) for W in Ws)
    reductions = sum(2 * W * (2 * C * 2 ** s) for s, W in enumerate(Ws[:2]))
    released = count_params(meta(cell, "HS_DAS_CIFAR", init_channels=C))
    paper = count_params(meta(cell, "HS_DAS_CIFAR", init_channels=C, construction="paper"))
    assert released - paper == projections + reductions == 978624


@pytest.mark.parametrize("stages,dataset,size", [("HS_DAS_CIFAR", "cifar10", 32), ("HS_DAS_IMAGENET", "digits", 16)])
def test_paper_construction_trains_every_parameter(stages, dataset, size):
    torch.manual_seed(0)
    net = build_eval_network("PDARTS", stages, dataset=dataset, init_channels=4, construction="paper",
                             drop_path_prob=0.2).train()
    assert not any(hasattr(stage, "preproc0") for stage in net.stages)
    logits, aux = net(torch.randn(2, 3, size, size))
    assert logits.shape == aux.shape == (2, 10)
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_construction_errors():
    with pytest.raises(ValueError, match="construction must be one of"):
        build_eval_network("PDARTS", "HS_DAS_CIFAR", init_channels=4, construction="pdarts")
    with pytest.raises(ValueError, match="applies to stage networks"):
        build_eval_network("PDARTS", construction="paper")
    with pytest.raises(ValueError, match="construction"):
        make_config("digits", construction="paper")  # a chain network


def test_train_option(capsys):
    cfg = make_config("digits", stages="HS_DAS_IMAGENET", construction="paper", init_channels=4)
    assert build_model(cfg).construction == "paper"
    assert cli_main(["train", "--preset", "digits", "--stages", "HS_DAS_IMAGENET", "--construction", "paper",
                     "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["construction"] == "paper"
