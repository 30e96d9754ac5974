"""Modules: DARTS primitives (OPS) and the fused mixed/stage modules."""
from .fused import FusedMixedOp, fused_edge_sum
from .fused_stage import FusedWindowedCellInput, WeightedPairConcat
from .operations import (OPS, DilConv, FactorizedReduce, Identity, PoolBN, ReLUConvBN, SepConv,
                         Zero, make_op)
from .partial import FusedPartialMixedOp
