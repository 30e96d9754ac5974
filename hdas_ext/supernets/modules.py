"""Which implementation of the mixed modules a supernet builds: the fused ones from hdas_ext.nn
(fused=True) or the eager reference ones (fused=False). Both have the same constructor
signatures and state-dict keys, so a supernet switches by swapping the class."""
import warnings

from .. import reference

_NAMES = ("MixedOp", "StageNode", "WeightedPairConcat")
_FUSED_NAMES = {"MixedOp": "FusedMixedOp", "StageNode": "FusedStageNode",
                "WeightedPairConcat": "WeightedPairConcat"}
_warned = set()


def fused_class(name):
    """The hdas_ext.nn class standing in for reference.<name>, or None while it does not exist.
    Looked up lazily so the supernets work before the fused modules land."""
    from .. import nn as hnn
    return getattr(hnn, _FUSED_NAMES[name], None)


def fused_available():
    return all(fused_class(n) is not None for n in _NAMES)


def module_class(name, fused):
    """reference.<name> or its fused twin. A missing fused class falls back to the reference one
    with a single warning, so `fused=True` never fails, it only gets slower."""
    if name not in _NAMES:
        raise ValueError(f"name must be one of {_NAMES}, got {name!r}")
    if fused:
        cls = fused_class(name)
        if cls is not None:
            return cls
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"hdas_ext.nn has no {_FUSED_NAMES[name]}; using the eager reference.{name}",
                          RuntimeWarning, stacklevel=2)
    return getattr(reference, name)
