"""hdas::mixed_node: the public function, its argument checks, the fake kernels and the registered
autograd."""
import torch

from .._native import native_available, warn_fallback
from ._common import acc_dtype, empty_like_format, register_no_double_backward
from ._mixed_node_autograd import eager_mixed_node, extra_codes, save, saved_backward
from .codes import ADD, AVG_POOL, EXTRA, MAX_POOL, NONE, SKIP
from .partial_channels import check_partial_channels
from .reference import mixed_node_with_stats

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


def check_groups(inputs, stride, groups):
    """The partial-channel checks of csrc/mixed_node.cpp on checked inputs, in its order and words."""
    if isinstance(groups, int) and groups > 1 and len(inputs) != 1:
        raise ValueError(f"{_OP}: groups > 1 (partial channels) takes one input, got {len(inputs)}")
    _, C, H, W = inputs[0].shape
    check_partial_channels(groups, C, "groups", "inputs[0]'s channels", (H, W), stride, _OP)


def check_args(inputs, weights, prims, extras, stride, groups=1):
    """The checks of csrc/mixed_node.cpp, with the same words, for the Python paths."""
    check_inputs(inputs)
    x0 = inputs[0]
    if stride not in (1, 2):
        raise ValueError(f"{_OP}: stride must be 1 or 2, got {stride}")
    check_groups(inputs, stride, groups)
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
    out_shape = [N, C // groups, (H - 1) // stride + 1, (W - 1) // stride + 1]
    shape_name = "mixed channels' shape" if groups > 1 else "output shape"
    for i, y in enumerate(extras):
        if list(y.shape) != out_shape:
            raise ValueError(f"{_OP}: extras[{i}] must have the {shape_name} {out_shape}, got {list(y.shape)}")
        if y.dtype != x0.dtype:
            raise TypeError(f"{_OP}: extras[{i}] must have dtype {x0.dtype} like inputs, got {y.dtype}")


if native_available():

    @torch.library.register_fake("hdas::mixed_node")
    def _fake(inputs, weights, prims, extras, stride, pool_bn, batch_stats, running_mean, running_var, eps, groups=1):
        x = inputs[0]
        N, Cx, H, W = x.shape
        E, Q = len(inputs), sum(1 for c in prims if c in (MAX_POOL, AVG_POOL))
        bn = pool_bn and Q > 0
        out = empty_like_format(x, (N, Cx, (H - 1) // stride + 1, (W - 1) // stride + 1))
        stat = (E, Q, Cx // groups) if bn else (0,)
        acc = acc_dtype(x.dtype)
        return (out, x.new_empty(stat, dtype=acc), x.new_empty(stat, dtype=acc),
                x.new_empty(stat if batch_stats else (0,), dtype=acc))

    @torch.library.register_fake("hdas::mixed_node_backward")
    def _fake_backward(grad_out, inputs, weights, prims, extras, stride, pool_bn, batch_stats, save_mean, save_invstd,
                       groups=1):
        x0 = inputs[0]
        codes = extra_codes(prims, len(inputs))
        return ([empty_like_format(x0, x.shape) for x in inputs], weights.new_empty(weights.shape),
                [empty_like_format(x0, y.shape) for y, c in zip(extras, codes) if c == EXTRA])

    def _setup_context(ctx, inputs, output):
        xs, weights, prims, extras, stride, pool_bn, batch_stats, _, _, _, groups = inputs
        _, mean, invstd, _ = output
        save(ctx, xs, weights, extras, mean, invstd, prims, stride, pool_bn, batch_stats, groups)

    def _backward(ctx, grad_out, *_unused_stat_grads):
        _, _, gx, gw, ge = saved_backward(ctx, grad_out)
        grads = (list(gx), gw, None, list(ge), None, None, None, None, None, None, None)
        # One per argument passed: the dispatcher drops trailing arguments equal to their defaults
        # (groups=1) before the autograd wrapper, and torch 2.11 checks the count.
        return grads[:len(ctx.needs_input_grad)]

    torch.library.register_autograd("hdas::mixed_node", _backward, setup_context=_setup_context)
    register_no_double_backward("hdas::mixed_node")


def mixed_node(inputs, weights, prims, extras=(), stride=1, pool_bn=True, batch_stats=True,
               running_mean=None, running_var=None, eps=1e-5, groups=1):
    """out = sum_e sum_p weights[e, p] * op_p(inputs[e]) in one fused kernel family.

    prims: codes (see CODES; EXTRA takes the next tensor of `extras`, edge-major). Pools are
    followed by BatchNorm(affine=False) when pool_bn: batch statistics when batch_stats, else the
    given running statistics ([num_inputs, num_pools, C]). Returns (out, mean, invstd, batch_var)
    where batch_var is the unbiased batch variance for the caller's running-statistics update.
    Running statistics are never modified here.

    groups = k > 1 (one input of C channels): PC-DARTS' partial-channel MixedOp. The sum mixes
    the first C/k channels (extras and statistics have C/k); the output has C channels, output
    channel i*k holding mixed channel i and channel i*k + g (g >= 1) input channel g*C/k + i,
    max-pooled 2x2 at stride 2: PC-DARTS' channel shuffle of [mixed, the other channels].
    """
    inputs, extras, prims = list(inputs), list(extras), [int(c) for c in prims]
    check_args(inputs, weights, prims, extras, stride, groups)
    return mixed_node_unchecked(inputs, weights, prims, extras, stride, pool_bn, batch_stats,
                                running_mean, running_var, eps, groups)


def mixed_node_unchecked(inputs, weights, prims, extras, stride=1, pool_bn=True, batch_stats=True,
                         running_mean=None, running_var=None, eps=1e-5, groups=1):
    """mixed_node without its Python argument checks, for callers that have checked the arguments
    they were given, in their own words (hdas_ext.nn's fused modules); inputs, extras: lists,
    prims: ints. The native op still checks its contract."""
    if native_available():
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return eager_mixed_node(inputs, weights, prims, extras, stride, pool_bn, batch_stats,
                                    running_mean, running_var, eps, groups)
        return torch.ops.hdas.mixed_node(inputs, weights, prims, extras, stride, pool_bn, batch_stats,
                                         running_mean, running_var, eps, groups)
    warn_fallback()
    return mixed_node_with_stats(inputs, weights, prims, extras, stride, pool_bn, batch_stats,
                                 running_mean, running_var, eps, groups)
