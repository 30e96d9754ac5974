"""fuse_mixed_ops: swap DARTS-style MixedOps in any model for FusedMixedOp, in place."""
import warnings

import torch
from torch import nn

from .fused import FusedMixedOp
from .recompute import NotLeanable

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


def _agrees(module, fused):
    """Whether `fused` computes `module`'s own forward(x, weights): both run on one small probe in
    eval mode (no buffer changes; the global RNG untouched), so a MixedOp whose forward is not
    DARTS' sum_k w_k op_k(x) (PC-DARTS' partial channels, say) is told apart from the structure it
    shares with DARTS'. Returns None when they agree, else why not."""
    state = next((t for t in module.state_dict(keep_vars=True).values()), None)
    dtype, device = (state.dtype, state.device) if state is not None else (torch.float32, torch.device("cpu"))
    if device.type == "meta":
        return None  # nothing to compute with: trust the structure
    C = next((m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)),
             next((m.num_features for m in module.modules() if isinstance(m, nn.BatchNorm2d)), 4))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 8, 8, generator=g).to(device, dtype)
    w = torch.softmax(torch.randn(len(fused.primitives), generator=g), 0).to(device, dtype)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        fused.training = False
        with torch.no_grad():
            # Low precision: the fused op accumulates in float32, an eager sum in the dtype itself.
            tol = {} if dtype in (torch.float32, torch.float64) else dict(rtol=2e-2, atol=2e-2)
            torch.testing.assert_close(fused(x, w), module(x, w), **tol)
    except Exception as e:  # any failure of the module's own forward means: not DARTS' MixedOp
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        for m, mode in modes:
            m.training = mode
        fused.training = module.training
    return None


def fuse_mixed_ops(model, recompute=False):
    """Replaces every module that has an `_ops` ModuleList of DARTS primitives (a DARTS MixedOp)
    with a FusedMixedOp sharing the same parameters and buffers. Returns how many it replaced.
    The replaced module's forward must be DARTS' `forward(x, weights)` = sum_k weights[k] *
    _ops[k](x): each candidate is checked on a small probe input against its own forward, and one
    that computes something else (PC-DARTS' partial channels, say) is left as it is, with a warning.
    Hooks on the replaced modules (the MixedOp, its pools and pool BNs) no longer fire.
    recompute=True: lean FusedMixedOps (see FusedMixedOp), checked on the probe in that mode."""
    if _candidate(model) is not None:
        raise ValueError("fuse_mixed_ops(model): model is itself a MixedOp, and only submodules are replaced "
                         "in place; use FusedMixedOp.adopt(model._ops, ...) or fuse the model that holds it")
    targets = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            found = _candidate(child)
            if found is None:
                continue
            try:
                fused = FusedMixedOp.adopt(child._ops, *found, recompute=recompute)
                why = _agrees(child, fused)
            except NotLeanable as e:
                why = str(e)
            if why is not None:
                path = f"{parent_name}.{child_name}" if parent_name else child_name
                warnings.warn(f"fuse_mixed_ops: left {path} ({type(child).__name__}) unfused: its forward is not "
                              f"DARTS' sum_k weights[k] * _ops[k](x) on a probe input ({why})", stacklevel=2)
                continue
            targets.append((parent, child_name, fused))
    for parent, child_name, fused in targets:
        setattr(parent, child_name, fused)
    return len(targets)


def _candidate(module):
    """(primitive names, stride, pool BNs fused) if module looks like a DARTS MixedOp: an `_ops`
    ModuleList of recognised primitives sharing one stride; else None."""
    ops = getattr(module, "_ops", None)
    if isinstance(module, FusedMixedOp) or not isinstance(ops, nn.ModuleList) or len(ops) == 0:
        return None
    found = [identify(m) for m in ops]
    if any(f is None for f in found):
        return None
    strides = {s for _, s, _ in found}
    if len(strides) != 1:
        return None
    # The kernel normalises pools itself only when every pool carries an affine-free BN.
    pools = [(m, f) for m, f in zip(ops, found) if f[0] in _POOL_NAMES.values()]
    fused_bn = bool(pools) and all(isinstance(m, nn.Sequential) and f[2] for m, f in pools)
    return [n for n, _, _ in found], strides.pop(), fused_bn
