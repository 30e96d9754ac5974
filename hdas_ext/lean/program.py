"""The lean interpreter: an op module as a program of steps (traced from its forward, see trace.py),
run in the forward (BatchNorms updating their buffers, what the recomputation needs recorded) and
again in the backward from those records."""
import weakref

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..batchnorm import batch_norm_rules, momentum_factor
from .trace import NotLeanable, Ref, structure_key, trace_steps


class Program:
    """An op bound to its own submodules: steps (see trace_steps), `out` the step whose value the
    op returns, `shared` the step of a ReLU of the input that is all the op reads of it (answered
    by a relu(x) shared with the other ops) or None, `fold` the step of a BatchNorm whose output is
    the op's output (the op's weight folds into it) or None, `random`: the op may draw random
    numbers (its random state is replayed)."""
    __slots__ = ("steps", "out", "shared", "fold", "random")

    def __init__(self, op, traced):
        raw, self.out, self.random = traced
        self.steps = [_bind(op, s) for s in raw]
        users = [[i for i, s in enumerate(raw) if _reads(s, j)] for j in range(len(raw))]
        first = users[0]
        self.shared = first[0] if len(first) == 1 and raw[first[0]][0] == "relu" and self.out != 0 else None
        self.fold = self.out if raw[self.out][0] == "bn" and not users[self.out] else None


def _reads(step, j):
    found = []
    fx.node.map_aggregate(step[1:], lambda a: found.append(a.i) if isinstance(a, Ref) else None)
    return j in found


def _bind(op, step):
    kind = step[0]
    if kind in ("relu", "conv", "bn", "dropout"):
        return kind, op.get_submodule(step[1]), step[2].i
    if kind in ("param", "buffer", "attr"):
        return kind, op.get_submodule(step[1]), step[2]
    return step


_PARTS = weakref.WeakKeyDictionary()  # op -> {training: (program, parameter slots)}
_TRACED = {}  # (structure key, training) -> trace_steps' result


def _parts(op):
    """(program, parameter slots) of one op module in its current training mode, cached. The slots,
    (module, name) of every parameter the program reads, are looked up afresh at every call."""
    found = _PARTS.get(op)
    if found is None:
        found = _PARTS[op] = {}
    parts = found.get(op.training)
    if parts is None:
        key = structure_key(op)
        traced = _TRACED.get((key, op.training)) if key is not None else None
        if traced is None:
            traced = trace_steps(op)
            if key is not None:
                _TRACED[key, op.training] = traced
        slots = [(m, n) for m in op.modules() for n, p in m._parameters.items() if p is not None]
        parts = found[op.training] = (Program(op, traced), slots)
    return parts


def check_leanable(module, what):
    """Raises NotLeanable, naming `what`, unless lean_apply can run `module` (in both modes)."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        for training in (module.training, not module.training):
            module.train(training)
            _parts(module)
    except NotLeanable as e:
        raise NotLeanable(f"{what}: {e}") from None
    finally:
        for m, mode in modes:
            m.training = mode


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


def _value(vals, a):
    return fx.node.map_aggregate(a, lambda v: vals[v.i] if isinstance(v, Ref) else v)


def _run(program, x, scale, env, activated=False):
    """One op's program on x (activated: x is the relu of the input that program.shared computes);
    scale (0-d or None) folded into its final BatchNorm (as operations.scaled_batch_norm folds it),
    else multiplied."""
    vals = [None] * len(program.steps)
    vals[program.shared if activated else 0] = x
    for i, step in enumerate(program.steps):
        if vals[i] is not None or i == 0:
            continue
        kind, target, a = step[0], step[1], step[2]
        if kind == "relu":
            vals[i] = F.relu(vals[a])
        elif kind == "conv":
            vals[i] = env.conv(target, vals[a], i)
        elif kind == "bn":
            w, b = env.param(target, "weight"), env.param(target, "bias")
            if scale is not None and i == program.fold:
                w = scale.expand(vals[a].shape[1]) if w is None else w * scale
                b = None if b is None else b * scale
                scale = None
            vals[i] = env.batch_norm(target, vals[a], w, b)
        elif kind == "dropout":
            vals[i] = env.dropout(target, vals[a])
        elif kind == "param":
            vals[i] = env.param(target, a)
        elif kind in ("buffer", "attr"):
            vals[i] = getattr(target, a)
        elif kind == "function":
            vals[i] = target(*_value(vals, a), **_value(vals, step[3]))
        else:
            obj, *rest = _value(vals, a)
            vals[i] = getattr(obj, target)(*rest, **_value(vals, step[3]))
    out = vals[program.out]
    return out if scale is None else out * scale
