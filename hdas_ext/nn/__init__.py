"""Modules: DARTS primitives (OPS) and the fused mixed/stage modules."""
from .operations import (OPS, DilConv, FactorizedReduce, Identity, PoolBN, ReLUConvBN, SepConv,
                         Zero, make_op)
