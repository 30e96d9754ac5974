"""The convolution candidates of fused MixedOps through hdas::conv_candidates: for the edges that
read one input, every sep_conv/dil_conv op this package built (SepConv, DilConv) runs in one
fused call, its weight folded into its last BatchNorm; the call returns each edge's weighted sum of
them, which the fused MixedOp hands to hdas::mixed_node as one ADD tensor. BatchNorm running
statistics are updated as nn.BatchNorm2d updates them."""
import torch

from .. import ops
from ..batchnorm import batch_norm_rules, update_running_stats
from ..lean import lean_apply
from ..ops.codes import CONV_KINDS, CONV_SHAPES
from ..ops.conv_candidates import NATIVE, conv_candidates_unchecked
from .operations import DilConv, SepConv

__all__ = ["conv_plan", "conv_sums"]


def _fits(op, kind, C, stride):
    """Whether op (SepConv or DilConv) is exactly the branch `kind` on C channels at `stride`."""
    k, d, halves = CONV_SHAPES[kind]
    seq = getattr(op, "op", None)
    if type(op) is not (SepConv if halves == 2 else DilConv) or len(seq) != 4 * halves:
        return False
    for h in range(halves):
        dw, pw, bn = seq[4 * h + 1], seq[4 * h + 2], seq[4 * h + 3]
        s = stride if h == 0 else 1
        dil = d if h == 0 else 1
        if (tuple(dw.weight.shape) != (C, 1, k, k) or dw.bias is not None or dw.stride != (s, s)
                or dw.dilation != (dil, dil) or dw.padding != (dil * (k - 1) // 2,) * 2 or dw.groups != C
                or tuple(pw.weight.shape) != (C, C, 1, 1) or pw.bias is not None or pw.stride != (1, 1)
                or bn.num_features != C):
            return False
    return True


def conv_plan(modules, primitives, codes, stride):
    """[(op index, kind)] of the ops a fused MixedOp runs through hdas::conv_candidates: the
    sep_conv/dil_conv ops this package built whose weight folds into their last BatchNorm (ADD)."""
    plan = []
    for k, (name, op, code) in enumerate(zip(primitives, modules, codes)):
        kind = CONV_KINDS.get(name)
        if kind is not None and code == ops.ADD and _fits(op, kind, op.op[1].weight.shape[0], stride):
            plan.append((k, kind))
    return plan


def _bns(op):
    return [op.op[3], op.op[7]] if isinstance(op, SepConv) else [op.op[3]]


def _runs_fused(x, bns):
    """Whether hdas::conv_candidates can run these BatchNorms' call on x: native ops for x's device,
    one eps and one normalisation rule for all."""
    if not NATIVE or not (x.device.type == "cpu" or torch._C._dispatch_has_kernel_for_dispatch_key(
            "hdas::conv_candidates", x.device.type.upper())):
        return False
    rule = batch_norm_rules(bns[0], bns[0].training)
    return all(b.eps == bns[0].eps and batch_norm_rules(b, b.training) == rule for b in bns)


@torch.compiler.disable(reason="lean mode (recompute=True) runs its ops eagerly inside a compiled model, so that its "
                                "backward can recompute them; a full graph needs recompute=False")
def _lean_call(*args):
    """The lean call (the backward recomputes), kept out of compiled graphs as hdas_ext.lean is."""
    return conv_candidates_unchecked(*args, lean=True)


def conv_sums(edges, x, weights, rows, lean=False):
    """[sum over edge's planned conv ops k of weights[rows[j], k] * op_k(x)] for the fused MixedOps
    `edges` (all reading x at one stride), in one hdas::conv_candidates call (None for an edge
    without such ops). weights: [*, P].
    lean: the call keeps none of the ops' internals for the backward (the lean mode)."""
    branches = [(j, k, kind) for j, edge in enumerate(edges) for k, kind in edge._conv]
    conv_ops = [edges[j]._ops[k] for j, k, _ in branches]
    bns = [bn for op in conv_ops for bn in _bns(op)]
    out = [None] * len(edges)
    if not _runs_fused(x, bns):  # the ops as modules, sharing one relu(x) (or lean)
        scales = [weights[rows[j], k] for j, k, _ in branches]
        ys = lean_apply(conv_ops, [x] * len(conv_ops), scales) if lean else \
            [op(r, scale=s, activated=True) for r in [conv_ops[0].op[0](x)] for op, s in zip(conv_ops, scales)]
        for (j, _, _), y in zip(branches, ys):
            out[j] = y if out[j] is None else out[j] + y
        return out
    present = sorted({j for j, _, _ in branches})
    dense = {j: i for i, j in enumerate(present)}
    idx_r = torch.tensor([rows[j] for j, _, _ in branches], device=weights.device)
    idx_k = torch.tensor([k for _, k, _ in branches], device=weights.device)
    w = weights[idx_r, idx_k]
    seqs = [op.op for op in conv_ops]
    dw1, pw1 = [s[1].weight for s in seqs], [s[2].weight for s in seqs]
    dw2, pw2 = [s[5].weight for s in seqs if len(s) == 8], [s[6].weight for s in seqs if len(s) == 8]
    gamma, beta = [b.weight for b in bns], [b.bias for b in bns]
    gamma, beta = (gamma if any(g is not None for g in gamma) else []), (beta if any(b is not None for b in beta) else [])
    if torch.is_autocast_enabled(x.device.type):  # the convolutions in the autocast dtype, as F.conv2d runs them
        dtype = torch.get_autocast_dtype(x.device.type)
        x, dw1, pw1, dw2, pw2 = x.to(dtype), *([p.to(dtype) for p in ps] for ps in (dw1, pw1, dw2, pw2))
    batch_stats, update = batch_norm_rules(bns[0], bns[0].training)
    rm = rv = None
    if not batch_stats:
        rm, rv = torch.stack([b.running_mean for b in bns]), torch.stack([b.running_var for b in bns])
    call = _lean_call if lean else conv_candidates_unchecked
    sums, mean, _, var = call(x, [kind for _, _, kind in branches], [dense[j] for j, _, _ in branches], w, dw1, pw1,
                              dw2, pw2, gamma, beta, edges[0].stride, batch_stats, rm, rv, bns[0].eps)
    if update:
        update_running_stats(bns, mean, var)
    for j, y in zip(present, sums):
        out[j] = y
    return out
