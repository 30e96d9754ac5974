"""Functional eager formulas with the same signature as the fused ops (see hdas_ext.ops)."""
import torch
import torch.nn.functional as F

# Codes shared with csrc/ (see csrc/mixed_node.h).
NONE, MAX_POOL, AVG_POOL, SKIP, EXTRA, ADD = 0, 1, 2, 3, 4, 5
CODES = {"none": NONE, "max_pool_3x3": MAX_POOL, "avg_pool_3x3": AVG_POOL, "skip_connect": SKIP}


def _prim_value(code, x, stride):
    if code == NONE:
        return x[:, :, ::stride, ::stride].mul(0.0)
    if code == MAX_POOL:
        return F.max_pool2d(x, 3, stride, 1)
    if code == AVG_POOL:
        return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    if code == SKIP:
        return x
    raise ValueError(f"unknown primitive code {code}")


def mixed_node(inputs, weights, prims, extras=(), stride=1, pool_bn=True, training=True,
               running_mean=None, running_var=None, momentum=0.1, eps=1e-5):
    """out = sum_e sum_p weights[e, p] * op_p(inputs[e]); op_p for code EXTRA is the next tensor
    of `extras` (edge-major); code ADD takes the next tensor too and adds it unweighted (the caller
    has applied its weight; weights[e, p] is ignored there). Pools are followed by
    BatchNorm(affine=False) when pool_bn; running statistics ([m, Q, C], one row per pool
    primitive) are updated in place in training."""
    extras = list(extras)
    k_per_edge = sum(1 for c in prims if c in (EXTRA, ADD))
    out = 0
    for e, x in enumerate(inputs):
        q, k = 0, 0
        for p, code in enumerate(prims):
            if code in (EXTRA, ADD):
                y = extras[e * k_per_edge + k]
                k += 1
                if code == ADD:
                    out = out + y
                    continue
            else:
                y = _prim_value(code, x, stride)
            if pool_bn and code in (MAX_POOL, AVG_POOL):
                rm = None if running_mean is None else running_mean[e, q]
                rv = None if running_var is None else running_var[e, q]
                y = F.batch_norm(y, rm, rv, training=training or rm is None, momentum=momentum, eps=eps)
                q += 1
            out = out + weights[e, p] * y
    return out


def pair_concat(states, weights, pairs):
    """sum_k weights[k] * cat(states[pairs[k][0]], states[pairs[k][1]], dim=1)."""
    return sum(w * torch.cat([states[i], states[j]], dim=1) for w, (i, j) in zip(weights, pairs))
