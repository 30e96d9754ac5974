"""Turning a module of other code into a fused one in place: its class becomes a subclass of both
the fused class and its own (so its state dict, attributes, methods and hooks stay), and it can
still be copied and pickled. Its forward is guarded: a call and a state the proof covered run the
fused op, any other call the module's own forward (hdas_ext.dropin.guards)."""
import torch

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
