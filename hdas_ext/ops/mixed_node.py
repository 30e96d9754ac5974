"""hdas::mixed_node: fake kernel, autograd, argument checks and the public function."""
import torch
from torch._prims_common import suggest_memory_format

from .._native import native_available, warn_fallback
from ..reference import functional as ref

NONE, MAX_POOL, AVG_POOL, SKIP, EXTRA, ADD = ref.NONE, ref.MAX_POOL, ref.AVG_POOL, ref.SKIP, ref.EXTRA, ref.ADD
CODES = ref.CODES
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_OP = "hdas::mixed_node"


def check_inputs(inputs):
    """The checks of csrc/mixed_node.cpp on `inputs`, with the same words; callers that run
    modules on the inputs before the op (the fused modules' parametric ops) check them first."""
    if len(inputs) == 0:
        raise ValueError(f"{_OP}: inputs must be a non-empty list of tensors")
    x0 = inputs[0]
    if x0.dim() != 4:
        raise ValueError(f"{_OP}: inputs[0] must be a 4-D tensor [N, C, H, W], got shape {list(x0.shape)}")
    if x0.dtype not in _FLOATS:
        raise TypeError(f"{_OP}: inputs must be float32, float64, float16 or bfloat16, got {x0.dtype}")
    for i, x in enumerate(inputs[1:], 1):
        if x.shape != x0.shape:
            raise ValueError(f"{_OP}: inputs[{i}] must have the shape of inputs[0] {list(x0.shape)}, got {list(x.shape)}")
        if x.dtype != x0.dtype:
            raise TypeError(f"{_OP}: inputs[{i}] must have dtype {x0.dtype} like inputs[0], got {x.dtype}")
        if x.device != x0.device:
            raise ValueError(f"{_OP}: inputs[{i}] must be on {x0.device} like inputs[0], got {x.device}")
    if x0.shape[0] == 0:
        raise ValueError(f"{_OP}: empty batch: inputs have N = 0")


def check_args(inputs, weights, prims, extras, stride):
    """The checks of csrc/mixed_node.cpp, with the same words, for the Python paths."""
    check_inputs(inputs)
    x0 = inputs[0]
    if stride not in (1, 2):
        raise ValueError(f"{_OP}: stride must be 1 or 2, got {stride}")
    for p, code in enumerate(prims):
        if code not in (NONE, MAX_POOL, AVG_POOL, SKIP, EXTRA, ADD):
            raise ValueError(f"{_OP}: prims[{p}] must be a primitive code in 0..5 (none, max_pool_3x3, "
                             f"avg_pool_3x3, skip_connect, extra, add), got {code}")
        if code == SKIP and stride != 1:
            raise ValueError(f"{_OP}: prims[{p}] is skip_connect at stride 2, which is FactorizedReduce "
                             "(a parametric op): pass its output as an extra")
    E, P = len(inputs), len(prims)
    if tuple(weights.shape) != (E, P):
        raise ValueError(f"{_OP}: weights must have shape [num_inputs, num_primitives] = [{E}, {P}], "
                         f"got {list(weights.shape)}")
    if weights.device != x0.device:
        raise ValueError(f"{_OP}: weights must be on {x0.device} like inputs, got {weights.device}")
    K = sum(1 for c in prims if c in (EXTRA, ADD))
    if len(extras) != E * K:
        raise ValueError(f"{_OP}: expected {E * K} extras (num_inputs x number of 'extra' and 'add' primitives = "
                         f"{E} x {K}), got {len(extras)}")
    N, C, H, W = x0.shape
    out_shape = [N, C, (H - 1) // stride + 1, (W - 1) // stride + 1]
    for i, y in enumerate(extras):
        if list(y.shape) != out_shape:
            raise ValueError(f"{_OP}: extras[{i}] must have the output shape {out_shape}, got {list(y.shape)}")
        if y.dtype != x0.dtype:
            raise TypeError(f"{_OP}: extras[{i}] must have dtype {x0.dtype} like inputs, got {y.dtype}")


def _fmt(x):
    return torch.channels_last if suggest_memory_format(x) == torch.channels_last else torch.contiguous_format


def _empty_like_format(x, shape):
    """A new tensor of `shape` in the layout the kernels give outputs: that of x."""
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_fmt(x))


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


