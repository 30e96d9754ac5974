"""The convolution candidates of fused MixedOps through hdas::conv_candidates: for the edges that
read one input, every sep_conv/dil_conv op runs in one fused call, its weight folded into its last
BatchNorm; the call returns each edge's weighted sum of them, which the fused MixedOp hands to
hdas::mixed_node as one ADD tensor. BatchNorm running statistics are updated as nn.BatchNorm2d
updates them. An op is one of them by what it computes, whoever built it: ReLU, depthwise conv,
pointwise conv, BatchNorm, once (dil_conv) or twice (sep_conv), read from its traced program."""
import torch
from torch import nn

from .. import ops
from ..batchnorm import batch_norm_rules, update_running_stats
from ..lean import NotLeanable, lean_apply
from ..lean.trace import Ref, trace_steps
from ..ops.codes import CONV_SHAPES
from ..ops.conv_candidates import NATIVE, conv_candidates_unchecked
from .operations import DilConv, SepConv, takes_scale

__all__ = ["conv_plan", "conv_sums"]

_KINDS = {shape: kind for kind, shape in CONV_SHAPES.items()}
_CHAIN = ("relu", "conv", "conv", "bn")


def conv_halves(op):
    """((depthwise, pointwise, BatchNorm) paths in op, per half) when op computes relu -> conv ->
    conv -> BN once or twice in a chain and nothing else, else None. Ops of this package are read
    from their layout; others from their traced program (hdas_ext.lean.trace)."""
    if type(op) in (SepConv, DilConv):
        return tuple((f"op.{4 * h + 1}", f"op.{4 * h + 2}", f"op.{4 * h + 3}") for h in range(len(op.op) // 4))
    try:
        steps, out, random = trace_steps(op)
    except NotLeanable:
        return None
    body = steps[1:]
    if random or len(body) not in (4, 8) or out != len(body) or \
            any(st[0] != _CHAIN[i % 4] or not isinstance(st[2], Ref) or st[2].i != i for i, st in enumerate(body)):
        return None
    if any(getattr(op.get_submodule(st[1]), "inplace", False) for st in body[::4]):
        return None  # an in-place ReLU changes its input: the original and the fused op differ
    return tuple(tuple(st[1] for st in body[h + 1:h + 4]) for h in range(0, len(body), 4))


def _kind(op, halves, stride):
    """The conv_candidates kind op computes on its channels at `stride` (halves: conv_halves), or None."""
    modules = [tuple(op.get_submodule(p) for p in half) for half in halves]
    dw = modules[0][0]
    if type(dw) is not nn.Conv2d or dw.kernel_size[0] != dw.kernel_size[1] or dw.dilation[0] != dw.dilation[1]:
        return None
    kind = _KINDS.get((dw.kernel_size[0], dw.dilation[0], len(halves)))
    if kind is None:
        return None
    k, d, _ = CONV_SHAPES[kind]
    C = dw.weight.shape[0]
    for h, (dw, pw, bn) in enumerate(modules):
        s, dil = (stride, d) if h == 0 else (1, 1)
        if (type(dw) is not nn.Conv2d or type(pw) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d)
                or tuple(dw.weight.shape) != (C, 1, k, k) or dw.bias is not None or dw.stride != (s, s)
                or dw.dilation != (dil, dil) or dw.padding != (dil * (k - 1) // 2,) * 2 or dw.groups != C
                or dw.padding_mode != "zeros" or pw.padding_mode != "zeros"
                or tuple(pw.weight.shape) != (C, C, 1, 1) or pw.bias is not None or pw.stride != (1, 1)
                or pw.padding != (0, 0) or pw.groups != 1 or bn.num_features != C):
            return None
    return kind


def conv_plan(modules, codes, stride):
    """(((op index, kind), ...), {op index: conv_halves}) of the ops a fused MixedOp runs through
    hdas::conv_candidates: sep_conv/dil_conv ops whose weight folds into their last BatchNorm (ADD)."""
    plan, halves = [], {}
    for k, (op, code) in enumerate(zip(modules, codes)):
        found = conv_halves(op) if code == ops.ADD else None
        kind = found and _kind(op, found, stride)
        if kind is not None:
            plan.append((k, kind))
            halves[k] = found
    return tuple(plan), halves


def _modules(edge, k):
    """[(depthwise, pointwise, BatchNorm) per half] of edge's op k, found by path at each call
    (a DataParallel replica finds its own)."""
    op = edge._ops[k]
    return [tuple(op.get_submodule(p) for p in half) for half in edge._conv_halves[k]]


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
    halves = [_modules(edges[j], k) for j, k, _ in branches]
    bns = [half[2] for op in halves for half in op]
    out = [None] * len(edges)
    if not _runs_fused(x, bns):  # the ops as modules, this package's sharing one relu(x) (or lean)
        scales = [weights[rows[j], k] for j, k, _ in branches]
        own = [op for op in conv_ops if takes_scale(op)]
        r = own[0].op[0](x) if own else None  # their shared ReLU module (its hooks fire once)
        ys = lean_apply(conv_ops, [x] * len(conv_ops), scales) if lean else \
            [op(r, scale=s, activated=True) if takes_scale(op) else op(x) * s for op, s in zip(conv_ops, scales)]
        for (j, _, _), y in zip(branches, ys):
            out[j] = y if out[j] is None else out[j] + y
        return out
    present = sorted({j for j, _, _ in branches})
    dense = {j: i for i, j in enumerate(present)}
    idx_r = torch.tensor([rows[j] for j, _, _ in branches], device=weights.device)
    idx_k = torch.tensor([k for _, k, _ in branches], device=weights.device)
    w = weights[idx_r, idx_k]
    dw1, pw1 = [h[0][0].weight for h in halves], [h[0][1].weight for h in halves]
    dw2, pw2 = [h[1][0].weight for h in halves if len(h) == 2], [h[1][1].weight for h in halves if len(h) == 2]
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
