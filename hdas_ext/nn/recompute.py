"""Memory-lean execution of op modules: a forward that keeps none of their internals, and a
backward that recomputes them (the `recompute=True` mode of the fused modules and supernets).

`lean_apply(modules, inputs, scales)` returns `[scales[k] * modules[k](inputs[k]) for k]`. Its
forward keeps only the inputs (states: every op reading one state shares it, and the graph keeps
the states anyway), the 0-d scales and, per BatchNorm, its per-channel statistics; the backward
rebuilds one op at a time from its input and differentiates it. An input may be a tuple of
states, concatenated along the channels inside (a cell's output feeding the next cells'
preprocessing keeps nothing beyond the states it is made of). The result is that of the modules:

- BatchNorm running statistics are updated once, in the forward, as nn.BatchNorm2d updates them;
  the recomputation normalises with the forward's batch statistics (kept, not recomputed) and
  differentiates through them as a training-mode batch norm does; a BatchNorm that used its
  running statistics uses the values it read in the forward.
- Dropout is replayed from the random state the forward ran it with.
- The parameters differentiated are the tensors the forward read (a torch.func.functional_call
  that substituted them has returned by the time the backward runs).
- Autocast is replayed with the forward's settings.
- Parameter gradients that the backward does not ask for (an architecture step's
  autograd.grad(loss, alphas)) are not computed.

What is kept is chosen by cost (benchmarks/lean_options.py measures the options; docs/memory.md
has the figures): every intermediate of a DARTS op (ReLU, depthwise and pointwise conv outputs,
BatchNorm inputs) costs as many bytes as the op's input, and the most expensive one to rebuild
per byte, the first depthwise conv's output, saves less time than its memory is worth;
recomputing one op at a time rather than a whole node keeps the backward's transient to one op's
intermediates at the same arithmetic.

Ops run through a small interpreter of the modules DARTS-family ops are made of (Sequential, ReLU,
Conv2d, BatchNorm2d, pools, Dropout, identity, DARTS' SepConv/DilConv/ReLUConvBN and
FactorizedReduce's two shifted convolutions); ops that begin with a ReLU share one ReLU of their
input per call, as the fused modules do. Module hooks inside the ops do not fire. Under
torch.compile the call runs eagerly (a graph break), with the same result.
"""
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..ops._common import engine_needs
from .operations import batch_norm_rules, momentum_factor

__all__ = ["lean_apply", "check_leanable", "NotLeanable"]


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


# ---- the autograd function -------------------------------------------------------------------------
class _Plan:
    """The static part of one call: programs, parameter slots, which input each op reads."""

    def __init__(self, modules, keys, scaled):
        parts = [_parts(m) for m in modules]
        self.programs = [p for p, _ in parts]
        self.keys, self.scaled = keys, scaled  # keys[k]: tuple of input indices op k reads (concatenated)
        # Ops whose program starts with a ReLU share one relu(input) per distinct input.
        self.shared = [p[0][0] == "relu" for p in self.programs]
        self.slots = [s for _, slots in parts for s in slots]
        self.ranges, start = [], 0
        for _, slots in parts:
            self.ranges.append((start, start + len(slots)))
            start += len(slots)
        self.stochastic = any(kind == "dropout" for p in self.programs for kind, _ in p)
        self.last_use = {key: k for k, key in enumerate(keys)}


def _cat(parts):
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _forward(plan, xs, scales, params):
    """The ops' outputs, and per op what its recomputation needs: records and random state."""
    env = _Forward({(id(m), n): p for (m, n), p in zip(plan.slots, params)})
    device = xs[0].device
    bases, outs, records, rng = {}, [], [], []
    for k, steps in enumerate(plan.programs):
        key = plan.keys[k]
        if key not in bases:
            bases[key] = [_cat([xs[i] for i in key]), None]
        base = bases[key]
        if plan.shared[k]:
            if base[1] is None:
                base[1] = F.relu(base[0])
            x, steps = base[1], steps[1:]
        else:
            x = base[0]
        if plan.last_use[key] == k:
            del bases[key]
        start = len(env.records)
        rng.append(_rng_state(device) if plan.stochastic else None)
        out = _run(steps, x, scales[k] if plan.scaled[k] else None, env)
        outs.append(out.clone() if out is x else out)  # an identity's output must not be its input
        records.append(env.records[start:])
    return outs, records, rng


