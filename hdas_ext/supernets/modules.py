"""Which implementation of the mixed modules a supernet builds: the fused ones from hdas_ext.nn
(fused=True) or the eager reference ones (fused=False). Both have the same constructor
signatures and state-dict keys, so a supernet switches by swapping the class."""
from .. import nn as hnn
from .. import reference

_FUSED = {"MixedOp": hnn.FusedMixedOp, "PartialMixedOp": hnn.FusedPartialMixedOp,
          "WindowedCellInput": hnn.FusedWindowedCellInput, "WeightedPairConcat": hnn.WeightedPairConcat}


def module_class(name, fused):
    """reference.<name>, or its fused twin from hdas_ext.nn."""
    if name not in _FUSED:
        raise ValueError(f"name must be one of {tuple(_FUSED)}, got {name!r}")
    return _FUSED[name] if fused else getattr(reference, name)
