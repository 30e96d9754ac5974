"""The lean interpreter: an op module as a flat program of steps, run in the forward (BatchNorms
updating their buffers, what the recomputation needs recorded) and again in the backward from
those records."""
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..batchnorm import batch_norm_rules, momentum_factor


class NotLeanable(ValueError):
    """A module the lean interpreter cannot run."""


# ---- an op module as a flat program of steps -----------------------------------------------------
_LEAVES = ((nn.ReLU, "relu"), (nn.Conv2d, "conv"), (nn.BatchNorm2d, "bn"), (nn.MaxPool2d, "pure"),
           (nn.AvgPool2d, "pure"), (nn.Identity, "pure"), (nn.Dropout, "dropout"))


def _program(m):
    if isinstance(m, nn.Sequential):
        return [s for c in m for s in _program(c)]
    kind = type(m).__name__
    if kind in ("SepConv", "DilConv", "ReLUConvBN") and isinstance(getattr(m, "op", None), nn.Sequential):
        return _program(m.op)
    if kind == "FactorizedReduce" and all(hasattr(m, a) for a in ("relu", "conv_1", "conv_2", "bn")):
        return [("relu", m.relu), ("factorized", m), ("bn", m.bn)]
    for cls, step in _LEAVES:
        if type(m) is cls:
            return [(step, m)]
    if kind in ("Identity", "Zero") and not list(m.parameters()) and not list(m.buffers()):
        return [("pure", m)]
    raise NotLeanable(f"lean mode cannot recompute a {kind} module: it runs Sequential, ReLU, Conv2d, "
                      "BatchNorm2d, MaxPool2d, AvgPool2d, Dropout, identities and DARTS' SepConv, DilConv, "
                      "ReLUConvBN and FactorizedReduce")


_PARTS = weakref.WeakKeyDictionary()


def _parts(op):
    """(program, parameter slots) of one op module, cached. The slots, (module, name) of every
    parameter the program reads, are looked up afresh at every call."""
    found = _PARTS.get(op)
    if found is None:
        slots = [(m, n) for m in op.modules() for n, p in m._parameters.items() if p is not None]
        found = _PARTS[op] = (_program(op), slots)
    return found


def check_leanable(module, what):
    """Raises NotLeanable, naming `what`, unless lean_apply can run `module`."""
    try:
        _parts(module)
    except NotLeanable as e:
        raise NotLeanable(f"{what}: {e}") from None


# ---- BatchNorm with the forward's statistics -------------------------------------------------------
class _BatchNormGivenStats(torch.autograd.Function):
    """Training-mode batch norm of x, with the batch statistics (mean, invstd) the forward computed
    from this same x: output and gradients of a batch norm whose statistics are x's own."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, eps):
        alpha = invstd if weight is None else invstd * weight
        beta = -mean * alpha if bias is None else bias - mean * alpha
        shape = (1, -1) + (1,) * (x.dim() - 2)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return (x * alpha.view(shape) + beta.view(shape)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True,
                                                                ctx.eps, mask)
        return gx, gw, gb, None, None, None


class _Forward:
    """Runs programs in the forward: BatchNorms update their buffers as nn.BatchNorm2d does, and
    what the recomputation needs is recorded."""

    def __init__(self, params):
        self.params = params  # (id(module), name) -> tensor
        self.records = []

    def param(self, m, name):
        return self.params.get((id(m), name))

    def batch_norm(self, bn, x, weight, bias):
        batch_stats, update = batch_norm_rules(bn, bn.training)
        if not batch_stats:
            rm, rv = bn.running_mean.clone(), bn.running_var.clone()
            self.records.append(("running", rm, rv))
            return F.batch_norm(x, rm, rv, weight, bias, False, 0.0, bn.eps)
        if update:
            bn.num_batches_tracked.add_(1)
        buffers = (bn.running_mean, bn.running_var) if update else (None, None)
        out, mean, invstd = torch.native_batch_norm(x, weight, bias, *buffers, True,
                                                    momentum_factor(bn) if update else 0.0, bn.eps)
        self.records.append(("batch", mean, invstd))
        return out

    def conv(self, m, x, step):
        """m(x) with the parameters read by the forward; step: its index in the op's program."""
        return m._conv_forward(x, self.param(m, "weight"), self.param(m, "bias"))

    def dropout(self, m, x):
        self.records.append(("dropout", m.training))
        return F.dropout(x, m.p, m.training)


class _Replay(_Forward):
    """Runs programs again in the backward, from the forward's records."""

    def __init__(self, params, records):
        super().__init__(params)
        self.records = iter(records)

    def batch_norm(self, bn, x, weight, bias):
        kind, a, b = next(self.records)
        if kind == "running":
            return F.batch_norm(x, a, b, weight, bias, False, 0.0, bn.eps)
        return _BatchNormGivenStats.apply(x, weight, bias, a, b, bn.eps)

    def dropout(self, m, x):
        return F.dropout(x, m.p, next(self.records)[1])


def _run(steps, x, scale, env):
    """One op's program on x; scale (0-d or None) folded into a final BatchNorm (as
    operations.scaled_batch_norm folds it), else multiplied."""
    for i, (kind, m) in enumerate(steps):
        if kind == "relu":
            x = F.relu(x)
        elif kind == "conv":
            x = env.conv(m, x, i)
        elif kind == "bn":
            w, b = env.param(m, "weight"), env.param(m, "bias")
            if scale is not None and i == len(steps) - 1:
                w = scale.expand(x.shape[1]) if w is None else w * scale
                b = None if b is None else b * scale
                scale = None
            x = env.batch_norm(m, x, w, b)
        elif kind == "factorized":
            x = torch.cat([env.conv(m.conv_1, x, i), env.conv(m.conv_2, x[:, :, 1:, 1:], i)], dim=1)
        elif kind == "dropout":
            x = env.dropout(m, x)
        else:
            x = m.forward(x)
    return x if scale is None else x * scale

