import io

import pytest
import torch

from hdas_ext import genotypes as G
from hdas_ext.genotypes.cost import count_cell_madds, count_cell_params
from hdas_ext.networks import (Cell, build_eval_network, count_multiply_adds, count_params,
                               drop_path)

pytestmark = pytest.mark.usefixtures("single_thread")

CELLS = ["DARTS_V1", "DARTS_V2", "PDARTS", "PC_DARTS_cifar", "PC_DARTS_image", "noisy_darts_a", "HC_DAS"]


def meta(*args, **kw):
    with torch.device("meta"):
        return build_eval_network(*args, **kw)


def M(n):
    return n / 1e6


# ---- parameter counts: the papers' figures and an independent analytic count ----------------

@pytest.mark.parametrize("name,expected", [
    ("DARTS_V2", 3.35), ("DARTS_V1", 3.17), ("PDARTS", 3.43), ("PC_DARTS_cifar", 3.63),
    ("noisy_darts_a", 3.26), ("HC_DAS", 3.71)])
def test_chain_cifar_params(name, expected):
    assert M(count_params(meta(name))) == pytest.approx(expected, abs=0.006)


def test_darts_published_figures():
    # DARTS paper: 3.3 M on CIFAR-10 (C=36, 20 cells), 4.7 M on ImageNet (C=48, 14 cells).
    assert round(M(count_params(meta("DARTS_V2"))), 1) == 3.3
    imnet = meta("DARTS_V2", dataset="imagenet", init_channels=48, layers=14)
    assert round(M(count_params(imnet)), 1) == 4.7


@pytest.mark.parametrize("name,expected", [
    ("DARTS_V1", 4.22), ("DARTS_V2", 4.40), ("PDARTS", 4.48), ("PC_DARTS_cifar", 4.69),
    ("noisy_darts_a", 4.31)])
def test_hs_das_cifar_params(name, expected):
    assert M(count_params(meta(name, "HS_DAS_CIFAR"))) == pytest.approx(expected, abs=0.006)


@pytest.mark.parametrize("name,C,expected", [
    ("DARTS_V2", 36, 4.49), ("DARTS_V2", 39, 5.15), ("PDARTS", 36, 4.62), ("PDARTS", 39, 5.31)])
def test_hs_das_imagenet_params(name, C, expected):
    net = meta(name, "HS_DAS_IMAGENET", dataset="imagenet", init_channels=C)
    assert M(count_params(net)) == pytest.approx(expected, abs=0.006)
    if (name, C) == ("DARTS_V2", 39):
        assert M(count_params(net)) == pytest.approx(5.1, abs=0.06)  # H-DAS paper, ImageNet


def test_auxiliary_head_is_left_out_of_the_count():
    net = meta("DARTS_V2", "HS_DAS_CIFAR")
    aux = sum(p.numel() for n, p in net.named_parameters() if n.startswith("auxiliary_head"))
    assert M(aux) == pytest.approx(0.476, abs=0.001)  # CIFAR aux head 576 -> 10
    assert count_params(net) + aux == sum(p.numel() for p in net.parameters())
    assert count_params(meta("DARTS_V2", auxiliary=False)) == count_params(meta("DARTS_V2"))


# ---- multiply-adds ----------------------------------------------------------------------------

@pytest.mark.parametrize("cell,stages,C,layers,published,tol", [
    # DARTS reports 574 M; counting convolutions and linear layers gives 530 M, as others found
    # (quark0/darts#46: 523 M conv+fc, 545 M with BN/ReLU); the paper's convention is unknown.
    ("DARTS_V2", None, 48, 14, 574, 0.08),
    ("PDARTS", None, 48, 14, 557, 0.03),
    ("PC_DARTS_image", None, 48, 14, 597, 0.03),
    ("DARTS_V2", "HS_DAS_IMAGENET", 39, 14, 572, 0.035),  # H-DAS paper, Hs-DAS ImageNet
])
def test_imagenet_multiply_adds_near_published(cell, stages, C, layers, published, tol):
    net = meta(cell, stages, dataset="imagenet", init_channels=C, layers=layers)
    madds = M(count_multiply_adds(net, (3, 224, 224)))
    assert madds == pytest.approx(published, rel=tol)
    assert madds < published  # conv + linear only: never more than a count that adds more ops


class _TwoInputs(torch.nn.Module):
    def __init__(self, cell, split):
        super().__init__()
        self.cell, self.split = cell, split

    def forward(self, x):
        return self.cell(x[:, :self.split], x[:, self.split:])


