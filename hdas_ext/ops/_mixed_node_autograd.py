"""hdas::mixed_node's backward as both autograd paths run it (what they save, how they call the
backward kernel), and the eager path: an autograd.Function for eager calls, with its guard
against a double backward. The registered autograd itself is in mixed_node.py."""
import torch

from ._common import no_double_backward
from .codes import ADD, EXTRA

_NO_DOUBLE_BACKWARD = no_double_backward("hdas::mixed_node")


def extra_codes(prims, n_inputs):
    """The code of every tensor of `extras` (edge-major): EXTRA or ADD."""
    return [c for _ in range(n_inputs) for c in prims if c in (EXTRA, ADD)]


def save(ctx, xs, weights, extras, mean, invstd, prims, stride, pool_bn, batch_stats, groups):
    """What both autograd paths keep for the backward: the inputs, the EXTRA tensors (conv outputs),
    the weights and the per-channel statistics. ADD tensors are not kept (the backward never reads
    them), so a folded conv output is freed after the forward."""
    codes = extra_codes(prims, len(xs))
    ctx.save_for_backward(weights, mean, invstd, *xs, *(y for y, c in zip(extras, codes) if c == EXTRA))
    ctx.meta = (len(xs), list(prims), stride, pool_bn, batch_stats, groups)


def saved_backward(ctx, grad_out):
    """hdas::mixed_node_backward on what save() kept: (weights, inputs + extras, gx, gw, ge), ge
    holding every extra's gradient: the kernel's for EXTRA, grad_out itself for ADD (the kernel
    returns the EXTRA ones only)."""
    n_in, prims, stride, pool_bn, batch_stats, groups = ctx.meta
    weights, mean, invstd, *tensors = ctx.saved_tensors
    codes = extra_codes(prims, n_in)
    kept = iter(tensors[n_in:])
    # The mixed channels' gradient (output channels i*groups), a view: it stands in for the ADD
    # tensors (same shape, dtype and device, never read) and is their gradient.
    grad_mixed = grad_out[:, ::groups] if groups > 1 else grad_out
    extras = [next(kept) if c == EXTRA else grad_mixed for c in codes]
    gx, gw, ge = torch.ops.hdas.mixed_node_backward(grad_out, tensors[:n_in], weights, prims, extras,
                                                   stride, pool_bn, batch_stats, mean, invstd, groups)
    weighted = iter(ge)
    ge = [next(weighted) if c == EXTRA else grad_mixed for c in codes]
    return weights, tensors, gx, gw, ge


class _EagerMixedNode(torch.autograd.Function):
    """The registered autograd of hdas::mixed_node, for eager calls through mixed_node(): same
    kernels, same saved tensors, without torch.library's per-call argument flattening (about
    0.5 ms a call for a cell node's 25 tensors, more than its kernels take on small planes).
    torch.compile and direct torch.ops.hdas calls use the registered path."""

    @staticmethod
    def forward(ctx, weights, meta, *tensors):
        n_in, prims, stride, pool_bn, batch_stats, running_mean, running_var, eps, groups = meta
        xs, extras = list(tensors[:n_in]), list(tensors[n_in:])
        with torch._C._AutoDispatchBelowAutograd():
            out, mean, invstd, var = torch.ops.hdas.mixed_node(xs, weights, prims, extras, stride, pool_bn,
                                                               batch_stats, running_mean, running_var, eps, groups)
        save(ctx, xs, weights, extras, mean, invstd, prims, stride, pool_bn, batch_stats, groups)
        ctx.mark_non_differentiable(mean, invstd, var)
        return out, mean, invstd, var

    @staticmethod
    def backward(ctx, grad_out, *_unused_stat_grads):
        with torch._C._AutoDispatchBelowAutograd():
            weights, tensors, gx, gw, ge = saved_backward(ctx, grad_out)
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


def eager_mixed_node(inputs, weights, prims, extras, stride, pool_bn, batch_stats, running_mean, running_var, eps,
                     groups=1):
    """hdas::mixed_node through _EagerMixedNode (gradients flow to weights, inputs and extras)."""
    meta = (len(inputs), prims, stride, pool_bn, batch_stats, running_mean, running_var, eps, groups)
    return _EagerMixedNode.apply(weights, meta, *inputs, *extras)
