"""Turning a module of other code into a fused one in place: its class becomes a subclass of both
the fused class and its own (so its state dict, attributes, methods and hooks stay), and it can
still be copied and pickled."""
_CLASSES = {}


def adopted_class(base, own):
    """The class `base[own]`: base's forward and plan on top of the module's own class."""
    key = (base, own)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{base.__name__}[{own.__name__}]", (base, own),
                             {"__module__": own.__module__, "_adopted": key})
    return _CLASSES[key]


def new_adopted(base, own):
    """An empty instance of adopted_class(base, own), for unpickling (its state is set after)."""
    cls = adopted_class(base, own)
    return cls.__new__(cls)


def reduce_adopted(obj, protocol):
    """obj.__reduce_ex__ for an adopted class, which pickle cannot find by name: rebuilt from the
    two classes it was made of."""
    _, _, *rest = object.__reduce_ex__(obj, protocol)
    return (new_adopted, obj._adopted, *rest)