def test_multiply_add_counter_matches_analytic_cell_formula():
    # An independent closed form (genotypes.cost) for normal cells, preprocessors included.
    for name in ("DARTS_V2", "PDARTS", "PC_DARTS_cifar"):
        gene = G.get(name).normal
        cell = Cell(gene, [2, 3, 4, 5], 24, 32, 16, False, False, pool_bn=False)
        got = count_multiply_adds(_TwoInputs(cell, 24), (56, 8, 8), device="cpu")
        assert got == count_cell_madds(gene, 16, False, 8, C_pp=24, C_p=32)
        assert count_params(cell) == count_cell_params(gene, 16, False, C_pp=24, C_p=32)


def test_reduction_cell_multiply_adds_by_hand():
    # PDARTS reduce at C=16 on 8x8 inputs: stride-2 ops read the inputs, the others read nodes
    # that are already 4x4; every op's output is 4x4 = 16 pixels.
    gene = G.PDARTS.reduce
    cell = Cell(gene, [2, 3, 4, 5], 24, 32, 16, True, False, pool_bn=False)
    sep5, sep3 = 2 * (25 * 16 + 256) * 16, 2 * (9 * 16 + 256) * 16
    dil5, dil3 = (25 * 16 + 256) * 16, (9 * 16 + 256) * 16
    ops = sep5 + sep3 + dil5 + 2 * dil3 + dil5   # the two pools cost no multiply-adds
    preprocess = (24 + 32) * 16 * 8 * 8
    assert count_multiply_adds(_TwoInputs(cell, 24), (56, 8, 8), device="cpu") == ops + preprocess


def test_stem_multiply_adds_by_hand():
    net = build_eval_network("DARTS_V2", dataset="imagenet", init_channels=8, layers=3, auxiliary=False)
    stems = torch.nn.Sequential(net.stem0, net.stem1)
    by_hand = 112 * 112 * 4 * 27 + 56 * 56 * 8 * 4 * 9 + 28 * 28 * 8 * 8 * 9
    assert count_multiply_adds(stems, (3, 224, 224)) == by_hand


# ---- shapes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_chain_shapes_cifar_and_imagenet(cell):
    torch.manual_seed(0)
    net = build_eval_network(cell, init_channels=4, layers=8)
    logits, aux = net.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    logits, aux = net.eval()(torch.randn(1, 3, 32, 32))
    assert logits.shape == (1, 10) and aux is None
    net = build_eval_network(cell, dataset="imagenet", init_channels=4, layers=5)
    logits, aux = net.train()(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 1000) and aux.shape == (2, 1000)


@pytest.mark.parametrize("stages,dataset,size,classes", [
    ("HS_DAS_CIFAR", "cifar10", 32, 10), ("HS_DAS_IMAGENET", "imagenet", 224, 1000),
    ("HS_DAS_IMAGENET", "digits", 16, 10)])
@pytest.mark.parametrize("cell", ["DARTS_V2", "HC_DAS"])
def test_stage_network_shapes(cell, stages, dataset, size, classes):
    torch.manual_seed(0)
    net = build_eval_network(cell, stages, dataset=dataset, init_channels=4)
    logits, aux = net.train()(torch.randn(2, 3, size, size))
    assert logits.shape == (2, classes) and aux.shape == (2, classes)
    g2 = G.get(stages)
    assert net.cells_per_stage == [len(g2.DAG1), len(g2.DAG2), len(g2.DAG3)]


# ---- any number of cells per stage, dead cells ------------------------------------------------

def window_stage(n, pattern):
    """A window-3 stage DAG of n cells; the output is the last two cells."""
    ops = ["skip_connect", "max_pool_3x3", "avg_pool_3x3"]
    dag = [[(ops[0], 0), (ops[1], 1)]]
    for j in range(1, n):
        window = [j - 1, j, j + 1]
        a, b = [(0, 1), (0, 2), (1, 2)][(j + pattern) % 3]
        dag.append([(ops[j % 3], window[a]), (ops[(j + 1) % 3], window[b])])
    return dag, [n, n + 1]


@pytest.mark.parametrize("n", [4, 5, 8])
def test_stage_genotypes_of_any_length_build_and_train(n):
    (d1, c1), (d2, c2), (d3, c3) = window_stage(n, 0), window_stage(n, 1), window_stage(n, 2)
    g2 = G.StageGenotype(d1, c1, d2, c2, d3, c3)
    torch.manual_seed(0)
    net = build_eval_network("DARTS_V2", g2, init_channels=4, drop_path_prob=0.2)
    assert net.cells_per_stage == [n - len(G.dead_cells(d, c)) for d, c in G.stages(g2)]
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    net.train()
    losses = []
    for _ in range(3):
        logits, aux = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + 0.4 * torch.nn.functional.cross_entropy(aux, y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))