class _Lean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, n_in, *tensors):
        n_op = len(plan.programs)
        xs, scales, params = tensors[:n_in], tensors[n_in:n_in + n_op], tensors[n_in + n_op:]
        device = xs[0].device
        ctx.autocast = (device.type, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        outs, ctx.records, ctx.rng = _forward(plan, xs, scales, params)
        ctx.plan, ctx.n_in = plan, n_in
        ctx.save_for_backward(*tensors)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("lean mode (recompute=True): double backward (create_graph=True) is not supported")
        plan, n_in, n_op = ctx.plan, ctx.n_in, len(ctx.plan.programs)
        tensors = ctx.saved_tensors
        xs, scales, params = tensors[:n_in], tensors[n_in:n_in + n_op], tensors[n_in + n_op:]
        need = _needed(ctx, n_in + n_op)
        leaves = [p.detach().requires_grad_(n) for p, n in zip(params, need[n_in + n_op:])]
        env_params = {(id(m), n): p for (m, n), p in zip(plan.slots, leaves)}
        g_in, g_sc, g_par = [None] * n_in, [None] * n_op, [None] * len(params)
        bases = {}  # key -> [base leaf, relu leaf or None, gradient of base, gradient of relu]
        device_type, enabled, dtype = ctx.autocast
        device = xs[0].device
        for k, steps in enumerate(plan.programs):
            key = plan.keys[k]
            if grads[k] is not None:
                if key not in bases:
                    base = _cat([xs[i] for i in key]).detach()
                    bases[key] = [base.requires_grad_(any(need[i] for i in key)), None, None, None]
                b = bases[key]
                if plan.shared[k]:
                    if b[1] is None:
                        with torch.no_grad():
                            b[1] = F.relu(b[0]).requires_grad_(b[0].requires_grad)
                    x, steps, slot = b[1], steps[1:], 3
                else:
                    x, slot = b[0], 2
                scale = scales[k].detach().requires_grad_(need[n_in + k]) if plan.scaled[k] else None
                with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled), \
                        torch.random.fork_rng([device] if device.type == "cuda" else [], enabled=plan.stochastic):
                    if plan.stochastic:
                        _set_rng_state(device, ctx.rng[k])
                    y = _run(steps, x, scale, _Replay(env_params, ctx.records[k]))
                a, e = plan.ranges[k]
                wrt = ([x] if x.requires_grad else []) + ([scale] if scale is not None and scale.requires_grad else []) \
                    + [leaves[i] for i in range(a, e) if leaves[i].requires_grad]
                if wrt:
                    got = iter(torch.autograd.grad(y, wrt, grads[k], allow_unused=True))
                    if x.requires_grad:
                        b[slot] = _add(b[slot], next(got))
                    if scale is not None and scale.requires_grad:
                        g_sc[k] = next(got)
                    for i in range(a, e):
                        if leaves[i].requires_grad:
                            g_par[i] = _add(g_par[i], next(got))
                del y
            if plan.last_use[key] == k and key in bases:
                _input_grads(bases.pop(key), key, xs, g_in)
        return (None, None, *g_in, *g_sc, *g_par)


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _input_grads(b, key, xs, g_in):
    """The gradient of one op input, through its shared ReLU, split into the concatenated states."""
    base, relu, g_base, g_relu = b
    if g_relu is not None:
        g_base = _add(g_base, torch.ops.aten.threshold_backward(g_relu, relu.detach(), 0))
    if g_base is None:
        return
    splits = g_base.split([xs[i].shape[1] for i in key], dim=1) if len(key) > 1 else (g_base,)
    for i, g in zip(key, splits):
        g_in[i] = _add(g_in[i], g)


def _needed(ctx, n_fixed):
    """The gradients the running backward uses (ops._common.engine_needs): not the parameters' in an
    architecture step."""
    return engine_needs(ctx, 2, n_fixed)


def _rng_state(device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device, state):
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


@torch.compiler.disable(reason="lean mode (recompute=True) runs its ops eagerly inside a compiled model, so that its "
                                "backward can recompute them; a full graph needs recompute=False")
def lean_apply(modules, inputs, scales=None):
    """[scales[k] * modules[k](inputs[k]) for k], keeping for the backward only the inputs, the
    scales and per-channel statistics (see the module docstring). inputs[k]: a tensor, or a tuple
    of tensors that the op reads concatenated along the channels. scales: None, or per module a
    0-d tensor or None."""
    modules = list(modules)
    if len(inputs) != len(modules):
        raise ValueError(f"lean_apply: expected one input per module ({len(modules)}), got {len(inputs)}")
    scales = [None] * len(modules) if scales is None else list(scales)
    if len(scales) != len(modules):
        raise ValueError(f"lean_apply: expected one scale per module ({len(modules)}), got {len(scales)}")
    xs, index, keys = [], {}, []
    for x in inputs:
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        for t in parts:
            if id(t) not in index:
                index[id(t)] = len(xs)
                xs.append(t)
        keys.append(tuple(index[id(t)] for t in parts))
    plan = _Plan(modules, keys, [s is not None for s in scales])
    params = [m._parameters[n] for m, n in plan.slots]
    if not torch.is_grad_enabled():
        return _forward(plan, xs, scales, params)[0]
    params = [p.view_as(p) if p.requires_grad else p for p in params]  # views: see _needed
    filler = xs[0].new_empty(())
    return list(_Lean.apply(plan, len(xs), *xs, *(filler if s is None else s for s in scales), *params))
