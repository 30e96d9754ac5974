"""The fused ops' formulas in eager PyTorch, argument for argument: the test oracle, the fallback
when the native library is missing, and the benchmarks' baseline. hdas_ext.reference re-exports
mixed_node and pair_concat with the eager modules."""
import torch
import torch.nn.functional as F

from ._common import acc_dtype
from .codes import ADD, AVG_POOL, EXTRA, MAX_POOL, NONE, SKIP


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


def partial_channels(mixed, x, groups, stride):
    """PC-DARTS' partial-channel output: cat([mixed, the other channels of x (max-pooled 2x2 at
    stride 2)]) shuffled in `groups` groups, so that channel i*groups holds mixed channel i."""
    passed = x[:, mixed.shape[1]:]
    if stride == 2:
        passed = F.max_pool2d(passed, 2, 2)
    out = torch.cat([mixed, passed], dim=1)
    N, C, H, W = out.shape
    return out.view(N, groups, C // groups, H, W).transpose(1, 2).reshape(N, C, H, W)


def mixed_node(inputs, weights, prims, extras=(), stride=1, pool_bn=True, training=True,
               running_mean=None, running_var=None, momentum=0.1, eps=1e-5, groups=1):
    """out = sum_e sum_p weights[e, p] * op_p(inputs[e]); op_p for code EXTRA is the next tensor
    of `extras` (edge-major); code ADD takes the next tensor too and adds it unweighted (the caller
    has applied its weight; weights[e, p] is ignored there). Pools are followed by
    BatchNorm(affine=False) when pool_bn; running statistics ([m, Q, C], one row per pool
    primitive) are updated in place in training. groups > 1 (one input): the sum on the first
    C/groups channels, placed by partial_channels."""
    if groups > 1:
        x = inputs[0]
        mixed = mixed_node([x[:, :x.shape[1] // groups]], weights, prims, extras, stride, pool_bn, training,
                           running_mean, running_var, momentum, eps)
        return partial_channels(mixed, x, groups, stride)
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


def mixed_node_with_stats(inputs, weights, prims, extras, stride, pool_bn, batch_stats, running_mean, running_var,
                          eps, groups=1):
    """hdas::mixed_node's whole contract, (out, mean, invstd, batch_var) with its statistics, in
    eager PyTorch: what hdas_ext.ops.mixed_node runs when the native library is missing."""
    if groups > 1:
        x = inputs[0]
        out, *stats = mixed_node_with_stats([x[:, :x.shape[1] // groups]], weights, prims, extras, stride, pool_bn,
                                            batch_stats, running_mean, running_var, eps)
        return (partial_channels(out, x, groups, stride), *stats)
    x0 = inputs[0]
    C, acc = x0.shape[1], acc_dtype(x0.dtype)
    pools = [p for p, c in enumerate(prims) if c in (MAX_POOL, AVG_POOL)]
    empty = x0.new_empty((0,), dtype=acc)
    if not (pool_bn and pools):
        out = mixed_node(inputs, weights, prims, extras, stride, pool_bn=False)
        return out, empty, empty, empty
    if batch_stats:
        # The statistics returned are data (no gradient); batch_norm recomputes them differentiably.
        with torch.no_grad():
            vals = torch.stack([torch.stack([_prim_value(prims[p], x, stride).to(acc).transpose(0, 1).reshape(C, -1)
                                             for p in pools]) for x in inputs])  # [E, Q, C, M]
            mean, var_b, var_u = vals.mean(-1), vals.var(-1, unbiased=False), vals.var(-1, unbiased=True)
        out = mixed_node(inputs, weights, prims, extras, stride, pool_bn=True, training=True, eps=eps)
        return out, mean, (var_b + eps).rsqrt(), var_u
    out = mixed_node(inputs, weights, prims, extras, stride, pool_bn=True, training=False,
                     running_mean=running_mean.to(x0.dtype), running_var=running_var.to(x0.dtype), eps=eps)
    return out, running_mean.to(acc, copy=True), (running_var.to(acc) + eps).rsqrt(), empty


def pair_concat(states, weights, pairs):
    """sum_k weights[k] * cat(states[pairs[k][0]], states[pairs[k][1]], dim=1)."""
    return sum(w * torch.cat([states[i], states[j]], dim=1) for w, (i, j) in zip(weights, pairs))


def pair_concat_all_states(states, weights, pairs):
    """pair_concat with every state in the graph, as the fused op has it: a state no pair reads
    gets a zero gradient instead of none (an empty slice adds 0 and never NaN)."""
    used = {i for ij in pairs for i in ij}
    out = pair_concat(states, weights, pairs)
    return out + sum(s[:0].sum() for t, s in enumerate(states) if t not in used)
