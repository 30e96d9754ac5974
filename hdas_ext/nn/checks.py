"""The checks of the fused modules' calls, before any op runs: the weights (a floating-point tensor,
one entry per primitive, on x's device; cast to x's dtype as `w * op(x)` casts a 0-d weight), and
x against the module (its channels, and its parameters' and buffers' dtype and device)."""
import torch
from torch import nn

from .. import ops


def op_channels(modules):
    """The channel count the ops expect: the first conv's input or BatchNorm's width; None when
    no op holds either (parameter-free ops take any)."""
    for m in (m for op in modules for m in op.modules()):
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return m.num_features
    return None


def state_tensor(modules):
    """(path in modules as a tuple of names, name) of the first floating-point parameter or
    buffer, or None."""
    for path, m in modules.named_modules():
        for name, t in [*m._parameters.items(), *m._buffers.items()]:
            if t is not None and t.is_floating_point():
                return tuple(path.split(".")) if path else (), name
    return None


def check_weights(who, weights, shape, x):
    """weights: a floating-point tensor of `shape` on x's device, returned in x's dtype."""
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"{who}: weights must be a tensor, got {type(weights).__name__}")
    if tuple(weights.shape) != tuple(shape):
        raise ValueError(f"{who}: weights must have one entry per primitive, shape {list(shape)}, "
                         f"got {list(weights.shape)}")
    if not weights.is_floating_point():
        raise TypeError(f"{who}: weights must be a floating-point tensor, got {weights.dtype}")
    if weights.device != x.device:
        raise ValueError(f"{who}: weights must be on {x.device} like x, got {weights.device}")
    return weights if weights.dtype == x.dtype else weights.to(x.dtype)


def check_x(who, x, module, groups=1, name="x"):
    """x against the fused `module`: a 4-D floating tensor with the ops' channels (times groups),
    on the device and in the dtype of the module's parameters and buffers (any dtype the ops
    run in under autocast)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a tensor, got {type(x).__name__}")
    ops.check_inputs([x])
    C = module._channels
    if C is not None and x.shape[1] != C * groups:
        ops_take = f" (the ops take {C}, times k = {groups})" if groups > 1 else ""
        raise ValueError(f"{who}: {name} must have {C * groups} channels{ops_take}, got {x.shape[1]}")
    ref = module._state_tensor()
    if ref is None:
        return
    if ref.device != x.device:
        raise ValueError(f"{who}: {name} is on {x.device}, the module's parameters and buffers on {ref.device}")
    if ref.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{who}: {name} is {x.dtype}, the module's parameters and buffers {ref.dtype}: "
                        f"convert one of them (module.to({x.dtype}) or {name}.to({ref.dtype}))")


def check_call(module, x, weights, groups=1):
    """A mixed op's call (x, weights) checked; the weights in x's dtype."""
    who = type(module).__name__
    check_x(who, x, module, groups)
    return check_weights(who, weights, (len(module.primitives),), x)
