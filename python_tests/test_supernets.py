"""Supernet structure: parameters kept apart, Hc-DAS cell assignment, Hs-DAS windows and widths,
distribution search for any N_max/N_min, derivation from the live alphas."""
import pytest
import torch

from hdas_ext.genotypes import HC_DAS, Genotype, StageGenotype, StageCellsGenotype, validate
from hdas_ext.primitives import STAGE_PRIMITIVES
from hdas_ext.stage_geometry import output_pairs, window_sources
from hdas_ext.supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "cells": (DartsCellSearch, dict(C=4, layers=5)),
    "hc": (HcDasSearch, dict(C=4, layers=5)),
    "hs": (HsDasSearch, dict(C=4, cells_per_stage=3)),
    "distribution": (DistributionSearch, dict(C=4, n_max=3, n_min=2)),
}


def build(space, fused=False, **kw):
    cls, base = TINY[space]
    return cls(fused=fused, **dict(base, **kw))


@pytest.mark.parametrize("space", list(TINY))
def test_alphas_and_weights_are_disjoint_and_complete(space):
    torch.manual_seed(0)
    m = build(space)
    alphas, weights = {id(p) for p in m.alphas()}, {id(p) for p in m.weights()}
    assert alphas and weights and not alphas & weights
    assert alphas | weights == {id(p) for p in m.parameters()}
    assert all(not n.startswith("net.") for n, _ in m.named_alphas())
    assert all(n.startswith("net.") for n, _ in m.named_weights())
    y = m(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 10)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.alphas())


def test_hc_das_assigns_stage_specific_sets():
    m = HcDasSearch(C=4, layers=8, fused=False)
    # cells 0-1 normal1, 2 reduce1, 3-4 normal2, 5 reduce2, 6-7 normal3
    assert m.net.cell_sets == [0, 0, 1, 2, 2, 3, 4, 4]
    assert [c.reduction for c in m.net.cells] == [False, False, True, False, False, True, False, False]
    assert isinstance(m.genotype(), StageCellsGenotype)
    d = DartsCellSearch(C=4, layers=8, fused=False)
    assert d.net.cell_sets == [0, 0, 1, 0, 0, 1, 0, 0]
    assert isinstance(d.genotype(), Genotype)
    # the derived cells concatenate the states the searched cells did: the last `multiplier`
    g = DartsCellSearch(C=4, layers=5, steps=3, multiplier=2, fused=False).genotype()
    assert g.normal_concat == g.reduce_concat == [3, 4]
    assert HcDasSearch(C=4, layers=5, steps=3, multiplier=2, fused=False).genotype().normal2_concat == [3, 4]


@pytest.mark.parametrize("window", [2, 3, 4])
def test_hs_das_window_edges(window):
    m = HsDasSearch(C=4, cells_per_stage=3, window=window, fused=False)
    for stage in m.stage_alphas():
        for j, a in enumerate(stage):
            assert a.shape == (len(window_sources(j, window)), len(STAGE_PRIMITIVES))
            assert window_sources(j, window)[-1] == j + 1
    g = m.genotype()
    assert isinstance(g, StageGenotype) and validate(g)
    assert g.DAG1_concat == [3, 4]
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_hs_das_rejects_bad_window():
    with pytest.raises(ValueError, match="window"):
        HsDasSearch(C=4, cells_per_stage=3, window=5, fused=False)
    with pytest.raises(ValueError, match="window"):
        HsDasSearch(C=4, cells_per_stage=3, window=1, fused=False)


def test_hs_das_widths_and_stage_specific_cells():
    m = HsDasSearch(genotype=HC_DAS, C=4, cells_per_stage=2, fused=False)
    net = m.net
    assert net.stem[0].out_channels == 16  # stem multiplier 4
    # stage widths 4C, 8C, 16C; classifier on 32C
    assert [s.preprocess0.op[1].in_channels for s in net.stages] == [16, 32, 64]
    assert net.classifier.in_features == 128
    # the stage inputs are 1x1 ReLU-conv-BN with affine=False
    assert all(not s.preprocess1.op[2].affine for s in net.stages)
    # each stage builds its own Hc-DAS normal cell: normal1 is all sep_conv_3x3, normal2 has skips
    ops = [[type(op).__name__ for op in s.cells[0]._ops] for s in net.stages]
    assert set(ops[0]) == {"SepConv"} and "Identity" in ops[1]
    y = m(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 10)


