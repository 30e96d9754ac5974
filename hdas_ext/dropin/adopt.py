"""Turning a module of other code into a fused one in place: its class becomes a subclass of both
the fused class and its own (so its state dict, attributes, methods and hooks stay), and it can
still be copied and pickled. Its forward is guarded: a call and a state the proof covered run the
fused op, any other call the module's own forward (hdas_ext.dropin.guards)."""
import torch

from ..nn import FusedMixedOp, FusedPartialMixedOp
from ..nn.operations import takes_scale
from .folding import run_folded

_CLASSES = {}


def adopted_class(base, own, method="forward"):
    """The class `base[own]`: base's plan on top of the module's own class, its mixing method
    (forward, or another such as AutoDL's forward_darts) guarded, its ops' weights folded as the
    probe found (run_folded)."""
    key = (base, own, method)
    if key not in _CLASSES:
        name = base.__name__ + f"[{own.__name__}]" + ("" if method == "forward" else f".{method}")
        _CLASSES[key] = type(name, (base, own),
                             {"__module__": own.__module__, "_adopted": key, "_scaled_op": _scaled_op,
                              "__reduce_ex__": _reduce_ex, "forward": own.forward, method: _guarded(own, method),
                              "__prepare_scriptable__": _no_script})
    return _CLASSES[key]


def adopt_in_place(module, own, list_name, plan, stride, k, guard=None, recompute=False, method="forward", convs=True):
    """module, now FusedMixedOp[own] (FusedPartialMixedOp[own] when k > 1) running `plan` in its
    `method` (its sep/dil convs through hdas::conv_candidates with convs), in the lean mode with
    recompute, its calls admitted by `guard` armed on it (None: a copy for the proof, run through
    _fused)."""
    module.__class__ = adopted_class(fused_base(k), own, method)
    module._ops_name = list_name
    labels = vars(module).get("primitives")
    install_plan(module, plan, stride, k, convs,
                 labels if isinstance(labels, (list, tuple)) and len(labels) == len(plan) else None)
    module._set_recompute(recompute)  # also on a copy adopted before for another k: the path installed is the one proven
    if guard is not None:
        module._guard = guard.armed(module)
        if module._guard is None:
            raise ValueError("its forward's state cannot be read again from it")
    return module


def fused_base(k):
    """The fused class a MixedOp on k partial-channel groups becomes (k = 1: all channels)."""
    return FusedPartialMixedOp if k > 1 else FusedMixedOp


def install_plan(module, plan, stride, k, convs, labels=None):
    """module, of a fused class, running `plan` at `stride` on k groups, its sep/dil convs through
    hdas::conv_candidates with convs."""
    module._set_plan(plan, stride, labels)
    vars(module).pop("_conv", None), vars(module).pop("_conv_halves", None)  # a copy adopted before with convs
    if convs:
        module._set_convs()
    if k > 1:
        module.k = k


def _admit(module, args, kwargs):
    guard = vars(module).get("_guard")
    if guard is None or torch.jit.is_tracing():
        return False
    return guard.admit(module, args, kwargs)


# Plain Python on the module's state: under torch.compile it runs eagerly (a graph break).
_admit_compiled = torch.compiler.disable(lambda module, args, kwargs: _admit(module, args, kwargs))


def _guarded(own, method):
    original = getattr(own, method)

    def forward(self, *args, **kwargs):
        active = (_admit_compiled if torch.compiler.is_compiling() else _admit)(self, args, kwargs)
        if active is False:
            return original(self, *args, **kwargs)
        x, weights = args  # weights in x's dtype, as `w * op(x)` computes with a 0-d weight
        return self._fused(x, weights if weights.dtype == x.dtype else weights.to(x.dtype), active)
    forward.__name__, forward.__doc__ = method, original.__doc__
    return forward


def _no_script(self):
    raise TypeError(f"torch.jit.script: {type(self).__name__} was fused in place by hdas_ext.fuse_mixed_ops, "
                    f"which TorchScript cannot compile (its fused forward and the op's autograd are Python); "
                    f"script the model before fusing it, or use torch.compile")


def _scaled_op(self, k, x, r, scale):
    """scale * op k (x), the weight folded into the op's BatchNorm the probe found (ops of this
    package take it themselves); r: relu(x) shared by the ops."""
    op, plan = self._ops[k], self._plan[k]
    if takes_scale(op):
        return op(r, scale=scale, activated=True)
    return run_folded(op, plan, x, r if plan.relu else None, scale)


def new_adopted(base, own, method="forward"):
    """An empty instance of adopted_class(base, own, method), for unpickling (its state is set after)."""
    cls = adopted_class(base, own, method)
    return cls.__new__(cls)


def _reduce_ex(obj, protocol):
    """__reduce_ex__ of an adopted class, which pickle cannot find by name: rebuilt from the two
    classes it was made of."""
    _, _, *rest = object.__reduce_ex__(obj, max(protocol, 2))
    return (new_adopted, obj._adopted, *rest)
