"""hdas::conv_candidates: the public function, its argument checks, the fake kernels and the
registered autograd. The formula is in csrc/conv_candidates.h and conv_reference.py."""
import torch

from .._native import native_available, warn_fallback
from ._common import acc_dtype, empty_like_format, register_no_double_backward
from ._conv_candidates_autograd import ConvMeta, eager_conv_candidates, run_backward
from .codes import CONV_SHAPES
from .conv_reference import conv_candidates_with_stats

_OP = "hdas::conv_candidates"
# A native library built before this op existed loads without it: the package then runs the reference.
NATIVE = native_available() and hasattr(torch.ops.hdas, "conv_candidates")
_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_param(t, name, i, shape, x):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{_OP}: {name}[{i}] must have shape {list(shape)}, got {list(t.shape)}")
    if t.dtype != x.dtype:
        raise TypeError(f"{_OP}: {name}[{i}] must have dtype {x.dtype} like x, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{_OP}: {name}[{i}] must be on {x.device} like x, got {t.device}")


def check_x(x, stride):
    """The checks of csrc/conv_candidates.cpp on x and stride, with the same words (callers that
    run modules on x first check it before)."""
    if x.dim() != 4:
        raise ValueError(f"{_OP}: x must be a 4-D tensor [N, C, H, W], got shape {list(x.shape)}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{_OP}: x must be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{_OP}: empty batch: x has N = 0")
    if min(x.shape[1:]) <= 0:
        raise ValueError(f"{_OP}: x must have C, H, W > 0, got shape {list(x.shape)}")
    if stride not in (1, 2):
        raise ValueError(f"{_OP}: stride must be 1 or 2, got {stride}")


