"""DARTS primitive operations (quark0/darts conventions, module and attribute names kept
so that state dicts interoperate with DARTS-family code). The parametric ops end in a BatchNorm2d
and take an optional `scale`: op(x, scale=w) == w * op(x), with w folded into that BN's affine,
which is how the fused MixedOps weight them (no separate multiply reads the op's output, and its
gradient needs no separate pass). They all begin with ReLU(x); op(r, activated=True) takes
r = relu(x) instead, so that a MixedOp computes (and keeps for the backward) one ReLU of its
input for all of its parametric ops instead of one each."""
import torch
import torch.nn.functional as F
from torch import nn

from ..batchnorm import batch_norm_rules, momentum_factor

__all__ = [
    "OPS", "ReLUConvBN", "DilConv", "SepConv", "Identity", "Zero", "FactorizedReduce",
    "PoolBN", "make_op", "batch_norm_rules", "momentum_factor", "scaled_batch_norm", "takes_scale", "leading_relu",
]


def scaled_batch_norm(bn, x, scale):
    """scale * bn(x) as one batch_norm call (scale: a 0-d tensor, e.g. an architecture weight):
    a BatchNorm with weight scale*gamma and bias scale*beta. bn's buffers are updated exactly as
    bn(x) updates them (the statistics are those of x). scale None: bn(x)."""
    if scale is None:
        return bn(x)
    bn._check_input_dim(x)
    batch_stats, update = batch_norm_rules(bn, bn.training)
    if update:
        bn.num_batches_tracked.add_(1)
    buffers = (bn.running_mean, bn.running_var) if update or not batch_stats else (None, None)
    weight = scale.expand(x.shape[1]) if bn.weight is None else bn.weight * scale
    bias = None if bn.bias is None else bn.bias * scale
    return F.batch_norm(x, *buffers, weight, bias, batch_stats, momentum_factor(bn) if update else 0.0, bn.eps)


def _sequential(seq, x, scale, activated):
    """seq(x), or scale * seq(x) with the scale folded into seq's last module, a BatchNorm2d;
    activated: x is already relu(x), and seq's first module, its ReLU, is skipped."""
    if scale is None and not activated:
        return seq(x)
    *body, bn = seq[1:] if activated else seq
    for m in body:
        x = m(x)
    return scaled_batch_norm(bn, x, scale)


class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x, scale=None, activated=False):
        return _sequential(self.op, x, scale, activated)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x, scale=None, activated=False):
        return _sequential(self.op, x, scale, activated)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, 1, padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x, scale=None, activated=False):
        return _sequential(self.op, x, scale, activated)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The 'none' op. Multiplies by zero (not zeros_like) so NaN/inf propagate as in DARTS."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """skip_connect at stride 2: two shifted 1x1 stride-2 convs, concatenated."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        if C_out % 2 != 0:
            raise ValueError(f"FactorizedReduce: C_out must be even, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x, scale=None, activated=False):
        x = x if activated else self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return scaled_batch_norm(self.bn, out, scale)


def takes_scale(module):
    """Whether module(x, scale=w) computes w * module(x), and module(relu(x), activated=True)
    module(x) (this package's parametric ops; subclasses and DARTS-family code's own classes are
    not assumed to)."""
    return type(module) in (ReLUConvBN, DilConv, SepConv, FactorizedReduce)


def leading_relu(module):
    """The ReLU module a takes_scale op begins with (so that a caller can run it once for several
    ops of the same input, then call them with activated=True)."""
    return module.relu if isinstance(module, FactorizedReduce) else module.op[0]


def PoolBN(pool_type, C, stride, affine=True):
    """3x3 pool (padding 1, average excludes padding) followed by BatchNorm2d, as a Sequential
    so the BN sits at index 1 (the key layout of DARTS' search-time MixedOp)."""
    return nn.Sequential(_pool(pool_type, stride), nn.BatchNorm2d(C, affine=affine))


def _pool(pool_type, stride):
    if pool_type == "max":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if pool_type == "avg":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    raise ValueError(f"pool_type must be 'max' or 'avg', got {pool_type!r}")


# OPS[name](C, stride, affine) -> module; pools are bare here, as in DARTS' evaluation cells.
OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: _pool("avg", stride),
    "max_pool_3x3": lambda C, stride, affine: _pool("max", stride),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
    "conv_7x1_1x7": lambda C, stride, affine: nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
        nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False),
        nn.BatchNorm2d(C, affine=affine),
    ),
}


def make_op(name, C, stride, affine, pool_bn):
    """One primitive as a module. pool_bn wraps pools as Sequential(pool, BatchNorm2d(C, affine))
    (DARTS search MixedOp, and H-DAS everywhere); without it pools are bare (DARTS evaluation)."""
    if name not in OPS:
        raise ValueError(f"unknown primitive {name!r}; expected one of {sorted(OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if pool_bn and name in ("max_pool_3x3", "avg_pool_3x3"):
        return PoolBN(name[:3], C, stride, affine=affine)
    return OPS[name](C, stride, affine)
