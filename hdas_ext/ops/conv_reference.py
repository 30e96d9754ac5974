"""hdas::conv_candidates' formula in eager PyTorch (plain functional ops, argument for argument):
the test oracle and the fallback when the native library is missing."""
import torch.nn.functional as F

from ._common import acc_dtype
from .codes import CONV_SHAPES


def conv_candidates(x, kinds, edges, weights, dw1, pw1, dw2=(), pw2=(), bn_weight=(), bn_bias=(), stride=1,
                    training=True, running_mean=None, running_var=None, momentum=0.1, eps=1e-5):
    """[out_e for each edge e]: out_e = sum over the branches b of edge e of weights[b] * branch_b(x),
    branch_b DARTS' sep_conv_kxk (ReLU, depthwise k x k at `stride`, pointwise, BN, then ReLU,
    depthwise at stride 1, pointwise, BN) or dil_conv_kxk (ReLU, depthwise with dilation 2,
    pointwise, BN) by kinds[b] (CONV_SHAPES). BatchNorm slot z (branch by branch, module order)
    uses bn_weight[z], bn_bias[z] (empty lists: no affine) and rows z of running_mean/var ([Z, C]),
    updated in place in training."""
    C = x.shape[1]
    outs = [None] * (max(edges) + 1)
    r = F.relu(x)
    slot, sep = 0, 0

    def bn(y):
        nonlocal slot
        rm = None if running_mean is None else running_mean[slot]
        rv = None if running_var is None else running_var[slot]
        w = bn_weight[slot] if len(bn_weight) else None
        b = bn_bias[slot] if len(bn_bias) else None
        slot += 1
        return F.batch_norm(y, rm, rv, w, b, training or rm is None, momentum, eps)

    for b, kind in enumerate(kinds):
        k, d, halves = CONV_SHAPES[kind]
        y = F.conv2d(F.conv2d(r, dw1[b], None, stride, d * (k - 1) // 2, d, C), pw1[b])
        if halves == 2:
            y = F.relu(bn(y))
            y = F.conv2d(F.conv2d(y, dw2[sep], None, 1, (k - 1) // 2, 1, C), pw2[sep])
            sep += 1
        y = weights[b] * bn(y)
        e = edges[b]
        outs[e] = y if outs[e] is None else outs[e] + y
    return outs


def conv_candidates_with_stats(x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride, batch_stats,
                               running_mean, running_var, eps):
    """hdas::conv_candidates' public contract, (outs, mean, invstd, batch_var) with the statistics
    of every BatchNorm slot ([Z, C], op-math dtype), in eager PyTorch: the no-native fallback."""
    acc = acc_dtype(x.dtype)
    args = (x, kinds, edges, weights, dw1, pw1, dw2, pw2, bn_weight, bn_bias, stride)
    if not batch_stats:
        outs = conv_candidates(*args, False, running_mean.to(x.dtype), running_var.to(x.dtype), eps=eps)
        return outs, running_mean.to(acc, copy=True), (running_var.to(acc) + eps).rsqrt(), x.new_empty((0,), dtype=acc)
    Z, C = sum(CONV_SHAPES[k][2] for k in kinds), x.shape[1]
    # Buffers updated with momentum 1 hold the batch mean and unbiased variance afterwards.
    mean, var_u = x.new_zeros((Z, C)), x.new_zeros((Z, C))
    outs = conv_candidates(*args, True, mean, var_u, momentum=1.0, eps=eps)
    count = x.shape[0] * outs[0].shape[2] * outs[0].shape[3]
    var_u = var_u.to(acc)
    return outs, mean.to(acc), (var_u * ((count - 1) / count) + eps).rsqrt(), var_u
