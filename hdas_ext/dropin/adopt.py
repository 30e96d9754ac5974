"""Turning a module of other code into a fused one in place: its class becomes a subclass of both
the fused class and its own (so its state dict, attributes, methods and hooks stay), and it can
still be copied and pickled."""
from ..nn.operations import takes_scale
from .folding import run_folded

_CLASSES = {}


def adopted_class(base, own):
    """The class `base[own]`: base's forward and plan on top of the module's own class, its ops'
    weights folded as the probe found (run_folded)."""
    key = (base, own)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{base.__name__}[{own.__name__}]", (base, own),
                             {"__module__": own.__module__, "_adopted": key, "_scaled_op": _scaled_op,
                              "__reduce_ex__": _reduce_ex})
    return _CLASSES[key]


def _scaled_op(self, k, x, r, scale):
    """scale * op k (x), the weight folded into the op's BatchNorm the probe found (ops of this
    package take it themselves); r: relu(x) shared by the ops."""
    op, plan = self._ops[k], self._plan[k]
    if takes_scale(op):
        return op(r, scale=scale, activated=True)
    return run_folded(op, plan, x, r if plan.relu else None, scale)


def new_adopted(base, own):
    """An empty instance of adopted_class(base, own), for unpickling (its state is set after)."""
    cls = adopted_class(base, own)
    return cls.__new__(cls)


def _reduce_ex(obj, protocol):
    """__reduce_ex__ of an adopted class, which pickle cannot find by name: rebuilt from the two
    classes it was made of."""
    _, _, *rest = object.__reduce_ex__(obj, max(protocol, 2))
    return (new_adopted, obj._adopted, *rest)