def test_dead_cells_are_pruned():
    # Stage 1: cell 1 is read by nobody and is not in the concat -> dead.
    dag = [[("skip_connect", 0), ("skip_connect", 1)],
           [("max_pool_3x3", 1), ("skip_connect", 2)],
           [("skip_connect", 0), ("avg_pool_3x3", 2)],
           [("skip_connect", 2), ("skip_connect", 4)]]
    concat = [4, 5]
    assert G.dead_cells(dag, concat) == [1]
    full = G.get("HS_DAS_IMAGENET")
    g2 = full._replace(DAG1=dag, DAG1_concat=concat)
    net = build_eval_network("DARTS_V2", g2, dataset="imagenet", init_channels=4)
    assert net.cells_per_stage == [3, 4, 4] and net.pruned == [1, 0, 0]
    pdag, pconcat = G.prune_dead_cells(dag, concat)
    ref = build_eval_network("DARTS_V2", full._replace(DAG1=pdag, DAG1_concat=pconcat),
                             dataset="imagenet", init_channels=4)
    assert count_params(net) == count_params(ref)
    torch.manual_seed(0)
    logits, aux = net.train()(torch.randn(2, 3, 64, 64))
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in net.parameters())  # nothing left unused (DDP-safe)
    unpruned = build_eval_network("DARTS_V2", g2, dataset="imagenet", init_channels=4, prune_dead=False)
    assert unpruned.cells_per_stage == [4, 4, 4]


# ---- drop path ---------------------------------------------------------------------------------

def test_drop_path_statistics():
    torch.manual_seed(0)
    x = torch.ones(20000, 1, 1, 1)
    y = drop_path(x, 0.3)
    dropped = (y == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.02)
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)  # survivors rescaled by 1/(1-p)


def test_drop_path_is_off_in_eval_and_on_in_training():
    torch.manual_seed(0)
    net = build_eval_network("DARTS_V2", "HS_DAS_CIFAR", init_channels=4, drop_path_prob=0.5)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    a = net(x)[0]
    net.drop_path_prob = 0.0
    b = net(x)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    net.train()
    c1 = net(x)[0]
    c2 = net(x)[0]  # p = 0: training mode is deterministic too
    torch.testing.assert_close(c1, c2)
    net.drop_path_prob = 0.5
    assert not torch.allclose(net(x)[0], c1)


# ---- state dicts, names, errors ------------------------------------------------------------------

def test_state_dict_loads_without_pickled_classes():
    torch.manual_seed(0)
    net = build_eval_network("PDARTS", "HS_DAS_CIFAR", init_channels=4).eval()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    torch.manual_seed(1)
    other = build_eval_network("PDARTS", "HS_DAS_CIFAR", init_channels=4).eval()
    other.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(other(x)[0], net(x)[0])


def test_darts_state_dict_names():
    keys = set(build_eval_network("DARTS_V2", init_channels=4, layers=5).state_dict())
    for k in ("stem.0.weight", "cells.0.preprocess0.op.1.weight", "cells.2.preprocess0.conv_1.weight",
              "cells.0._ops.0.op.1.weight", "auxiliary_head.features.2.weight",
              "auxiliary_head.classifier.weight", "classifier.weight"):
        assert k in keys, k


def test_pool_bn_defaults():
    def pool_bns(net):
        return sum(isinstance(m, torch.nn.Sequential) and isinstance(m[0], torch.nn.MaxPool2d)
                   for m in net.modules())
    assert pool_bns(meta("DARTS_V2", layers=5)) == 0          # DARTS evaluates bare pools
    assert pool_bns(meta("DARTS_V2", layers=5, pool_bn=True)) > 0
    assert pool_bns(meta("HC_DAS", layers=5)) > 0             # H-DAS code wraps pools with BN
    assert pool_bns(meta("DARTS_V2", "HS_DAS_CIFAR")) > 0


def test_genotype_strings_and_errors():
    text = repr(G.get("DARTS_V2"))
    assert count_params(meta(text, layers=5)) == count_params(meta("DARTS_V2", layers=5))
    assert count_params(meta("DARTS_V2", G.to_json(G.get("HS_DAS_CIFAR")))) == \
        count_params(meta("DARTS_V2", "HS_DAS_CIFAR"))
    with pytest.raises(TypeError, match="cell must be"):
        build_eval_network("HS_DAS_CIFAR")
    with pytest.raises(TypeError, match="stages must be"):
        build_eval_network("DARTS_V2", stages="DARTS_V2")
    with pytest.raises(ValueError, match="unknown genotype name"):
        build_eval_network("NO_SUCH_CELL")
    with pytest.raises(ValueError, match="dataset"):
        build_eval_network("DARTS_V2", dataset="mnist")
    with pytest.raises(ValueError, match="layers"):
        build_eval_network("DARTS_V2", layers=2)
    with pytest.raises(ValueError, match="drop_path_prob"):
        build_eval_network("DARTS_V2", drop_path_prob=1.0)
