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


def conv_macs(module, x):
    total = [0]

    def hook(m, inp, out):
        total[0] += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return total[0]


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
    x = torch.zeros(1, C, H, H)
    expected = sum(conv_macs(make_op(op, C, 2 if reduction and src < 2 else 1, True, False), x) for op, src in cell)
    assert G.count_cell_madds(cell, C, reduction, H) == expected
    pre0 = FactorizedReduce(16, C)
    pre1 = ReLUConvBN(4, C, 1, 1, 0)
    pre = conv_macs(pre0, torch.zeros(1, 16, 2 * H, 2 * H)) + conv_macs(pre1, torch.zeros(1, 4, H, H))
    assert G.count_cell_madds(cell, C, reduction, H, C_pp=16, C_p=4) == expected + pre


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive ints"):
        G.count_cell_params(G.DARTS_V2.normal, 0, False)
    with pytest.raises(ValueError, match="unknown op"):
        G.op_params("conv_9x9", 4, 1)