_NO_DOUBLE_BACKWARD = f"{_OP}: double backward (create_graph=True through the fused op) is not supported"


def _save(ctx, xs, weights, extras, mean, invstd, prims, stride, pool_bn, batch_stats):
    """What both autograd paths keep for the backward: the inputs, the EXTRA tensors (conv outputs),
    the weights and the per-channel statistics. ADD tensors are not kept (the backward never reads
    them), so a folded conv output is freed after the forward."""
    codes = _extra_codes(prims, len(xs))
    ctx.save_for_backward(weights, mean, invstd, *xs, *(y for y, c in zip(extras, codes) if c == EXTRA))
    ctx.meta = (len(xs), list(prims), stride, pool_bn, batch_stats)


def _extra_codes(prims, n_inputs):
    """The code of every tensor of `extras` (edge-major): EXTRA or ADD."""
    return [c for _ in range(n_inputs) for c in prims if c in (EXTRA, ADD)]


def _saved_backward(ctx, grad_out):
    """hdas::mixed_node_backward on what _save kept: (weights, inputs + extras, gx, gw, ge), ge
    holding every extra's gradient: the kernel's for EXTRA, grad_out itself for ADD (the kernel
    returns the EXTRA ones only)."""
    n_in, prims, stride, pool_bn, batch_stats = ctx.meta
    weights, mean, invstd, *tensors = ctx.saved_tensors
    codes = _extra_codes(prims, n_in)
    kept = iter(tensors[n_in:])
    # grad_out stands in for the ADD tensors: same shape, dtype and device, and never read.
    extras = [next(kept) if c == EXTRA else grad_out for c in codes]
    gx, gw, ge = torch.ops.hdas.mixed_node_backward(grad_out, tensors[:n_in], weights, prims, extras,
                                                   stride, pool_bn, batch_stats, mean, invstd)
    weighted = iter(ge)
    ge = [next(weighted) if c == EXTRA else grad_out for c in codes]
    return weights, tensors, gx, gw, ge


