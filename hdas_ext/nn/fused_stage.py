"""The stage-level fused modules of H-DAS: a cell's input mixed from the states in its window
(Hs-DAS) and the distribution search's weighted pair concatenation."""
from torch import nn

from .. import ops
from ..primitives import STAGE_PRIMITIVES
from .fused import FusedMixedOp, _checked_edges, _edge_sum


class FusedWindowedCellInput(nn.Module):
    """Hs-DAS: the input of one cell, mixed from the states in its window,
    sum_e sum_o weights[e, o] * op_o(inputs[e]), every pool with its own BatchNorm(affine=False)
    per edge. State dict laid out like a list of per-edge MixedOps (edges.{e}._ops.{k}), as
    hdas_ext.reference.WindowedCellInput. Lean as it is (the lean stage supernets use it
    unchanged): its ops are parameter-free, and the kernel keeps only the states and the pool
    BatchNorms' per-channel statistics for the backward."""

    def __init__(self, C, num_inputs, primitives=STAGE_PRIMITIVES, pool_bn=True):
        super().__init__()
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be at least 1, got {num_inputs}")
        self.primitives = tuple(primitives)
        self.edges = nn.ModuleList(FusedMixedOp(C, 1, primitives, affine=False, pool_bn=pool_bn)
                                   for _ in range(num_inputs))

    def forward(self, inputs, weights):
        inputs = list(inputs)
        E = len(self.edges)
        if len(inputs) != E:
            raise ValueError(f"FusedWindowedCellInput: expected {E} inputs (num_inputs), got {len(inputs)}")
        return _edge_sum(self.edges, inputs, _checked_edges(type(self).__name__, self.edges, inputs, weights, "num_inputs"))


class WeightedPairConcat(nn.Module):
    """Distribution-search stage output: sum_k weights[k] * cat(states[i_k], states[j_k], dim=1),
    written into one buffer."""

    def forward(self, states, weights, pairs):
        return ops.pair_concat(states, weights, pairs)
