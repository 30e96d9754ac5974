"""fuse_mixed_ops: swap DARTS-style MixedOps in any model for FusedMixedOp, in place."""
from torch import nn

from .fused import FusedMixedOp

_POOL_NAMES = {"MaxPool2d": "max_pool_3x3", "AvgPool2d": "avg_pool_3x3"}


def _pool_name(m):
    name = _POOL_NAMES.get(type(m).__name__)
    if name is None or m.kernel_size not in (3, (3, 3)) or m.padding not in (1, (1, 1)):
        return None
    if name == "avg_pool_3x3" and m.count_include_pad:
        return None
    return name


def _stride_of(m):
    s = m.stride
    return s[0] if isinstance(s, tuple) else s


def identify(m):
    """(primitive name, stride, pool BN is affine-free) for one op module, or None if it is not a
    DARTS primitive. Matched by class name, so DARTS-family code's own classes are recognised."""
    kind = type(m).__name__
    if kind == "Zero":
        return "none", m.stride, False
    if kind == "Identity":
        return "skip_connect", 1, False
    if kind == "FactorizedReduce":
        return "skip_connect", 2, False
    if kind in ("SepConv", "DilConv"):
        convs = [c for c in m.op if isinstance(c, nn.Conv2d)]
        k, d = convs[0].kernel_size[0], convs[0].dilation[0]
        if kind == "SepConv" and d == 1 and k in (3, 5, 7):
            return f"sep_conv_{k}x{k}", convs[0].stride[0], False
        if kind == "DilConv" and d == 2 and k in (3, 5):
            return f"dil_conv_{k}x{k}", convs[0].stride[0], False
        return None
    if isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[1], nn.BatchNorm2d):
        name = _pool_name(m[0])
        return (name, _stride_of(m[0]), not m[1].affine) if name else None
    name = _pool_name(m)
    return (name, _stride_of(m), False) if name else None


def fuse_mixed_ops(model):
    """Replaces every module that has an `_ops` ModuleList of DARTS primitives (a DARTS MixedOp)
    with a FusedMixedOp sharing the same parameters and buffers. Returns how many it replaced.
    The replaced module's forward must be `forward(x, weights)` with one weight per op."""
    targets = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            ops = getattr(child, "_ops", None)
            if isinstance(child, FusedMixedOp) or not isinstance(ops, nn.ModuleList) or len(ops) == 0:
                continue
            found = [identify(m) for m in ops]
            if any(f is None for f in found):
                continue
            strides = {s for _, s, _ in found}
            if len(strides) != 1:
                continue
            # The kernel normalises pools itself only when every pool carries an affine-free BN.
            pools = [(m, f) for m, f in zip(ops, found) if f[0] in _POOL_NAMES.values()]
            fused_bn = bool(pools) and all(isinstance(m, nn.Sequential) and f[2] for m, f in pools)
            targets.append((parent, child_name, ops, [n for n, _, _ in found], strides.pop(), fused_bn))
    for parent, child_name, ops, names, stride, fused_bn in targets:
        setattr(parent, child_name, FusedMixedOp.adopt(ops, names, stride, fused_bn))
    return len(targets)
