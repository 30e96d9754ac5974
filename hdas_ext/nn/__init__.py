"""Modules: DARTS primitives (OPS) and the fused mixed/stage modules."""
from .fused import FusedMixedOp, FusedWindowedCellInput, WeightedPairConcat, fused_edge_sum
from .operations import (OPS, DilConv, FactorizedReduce, Identity, PoolBN, ReLUConvBN, SepConv,
                         Zero, make_op)
from .partial import FusedPartialMixedOp