def check_args(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride):
    """The checks of csrc/conv_candidates.cpp, with the same words, for the Python paths. Returns
    the number of BatchNorm slots."""
    check_x(x, stride)
    B = len(kinds)
    if B == 0:
        raise ValueError(f"{_OP}: kinds must name at least one branch")
    if len(edges) != B:
        raise ValueError(f"{_OP}: edges must give one edge per branch ({B}), got {len(edges)}")
    for b, (k, e) in enumerate(zip(kinds, edges)):
        if k not in CONV_SHAPES:
            raise ValueError(f"{_OP}: kinds[{b}] must be a convolution code in 0..4 (sep_conv_3x3, sep_conv_5x5, "
                             f"dil_conv_3x3, dil_conv_5x5, sep_conv_7x7), got {k}")
        if not 0 <= e < B:
            raise ValueError(f"{_OP}: edges[{b}] must be an edge index in 0..{B - 1}, got {e}")
    for e in range(max(edges) + 1):
        if e not in edges:
            raise ValueError(f"{_OP}: edges must number the edges 0..E-1, each with at least one branch; edge {e} "
                             "has none")
    if tuple(weights.shape) != (B,):
        raise ValueError(f"{_OP}: weights must have shape [num_branches] = [{B}], got {list(weights.shape)}")
    if weights.device != x.device:
        raise ValueError(f"{_OP}: weights must be on {x.device} like x, got {weights.device}")
    S = sum(1 for k in kinds if CONV_SHAPES[k][2] == 2)
    if len(dw1) != B or len(pw1) != B:
        raise ValueError(f"{_OP}: dw1 and pw1 must hold one tensor per branch ({B}), got {len(dw1)} and {len(pw1)}")
    if len(dw2) != S or len(pw2) != S:
        raise ValueError(f"{_OP}: dw2 and pw2 must hold one tensor per separable branch ({S}), got {len(dw2)} and "
                         f"{len(pw2)}")
    C, j = x.shape[1], 0
    for b, kind in enumerate(kinds):
        k, _, halves = CONV_SHAPES[kind]
        _check_param(dw1[b], "dw1", b, (C, 1, k, k), x)
        _check_param(pw1[b], "pw1", b, (C, C, 1, 1), x)
        if halves == 2:
            _check_param(dw2[j], "dw2", j, (C, 1, k, k), x)
            _check_param(pw2[j], "pw2", j, (C, C, 1, 1), x)
            j += 1
    Z = B + S
    for name, ps in (("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if len(ps) not in (0, Z):
            raise ValueError(f"{_OP}: {name} must be empty (no affine BatchNorm) or hold one entry per BatchNorm slot "
                             f"({Z}), got {len(ps)}")
        for i, p in enumerate(ps):
            if p is not None and tuple(p.shape) != (C,):
                raise ValueError(f"{_OP}: {name}[{i}] must have shape [{C}], got {list(p.shape)}")
    return Z


if NATIVE:

    @torch.library.register_fake("hdas::conv_candidates")
    def _fake(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride, batch_stats, running_mean,
              running_var, eps):
        N, C, H, W = x.shape
        shape = (N, C, (H - 1) // stride + 1, (W - 1) // stride + 1)
        acc = acc_dtype(x.dtype)
        E, Z = max(edges) + 1, len(kinds) + len(dw2)
        out = [empty_like_format(x, shape) for _ in range(E)]
        saved = [x.new_empty(shape, dtype=acc) for _ in range(len(kinds) + len(dw2))]
        return (out, saved, x.new_empty((Z, C), dtype=acc), x.new_empty((Z, C), dtype=acc),
                x.new_empty((Z, C) if batch_stats else (0,), dtype=acc))

    @torch.library.register_fake("hdas::conv_candidates_backward")
    def _fake_backward(grad_out, x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride,
                       batch_stats, saved, save_mean, save_invstd, needs):
        none = x.new_empty((0,))
        conv = [[p.new_empty(p.shape) for p in ps] if needs[2] else [] for ps in (dw1, pw1, dw2, pw2)]
        affine = [[p.new_empty(p.shape) for p in ps if p is not None] if needs[3] else [] for ps in (bn_weight, bn_bias)]
        return (empty_like_format(x, x.shape) if needs[0] else none,
                weights.new_empty(weights.shape) if needs[1] else none, *conv, *affine)

    def _meta(kinds, edges, bn_weight, bn_bias, dw2, stride, batch_stats, eps):
        Z = len(kinds) + len(dw2)
        return ConvMeta(kinds, edges, [z for z, p in enumerate(bn_weight) if p is not None],
                        [z for z, p in enumerate(bn_bias) if p is not None], Z, stride, batch_stats, eps)

    def _setup_context(ctx, inputs, output):
        x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride, batch_stats, _, _, eps = inputs
        _, saved, mean, invstd, _ = output
        ctx.meta = _meta(kinds, edges, bn_weight, bn_bias, dw2, stride, batch_stats, eps)
        ctx.n_bn = (len(bn_weight), len(bn_bias))
        params = [*dw1, *pw1, *dw2, *pw2, *(p for p in bn_weight if p is not None),
                  *(p for p in bn_bias if p is not None)]
        ctx.save_for_backward(x, weights, mean, invstd, *params, *saved)
        ctx.n_params = len(params)

    def _backward(ctx, grad_out, *_unused):
        meta = ctx.meta
        x, weights, mean, invstd, *rest = ctx.saved_tensors
        params, saved = rest[:ctx.n_params], rest[ctx.n_params:]
        ni = ctx.needs_input_grad
        needs = [ni[0], ni[3], any(ni[4:8]), any(ni[8:10])]
        gx, gw, gp = run_backward(meta, list(grad_out), x, weights, params, saved, mean, invstd, needs)
        B, S = meta.B, meta.S
        conv = [gp[:B], gp[B:2 * B], gp[2 * B:2 * B + S], gp[2 * B + S:2 * B + 2 * S]]
        found = iter(gp[2 * B + 2 * S:])
        affine = []
        for slots, n in zip((meta.weight_slots, meta.bias_slots), ctx.n_bn):
            grads = [None] * n
            for z in slots:
                grads[z] = next(found)
            affine.append(grads)
        return (gx, None, None, gw, *conv, *affine, None, None, None, None, None)

    torch.library.register_autograd("hdas::conv_candidates", _backward, setup_context=_setup_context)
    register_no_double_backward("hdas::conv_candidates")


def conv_candidates(x, kinds, edges, weights, dw1, pw1, dw2=(), pw2=(), bn_weight=(), bn_bias=(), stride=1,
                    batch_stats=True, running_mean=None, running_var=None, eps=1e-5):
    """The convolution candidates of the edges reading x, fused (csrc/conv_candidates.h):
    [out_e] with out_e = sum over branches b of edge e (edges[b] == e) of weights[b] * branch_b(x),
    branch_b by kinds[b] (codes.CONV_KINDS): DARTS' sep_conv_kxk or dil_conv_kxk with the given
    depthwise (dw1, dw2) and pointwise (pw1, pw2) weights; BatchNorm slot z (branch by branch, in
    module order) with bn_weight[z] / bn_bias[z] (or none), batch statistics when batch_stats, else
    rows z of running_mean/var ([Z, C]). Returns (outs, mean, invstd, batch_var), the statistics
    [Z, C] (batch_var unbiased, for the caller's running-statistics update); running statistics
    are never modified here."""
    kinds, edges = [int(k) for k in kinds], [int(e) for e in edges]
    dw1, pw1, dw2, pw2, bn_weight, bn_bias = map(list, (dw1, pw1, dw2, pw2, bn_weight, bn_bias))
    check_args(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride)
    return conv_candidates_unchecked(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride,
                                     batch_stats, running_mean, running_var, eps)


def conv_candidates_unchecked(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride=1,
                              batch_stats=True, running_mean=None, running_var=None, eps=1e-5, lean=False):
    """conv_candidates without its Python checks, for callers that checked their arguments in their
    own words (hdas_ext.nn); lists and ints. lean: the backward recomputes the pointwise outputs
    instead of keeping them (eager calls). The native op still checks its contract."""
    if not NATIVE:
        warn_fallback()
        return conv_candidates_with_stats(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride,
                                          batch_stats, running_mean, running_var, eps)
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        meta = ConvMeta(kinds, edges, [z for z, p in enumerate(bn_weight) if p is not None],
                        [z for z, p in enumerate(bn_bias) if p is not None], len(kinds) + len(dw2), stride,
                        batch_stats, eps)
        params = [*dw1, *pw1, *dw2, *pw2, *(p for p in bn_weight if p is not None),
                  *(p for p in bn_bias if p is not None)]
        params = [p.view_as(p) if p.requires_grad else p for p in params]  # views: see engine_needs
        return eager_conv_candidates(meta, x, weights, params, (running_mean, running_var), lean)
    out, _, mean, invstd, var = torch.ops.hdas.conv_candidates(x, kinds, edges, weights, dw1, pw1, dw2, pw2,
                                                               bn_weight, bn_bias, stride, batch_stats,
                                                               running_mean, running_var, eps)
    return list(out), mean, invstd, var
