"""Cell parameter / multiply-add formulas against real hdas_ext.nn modules."""
import pytest
import torch
from torch import nn

import hdas_ext.genotypes as G
from hdas_ext.nn import FactorizedReduce, ReLUConvBN, make_op


def build_cell(cell, C, reduction, affine, pool_bn, C_pp, C_p, reduction_prev):
    pre0 = FactorizedReduce(C_pp, C, affine=affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine=affine)
    pre1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=affine)
    ops = [make_op(op, C, 2 if reduction and src < 2 else 1, affine, pool_bn) for op, src in cell]
    return pre0, pre1, ops


def conv_macs(module, x, with_output=False):
    total = [0]

    def hook(m, inp, out):
        total[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        y = module(x)
    for h in handles:
        h.remove()
    return (total[0], y) if with_output else total[0]


def cell_op_macs(cell, C, reduction, H, W):
    """Measured conv MACs of a cell's ops, each run on the state it actually reads (so in a
    reduction cell the edges from intermediate nodes see the already-halved maps)."""
    states = [torch.zeros(1, C, H, W), torch.zeros(1, C, H, W)]
    total = 0
    for node in G.cell_nodes(cell):
        out = 0
        for op, src in node:
            macs, y = conv_macs(make_op(op, C, 2 if reduction and src < 2 else 1, True, False), states[src], True)
            total += macs
            out = out + y
        states.append(out)
    return total


@pytest.mark.parametrize("name, field, reduction", [
    ("DARTS_V2", "normal", False), ("DARTS_V2", "reduce", True), ("PDARTS", "reduce", True),
    ("noisy_darts_a", "normal", False), ("HC_DAS", "reduce2", True), ("PC_DARTS_cifar", "reduce", True),
])
@pytest.mark.parametrize("affine, pool_bn", [(True, False), (False, True), (True, True)])
def test_params_match_modules(name, field, reduction, affine, pool_bn):
    cell = getattr(G.get(name), field)
    C, C_pp, C_p = 8, 24, 12
    pre0, pre1, ops = build_cell(cell, C, reduction, affine, pool_bn, C_pp, C_p, reduction_prev=True)
    expected_ops = sum(p.numel() for m in ops for p in m.parameters())
    assert G.count_cell_params(cell, C, reduction, affine, pool_bn) == expected_ops
    expected = expected_ops + sum(p.numel() for m in (pre0, pre1) for p in m.parameters())
    assert G.count_cell_params(cell, C, reduction, affine, pool_bn, C_pp=C_pp, C_p=C_p, reduction_prev=True) == expected
    assert G.count_cell_params(G.cell_nodes(cell), C, reduction, affine, pool_bn) == expected_ops


@pytest.mark.parametrize("name, field, reduction", [
    ("DARTS_V2", "normal", False), ("PDARTS", "reduce", True), ("HC_DAS", "normal3", False)])
def test_madds_match_modules(name, field, reduction):
    cell = getattr(G.get(name), field)
    C, H = 8, 8
    expected = cell_op_macs(cell, C, reduction, H, H)
    assert G.count_cell_madds(cell, C, reduction, H) == expected
    pre0 = FactorizedReduce(16, C)
    pre1 = ReLUConvBN(4, C, 1, 1, 0)
    pre = conv_macs(pre0, torch.zeros(1, 16, 2 * H, 2 * H)) + conv_macs(pre1, torch.zeros(1, 4, H, H))
    assert G.count_cell_madds(cell, C, reduction, H, C_pp=16, C_p=4) == expected + pre


class _TwoInputs(nn.Module):
    def __init__(self, cell, split):
        super().__init__()
        self.cell, self.split = cell, split

    def forward(self, x):
        return self.cell(x[:, :self.split], x[:, self.split:])


# Regression: reduction cells once costed the stride-1 edges that read intermediate nodes at the
# input resolution (PDARTS reduce, C=16, 8x8, C_pp=24, C_p=32: 187,904 instead of 124,928).
@pytest.mark.parametrize("name, field, H, W", [
    ("PDARTS", "reduce", 8, 8), ("DARTS_V2", "reduce", 8, 8), ("PC_DARTS_cifar", "reduce", 8, 8),
    ("noisy_darts_a", "reduce", 8, 8), ("HC_DAS", "reduce2", 8, 8),
    ("PDARTS", "reduce", 7, 6), ("PC_DARTS_cifar", "reduce", 9, 5),
])
def test_reduction_cell_madds_match_network_cell(name, field, H, W):
    from hdas_ext.networks import Cell, count_multiply_adds
    gene = getattr(G.get(name), field)
    C, C_pp, C_p = 16, 24, 32
    ops = cell_op_macs(gene, C, True, H, W)
    assert G.count_cell_madds(gene, C, True, H, W) == ops
    cell = Cell(gene, getattr(G.get(name), field + "_concat"), C_pp, C_p, C, True, False, pool_bn=False)
    measured = count_multiply_adds(_TwoInputs(cell, C_pp), (C_pp + C_p, H, W), device="cpu")
    assert G.count_cell_madds(gene, C, True, H, W, C_pp=C_pp, C_p=C_p) == measured
    assert measured == ops + (C_pp + C_p) * C * H * W


def test_pdarts_reduce_by_hand():
    # Stride-2 ops read the 8x8 inputs, the dil convs on nodes 2 and 3 read 4x4 nodes; all output 4x4.
    sep5, sep3 = 2 * (25 * 16 + 256) * 16, 2 * (9 * 16 + 256) * 16
    dil5, dil3 = (25 * 16 + 256) * 16, (9 * 16 + 256) * 16
    by_hand = sep5 + sep3 + dil5 + 2 * dil3 + dil5 + (24 + 32) * 16 * 8 * 8
    assert G.count_cell_madds(G.PDARTS.reduce, 16, True, 8, C_pp=24, C_p=32) == by_hand


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive ints"):
        G.count_cell_params(G.DARTS_V2.normal, 0, False)
    with pytest.raises(ValueError, match="unknown op"):
        G.op_params("conv_9x9", 4, 1)
