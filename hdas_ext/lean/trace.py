"""An op module as the lean interpreter's program, read from what its forward computes: traced with
torch.fx through every module (whatever its class is called) down to torch's own ReLU, Conv2d,
BatchNorm and Dropout, and the tensor functions between them. Traced once per structure and
training mode, then bound to each module's own submodules."""
import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class NotLeanable(ValueError):
    """A module the lean interpreter cannot run."""


# torch's modules the program keeps as steps (their forwards, not subclasses that replace them):
# ReLUs may be shared, convs and BatchNorms take the parameters the forward read, a BatchNorm's
# statistics are kept, a dropout is replayed.
_LEAVES = {nn.ReLU.forward: "relu", nn.Conv2d.forward: "conv", _BatchNorm.forward: "bn", nn.Dropout.forward: "dropout"}
# Functions whose names say they draw random numbers: the op's random state is kept and replayed.
_RANDOM = ("rand", "bernoulli", "dropout", "normal", "multinomial", "uniform", "exponential", "geometric",
           "cauchy", "poisson", "rrelu")
_KNOWN_MODULES = ("torch", "operator", "_operator", "builtins")


def leaf_kind(m):
    kind = _LEAVES.get(type(m).forward)
    if kind == "conv" and type(m)._conv_forward is not nn.Conv2d._conv_forward:
        return None
    return kind


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return leaf_kind(m) is not None


class _Root(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x)


class Ref:
    """A step's argument: the value of step i."""
    __slots__ = ("i",)

    def __init__(self, i):
        self.i = i


def _name(target):
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _check_call(kind, target, kwargs):
    """Raises NotLeanable for a call the recomputation would repeat with an effect; True if it may
    draw random numbers (a name that says so, or a function from outside torch)."""
    name = _name(target)
    if kind == "method" and name.endswith("_") and not name.startswith("__"):
        raise NotLeanable(f"its forward changes a tensor in place ({name}), which the recomputation would repeat")
    if kwargs.get("inplace") is True:
        raise NotLeanable(f"its forward calls {name} in place, which the recomputation would repeat")
    if "batch_norm" in name or "instance_norm" in name:
        raise NotLeanable(f"its forward calls {name} outside a torch.nn BatchNorm module (running statistics "
                          f"the recomputation would update again)")
    outside = kind == "function" and not str(getattr(target, "__module__", "") or "").startswith(_KNOWN_MODULES)
    return outside or any(word in name.lower() for word in _RANDOM)


def trace_steps(op):
    """(steps, output index, random) of op in its current training mode, submodules by path:
    steps[0] is ("input",); ("relu"|"conv"|"bn"|"dropout", path, Ref); ("param"|"buffer"|"attr",
    owner path, name); ("function"|"method", target, args, kwargs) with Refs inside."""
    try:
        graph = _Tracer().trace(_Root(op))
    except Exception as e:
        text = str(e).strip().splitlines()
        raise NotLeanable(f"its forward cannot be traced ({type(e).__name__}: {text[0] if text else ''})") from None
    index, steps, out, random = {}, [], None, False

    def ref(a):
        return fx.node.map_arg(a, lambda n: Ref(index[n]))
    for node in graph.nodes:
        if node.op == "output":
            out = node.args[0]
            break
        if node.op == "placeholder":
            step = ("input",)
        elif node.op == "call_module":
            path = node.target[len("op."):] if node.target != "op" else ""
            kind = leaf_kind(op.get_submodule(path))
            step = (kind, path, ref(node.args[0]))
            random |= kind == "dropout"
        elif node.op == "get_attr":
            owner, _, name = node.target[len("op."):].rpartition(".")
            m = op.get_submodule(owner)
            step = ("param" if name in m._parameters else "buffer" if name in m._buffers else "attr", owner, name)
        else:
            kind = "function" if node.op == "call_function" else "method"
            random |= _check_call(kind, node.target, node.kwargs)
            step = (kind, node.target, ref(node.args), ref(node.kwargs))
        index[node] = len(steps)
        steps.append(step)
    if not isinstance(out, fx.Node):
        raise NotLeanable("its forward does not return one tensor")
    return steps, index[out], random


_MODULE_STATE = frozenset(vars(nn.Module()))
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _plain(v):
    return isinstance(v, _PLAIN) or (isinstance(v, (tuple, list)) and all(_plain(e) for e in v))


def structure_key(module):
    """A key under which modules compute alike: for every submodule its path, class, plain
    attributes and tensor shapes; None when one holds anything else (a hook, a function, a tensor
    attribute), so that modules which may differ are never taken for each other."""
    parts = []
    for path, m in module.named_modules():
        if any(getattr(m, h, None) for h in _HOOKS):
            return None
        attrs = []
        for name, v in vars(m).items():
            if name in _MODULE_STATE:
                continue
            if not _plain(v):
                return None
            attrs.append((name, tuple(v) if isinstance(v, list) else v))
        tensors = tuple((n, None if t is None else (tuple(t.shape), t.dtype, t.requires_grad))
                        for n, t in [*m._parameters.items(), *m._buffers.items()])
        parts.append((path, type(m), tuple(attrs), tensors))
    return tuple(parts)