if native_available():

    @torch.library.register_fake("hdas::mixed_node")
    def _fake(inputs, weights, prims, extras, stride, pool_bn, batch_stats, running_mean, running_var, eps):
        x = inputs[0]
        N, C, H, W = x.shape
        E, Q = len(inputs), sum(1 for c in prims if c in (MAX_POOL, AVG_POOL))
        bn = pool_bn and Q > 0
        out = _empty_like_format(x, (N, C, (H - 1) // stride + 1, (W - 1) // stride + 1))
        stat = (E, Q, C) if bn else (0,)
        acc = _acc(x.dtype)
        return (out, x.new_empty(stat, dtype=acc), x.new_empty(stat, dtype=acc),
                x.new_empty(stat if batch_stats else (0,), dtype=acc))

    @torch.library.register_fake("hdas::mixed_node_backward")
    def _fake_backward(grad_out, inputs, weights, prims, extras, stride, pool_bn, batch_stats, save_mean, save_invstd):
        x0 = inputs[0]
        codes = _extra_codes(prims, len(inputs))
        return ([_empty_like_format(x0, x.shape) for x in inputs], weights.new_empty(weights.shape),
                [_empty_like_format(x0, y.shape) for y, c in zip(extras, codes) if c == EXTRA])

    def _setup_context(ctx, inputs, output):
        xs, weights, prims, extras, stride, pool_bn, batch_stats, _, _, _ = inputs
        _, mean, invstd, _ = output
        _save(ctx, xs, weights, extras, mean, invstd, prims, stride, pool_bn, batch_stats)

    def _backward(ctx, grad_out, *_unused_stat_grads):
        _, _, gx, gw, ge = _saved_backward(ctx, grad_out)
        return list(gx), gw, None, list(ge), None, None, None, None, None, None

    torch.library.register_autograd("hdas::mixed_node", _backward, setup_context=_setup_context)

    def _no_double_backward(ctx, *grads):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)

    torch.library.register_autograd("hdas::mixed_node_backward", _no_double_backward, setup_context=lambda ctx, inputs, output: None)


class _EagerMixedNode(torch.autograd.Function):
    """The registered autograd of hdas::mixed_node, for eager calls through mixed_node(): same
    kernels, same saved tensors, without torch.library's per-call argument flattening (about
    0.5 ms a call for a cell node's 25 tensors, more than its kernels take on small planes).
    torch.compile and direct torch.ops.hdas calls use the registered path."""

    @staticmethod
    def forward(ctx, weights, meta, *tensors):
        n_in, prims, stride, pool_bn, batch_stats, running_mean, running_var, eps = meta
        xs, extras = list(tensors[:n_in]), list(tensors[n_in:])
        with torch._C._AutoDispatchBelowAutograd():
            out, mean, invstd, var = torch.ops.hdas.mixed_node(xs, weights, prims, extras, stride, pool_bn,
                                                               batch_stats, running_mean, running_var, eps)
        _save(ctx, xs, weights, extras, mean, invstd, prims, stride, pool_bn, batch_stats)
        ctx.mark_non_differentiable(mean, invstd, var)
        return out, mean, invstd, var

    @staticmethod
    def backward(ctx, grad_out, *_unused_stat_grads):
        with torch._C._AutoDispatchBelowAutograd():
            weights, tensors, gx, gw, ge = _saved_backward(ctx, grad_out)
        grads = (gw, *gx, *ge)
        if torch.is_grad_enabled():  # create_graph=True: these gradients refuse to be differentiated
            grads = _NoDoubleBackward.apply(len(grads), *grads, weights, *tensors)
        return (grads[0], None, *grads[1:])


class _NoDoubleBackward(torch.autograd.Function):
    """Passes the first n tensors through; differentiating them raises (the op has no double
    backward). The rest, the op's inputs, connect the outputs to the graph."""

    @staticmethod
    def forward(ctx, n, *tensors):
        return tuple(t.view_as(t) for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


def mixed_node(inputs, weights, prims, extras=(), stride=1, pool_bn=True, batch_stats=True,
               running_mean=None, running_var=None, eps=1e-5):
    """out = sum_e sum_p weights[e, p] * op_p(inputs[e]) in one fused kernel family.

    prims: codes (see CODES; EXTRA takes the next tensor of `extras`, edge-major). Pools are
    followed by BatchNorm(affine=False) when pool_bn: batch statistics when batch_stats, else the
    given running statistics ([num_inputs, num_pools, C]). Returns (out, mean, invstd, batch_var)
    where batch_var is the unbiased batch variance for the caller's running-statistics update.
    Running statistics are never modified here.
    """
    inputs, extras, prims = list(inputs), list(extras), [int(c) for c in prims]
    check_args(inputs, weights, prims, extras, stride)
    if native_available():
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            meta = (len(inputs), prims, stride, pool_bn, batch_stats, running_mean, running_var, eps)
            return _EagerMixedNode.apply(weights, meta, *inputs, *extras)
        return torch.ops.hdas.mixed_node(inputs, weights, prims, extras, stride, pool_bn, batch_stats,
                                         running_mean, running_var, eps)
    warn_fallback()
    return _reference_with_stats(inputs, weights, prims, extras, stride, pool_bn, batch_stats,
                                 running_mean, running_var, eps)


def _reference_with_stats(inputs, weights, prims, extras, stride, pool_bn, batch_stats, running_mean, running_var, eps):
    """The same contract in eager PyTorch (used when the native library is missing)."""
    x0 = inputs[0]
    E, C, acc = len(inputs), x0.shape[1], _acc(x0.dtype)
    pools = [p for p, c in enumerate(prims) if c in (MAX_POOL, AVG_POOL)]
    empty = x0.new_empty((0,), dtype=acc)
    if not (pool_bn and pools):
        out = ref.mixed_node(inputs, weights, prims, extras, stride, pool_bn=False)
        return out, empty, empty, empty
    if batch_stats:
        vals = torch.stack([torch.stack([ref._prim_value(prims[p], x, stride).to(acc).transpose(0, 1).reshape(C, -1)
                                         for p in pools]) for x in inputs])  # [E, Q, C, M]
        mean, var_b = vals.mean(-1), vals.var(-1, unbiased=False)
        var_u = vals.var(-1, unbiased=True)
        rm, rv = mean, var_b
    else:
        rm, rv, var_u = running_mean.to(acc), running_var.to(acc), empty
    out = ref.mixed_node(inputs, weights, prims, extras, stride, pool_bn=True, training=False,
                         running_mean=rm.to(x0.dtype), running_var=rv.to(x0.dtype), eps=eps)
    return out, rm, (rv + eps).rsqrt(), var_u
