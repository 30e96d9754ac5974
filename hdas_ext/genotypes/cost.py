"""Parameter and multiply-add counts of a discrete DARTS cell, by formula (no modules built, so
this package stays import-light). Whole networks are counted by hdas_ext.networks on the real
modules; python_tests check these formulas against hdas_ext.nn.OPS modules.

Conventions (hdas_ext.nn.OPS): convs have no bias; a BatchNorm has 2C parameters when
affine, none otherwise; skip_connect at stride 2 is FactorizedReduce; pools carry a BN only when
``pool_bn`` (H-DAS: always; DARTS evaluation cells: never). Multiply-adds count convolutions only
(one MAC per weight per output position); BN, ReLU, pooling and the node sums are not counted.
An edge has stride 2 iff the cell is a reduction cell and it reads a cell input (state 0 or 1).
Every intermediate node of a reduction cell already lives at the output resolution, so the
stride-1 edges reading them run at H/2 x W/2, not at the input's H x W.
"""
from .types import cell_nodes, flatten_nodes


def _flat(cell):
    cell = list(cell)
    if cell and isinstance(cell[0], list):
        cell = flatten_nodes(cell)
    cell_nodes(cell)  # validates the pairing
    return cell


def _bn(C, affine):
    return 2 * C if affine else 0


def op_params(op, C, stride, affine=True, pool_bn=False):
    """Parameters of one primitive at C channels."""
    bn = _bn(C, affine)
    if op == "none":
        return 0
    if op == "skip_connect":
        return 0 if stride == 1 else C * C + bn
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return bn if pool_bn else 0
    if op.startswith("sep_conv_"):
        k = int(op[-1])
        return 2 * (k * k * C + C * C) + 2 * bn
    if op.startswith("dil_conv_"):
        k = int(op[-1])
        return k * k * C + C * C + bn
    if op == "conv_7x1_1x7":
        return 14 * C * C + bn
    raise ValueError(f"op_params: unknown op {op!r}")


def _out(size, stride):
    return (size + stride - 1) // stride


def op_madds(op, C, stride, H, W):
    """Convolution multiply-adds of one primitive on a C x H x W input."""
    Ho, Wo = _out(H, stride), _out(W, stride)
    if op in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return 0
    if op == "skip_connect":
        return 0 if stride == 1 else C * C * Ho * Wo
    if op.startswith("sep_conv_"):
        k = int(op[-1])
        return 2 * (k * k * C + C * C) * Ho * Wo
    if op.startswith("dil_conv_"):
        k = int(op[-1])
        return (k * k * C + C * C) * Ho * Wo
    if op == "conv_7x1_1x7":
        return 7 * C * C * H * Wo + 7 * C * C * Ho * Wo
    raise ValueError(f"op_madds: unknown op {op!r}")


def _check(C, *sizes):
    for v in (C,) + sizes:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"channel counts and sizes must be positive ints, got {v!r}")


def count_cell_params(cell, C, reduction, affine=True, pool_bn=False, C_pp=None, C_p=None,
                      reduction_prev=False):
    """Parameters of a discrete cell (flat or nested gene) at C channels per node. The two input
    preprocessors are included when C_pp and C_p are given: preproc0 = FactorizedReduce(C_pp, C)
    after a reduction cell, else ReLUConvBN 1x1 (C_pp -> C); preproc1 = ReLUConvBN 1x1 (C_p -> C)."""
    _check(C)
    total = sum(op_params(op, C, 2 if reduction and src < 2 else 1, affine, pool_bn) for op, src in _flat(cell))
    if C_pp is not None or C_p is not None:
        _check(C_pp, C_p)
        total += C_pp * C + _bn(C, affine) + C_p * C + _bn(C, affine)
    return total


def count_cell_madds(cell, C, reduction, H, W=None, C_pp=None, C_p=None):
    """Convolution multiply-adds of a discrete cell whose (preprocessed) inputs are C x H x W;
    preprocessors included when C_pp and C_p are given (a FactorizedReduce preproc0 reads 2H x 2W
    and costs the same as a 1x1 conv at H x W). In a reduction cell the nodes are
    ceil(H/2) x ceil(W/2) (what every stride-2 op yields), and edges reading them see that size."""
    W = H if W is None else W
    _check(C, H, W)
    node_hw = (_out(H, 2), _out(W, 2)) if reduction else (H, W)
    total = 0
    for op, src in _flat(cell):
        if src < 2:
            total += op_madds(op, C, 2 if reduction else 1, H, W)
        else:
            total += op_madds(op, C, 1, *node_hw)
    if C_pp is not None or C_p is not None:
        _check(C_pp, C_p)
        total += (C_pp + C_p) * C * H * W
    return total
