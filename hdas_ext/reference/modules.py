"""Eager DARTS/H-DAS modules, written as the original code computes them."""
import torch
from torch import nn

from ..nn.operations import make_op
from ..ops.partial_channels import check_partial_channels
from ..ops.reference import partial_channels
from ..primitives import DARTS_PRIMITIVES, STAGE_PRIMITIVES


class MixedOp(nn.Module):
    """DARTS' search-time MixedOp: sum_k w_k * op_k(x), every op built with `affine`, pools
    followed by BatchNorm2d(C, affine) unless pool_bn is False."""

    def __init__(self, C, stride, primitives=DARTS_PRIMITIVES, affine=False, pool_bn=True):
        super().__init__()
        self.primitives = tuple(primitives)
        self._ops = nn.ModuleList(make_op(p, C, stride, affine, pool_bn) for p in self.primitives)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class PartialMixedOp(nn.Module):
    """PC-DARTS' search-time MixedOp: MixedOp on the first C/k channels (ops built for C/k), the
    other channels passed (max-pooled 2x2 when the edge reduces) and concatenated after them, the
    result shuffled in k groups."""

    def __init__(self, C, stride, k=4, primitives=DARTS_PRIMITIVES, affine=False, pool_bn=True):
        super().__init__()
        check_partial_channels(k, C)
        self.primitives, self.k = tuple(primitives), k
        self.mp = nn.MaxPool2d(2, 2)  # PC-DARTS' attribute, kept for its structure; forward pools in partial_channels
        self._ops = nn.ModuleList(make_op(p, C // k, stride, affine, pool_bn) for p in self.primitives)

    def forward(self, x, weights):
        part = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :part]) for w, op in zip(weights, self._ops))
        if self.k == 1:
            return mixed
        return partial_channels(mixed, x, self.k, 2 if mixed.shape[2] != x.shape[2] else 1)


class WindowedCellInput(nn.Module):
    """Hs-DAS: the input of one cell, mixed from the states in its window: sum over window edges e
    of MixedOp_e(inputs[e]; weights[e])."""

    def __init__(self, C, num_inputs, primitives=STAGE_PRIMITIVES, pool_bn=True):
        super().__init__()
        self.primitives = tuple(primitives)
        self.edges = nn.ModuleList(
            MixedOp(C, 1, primitives, affine=False, pool_bn=pool_bn) for _ in range(num_inputs))

    def forward(self, inputs, weights):
        return sum(edge(x, w) for edge, x, w in zip(self.edges, inputs, weights))



class WeightedPairConcat(nn.Module):
    """Distribution-search stage output: sum_k weights[k] * cat(states[i_k], states[j_k])."""

    def forward(self, states, weights, pairs):
        return sum(w * torch.cat([states[i], states[j]], dim=1) for w, (i, j) in zip(weights, pairs))
