"""hdas::conv_candidates' backward as both autograd paths run it, and the eager path: an
autograd.Function for eager calls (torch.library's registered autograd flattens its arguments on
every call, and a call here carries dozens of parameter tensors). The registered autograd itself
is in conv_candidates.py."""
import torch

from ._common import engine_needs, no_double_backward

_NO_DOUBLE_BACKWARD = no_double_backward("hdas::conv_candidates")


class ConvMeta:
    """The static arguments of one call, and how its parameter tensors are laid out in a flat list:
    dw1 (B), pw1 (B), dw2 (S), pw2 (S), then the BatchNorm weights and biases that are present."""

    def __init__(self, kinds, edges, weight_slots, bias_slots, Z, stride, batch_stats, eps):
        self.kinds, self.edges = list(kinds), list(edges)
        self.B, self.E = len(self.kinds), max(self.edges) + 1
        self.S = sum(1 for k in self.kinds if k in (0, 1, 4))
        self.weight_slots, self.bias_slots, self.Z = list(weight_slots), list(bias_slots), Z
        self.stride, self.batch_stats, self.eps = stride, batch_stats, eps

    def split(self, params):
        """(dw1, pw1, dw2, pw2, bn_weight, bn_bias) from the flat list; BN lists with None where absent."""
        B, S = self.B, self.S
        dw1, pw1, dw2, pw2 = params[:B], params[B:2 * B], params[2 * B:2 * B + S], params[2 * B + S:2 * B + 2 * S]
        rest = params[2 * B + 2 * S:]
        nw = len(self.weight_slots)
        return dw1, pw1, dw2, pw2, self._slots(rest[:nw], self.weight_slots), self._slots(rest[nw:], self.bias_slots)

    def _slots(self, tensors, slots):
        if not slots:
            return []
        out = [None] * self.Z
        for z, t in zip(slots, tensors):
            out[z] = t
        return out

    def n_conv(self):
        return 2 * self.B + 2 * self.S


def run_backward(meta, grads, x, weights, params, saved, mean, invstd, needs):
    """hdas::conv_candidates_backward; returns (grad x, grad weights, grads of params) with None
    for what `needs` (x, weights, convolution weights, BN affine) did not ask for."""
    grads = [torch.zeros_like(x[:, :, ::meta.stride, ::meta.stride]) if g is None else g for g in grads]
    dw1, pw1, dw2, pw2, bw, bb = meta.split(params)
    gx, gw, gd1, gp1, gd2, gp2, gbw, gbb = torch.ops.hdas.conv_candidates_backward(
        grads, x, meta.kinds, meta.edges, weights, dw1, pw1, dw2, pw2, bw, bb, meta.stride, meta.batch_stats,
        saved, mean, invstd, needs)
    conv = [*gd1, *gp1, *gd2, *gp2] if needs[2] else [None] * meta.n_conv()
    bn = [*gbw, *gbb] if needs[3] else [None] * (len(meta.weight_slots) + len(meta.bias_slots))
    return (gx if needs[0] else None), (gw if needs[1] else None), conv + bn


class _EagerConvCandidates(torch.autograd.Function):
    """The op with autograd, for eager calls: same kernels, same saved tensors (none of the
    pointwise outputs when lean: the backward recomputes them)."""

    @staticmethod
    def forward(ctx, meta, lean, running, x, weights, *params):
        dw1, pw1, dw2, pw2, bw, bb = meta.split(list(params))
        with torch._C._AutoDispatchBelowAutograd():
            out, saved, mean, invstd, var = torch.ops.hdas.conv_candidates(
                x, meta.kinds, meta.edges, weights, dw1, pw1, dw2, pw2, bw, bb, meta.stride, meta.batch_stats,
                *running, meta.eps)
        ctx.meta, ctx.n_saved, ctx.lean = meta, 0 if lean else len(saved), lean
        ctx.save_for_backward(x, weights, mean, invstd, *params, *([] if lean else saved))
        ctx.mark_non_differentiable(mean, invstd, var)
        return (*out, mean, invstd, var)

    @staticmethod
    def backward(ctx, *grads):
        meta = ctx.meta
        if ctx.lean and torch.is_grad_enabled():  # as hdas_ext.lean refuses it
            raise RuntimeError("lean mode (recompute=True): double backward (create_graph=True) is not supported")
        x, weights, mean, invstd, *rest = ctx.saved_tensors
        params, saved = rest[:len(rest) - ctx.n_saved], rest[len(rest) - ctx.n_saved:]
        n_conv = meta.n_conv()
        need = engine_needs(ctx, 3, 2)  # x, weights, params: the params asked
        needs = [need[0], need[1], any(need[2:2 + n_conv]), any(need[2 + n_conv:])]
        with torch._C._AutoDispatchBelowAutograd():
            gx, gw, gp = run_backward(meta, list(grads[:meta.E]), x, weights, params, saved, mean, invstd, needs)
        out = (gx, gw, *gp)
        if torch.is_grad_enabled():  # create_graph=True: these gradients refuse to be differentiated
            out = tuple(None if g is None else _NoDoubleBackward.apply(g, x) for g in out)
        return (None, None, None, *out)


class _NoDoubleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, x):
        return g.view_as(g)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


def eager_conv_candidates(meta, x, weights, params, running, lean=False):
    """The op through _EagerConvCandidates: (outs, mean, invstd, batch_var). params: the flat list
    of ConvMeta, as views where they require grad (engine_needs asks the engine about them)."""
    res = _EagerConvCandidates.apply(meta, lean, running, x, weights, *params)
    return list(res[:meta.E]), *res[meta.E:]
