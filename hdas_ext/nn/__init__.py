"""Modules: DARTS primitives (OPS) and the fused mixed/stage modules."""
from .fuse import FuseReport, fuse_mixed_ops
from .fused import FusedMixedOp, FusedStageNode, WeightedPairConcat, fused_node
from .partial import FusedPartialMixedOp
from .operations import (OPS, DilConv, FactorizedReduce, Identity, PoolBN, ReLUConvBN, SepConv,
                         Zero, make_op)