def test_hs_das_rejects_unknown_genotype():
    with pytest.raises(ValueError, match="unknown genotype name"):
        HsDasSearch(genotype="NOPE", C=4, cells_per_stage=2, fused=False)
    with pytest.raises(ValueError, match="Genotype or StageCellsGenotype"):
        HsDasSearch(genotype="HS_DAS_CIFAR", C=4, cells_per_stage=2, fused=False)


@pytest.mark.parametrize("n_max,n_min", [(3, 2), (5, 3), (4, 4), (3, 1)])
def test_distribution_any_lengths(n_max, n_min):
    torch.manual_seed(0)
    m = DistributionSearch(C=4, n_max=n_max, n_min=n_min, fused=False)
    assert [b.numel() for b in m.stage_betas()] == [n_max - n_min + 1] * 3
    assert m.net.stages[0].pairs == output_pairs(n_min, n_max)
    y = m(torch.randn(2, 3, 8, 8))
    y.sum().backward()
    assert all(b.grad is not None for b in m.stage_betas())
    with torch.no_grad():
        m.beta_stage2.zero_()
        m.beta_stage2[-1] = 1.0
    g = m.genotype()
    assert g.DAG2_concat == [n_max, n_max + 1]
    assert m.stage_lengths()[1] == n_max
    assert len(g.DAG1) == n_max


def test_derivation_follows_the_alphas():
    m = HsDasSearch(C=4, cells_per_stage=3, fused=False)
    with torch.no_grad():
        for a in m.alpha_stage1:
            a.zero_()
        # cell 2 (states 1,2,3): avg_pool from state 3 strongest, max_pool from state 1 next;
        # 'none' is ignored however large
        m.alpha_stage1[2][2, 1] = 3.0
        m.alpha_stage1[2][0, 0] = 2.0
        m.alpha_stage1[2][1, 3] = 9.0
    g = m.genotype()
    assert g.DAG1[2] == [("avg_pool_3x3", 3), ("max_pool_3x3", 1)]


@pytest.mark.parametrize("cls", [DartsCellSearch, HcDasSearch])
def test_partial_channels_and_edge_normalization(cls):
    """PC-DARTS' options: every edge a partial-channel MixedOp, one beta per edge and set (an
    architecture parameter) normalised per node, the genotype ranking edges by them."""
    from hdas_ext import fuse_mixed_ops
    from hdas_ext.nn import FusedPartialMixedOp
    from hdas_ext.reference import PartialMixedOp
    m = cls(C=8, layers=5, steps=2, multiplier=2, fused=False, partial_channels=4, edge_normalization=True)
    edges = [op for cell in m.net.cells for op in cell._ops]
    assert all(type(op) is PartialMixedOp and op.k == 4 for op in edges)
    betas = [n for n, _ in m.named_alphas() if n.startswith("beta_")]
    assert betas == ["beta_" + s for s in m.SET_NAMES]
    sets, edge_sets = m.arch_weights()
    for e in edge_sets:  # nodes of 2 and 3 edges, each summing to 1
        torch.testing.assert_close(torch.stack([e[:2].sum(), e[2:].sum()]), torch.ones(2))
    with torch.no_grad():
        getattr(m, "beta_" + m.SET_NAMES[0])[2:] = torch.tensor([-9.0, 0.0, 9.0])
    normal = getattr(m.genotype(), m.SET_NAMES[0])
    assert [s for _, s in normal[2:4]] == [2, 1]  # node 1 keeps its two heaviest edges
    y = m(torch.randn(2, 3, 8, 8))
    y.sum().backward()
    assert all(p.grad is not None for p in m.alphas())
    assert fuse_mixed_ops(m) == len(edges) and all(isinstance(op, FusedPartialMixedOp) for op in edges)
    with pytest.raises(ValueError, match=r"C \(6\) must be divisible by partial_channels = 4"):
        cls(C=6, layers=5, partial_channels=4)
    with pytest.raises(ValueError, match="edge_normalization must be True or False"):
        cls(C=8, layers=5, edge_normalization=1)
