"""Modules: DARTS primitives (OPS) and the fused mixed/stage modules."""
from .fused import (FusedMixedOp, FusedStageNode, FusedWindowedCellInput, WeightedPairConcat,
                    fused_edge_sum, fused_node)
from .operations import (OPS, DilConv, FactorizedReduce, Identity, PoolBN, ReLUConvBN, SepConv,
                         Zero, make_op)
from .partial import FusedPartialMixedOp
