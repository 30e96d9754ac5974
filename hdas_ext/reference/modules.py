"""Eager DARTS/H-DAS modules, written as the original code computes them."""
import torch
from torch import nn

from ..nn.operations import make_op
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
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if C % k:
            raise ValueError(f"C ({C}) must be divisible by k = {k}")
        self.primitives, self.k = tuple(primitives), k
        self.mp = nn.MaxPool2d(2, 2)
        self._ops = nn.ModuleList(make_op(p, C // k, stride, affine, pool_bn) for p in self.primitives)

    def forward(self, x, weights):
        part = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :part]) for w, op in zip(weights, self._ops))
        if self.k == 1:
            return mixed
        passed = x[:, part:]
        if mixed.shape[2] != x.shape[2]:
            passed = self.mp(passed)
        out = torch.cat([mixed, passed], dim=1)
        N, C, H, W = out.shape
        return out.view(N, self.k, C // self.k, H, W).transpose(1, 2).reshape(N, C, H, W)


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


StageNode = WindowedCellInput  # the old name, kept for published code


class WeightedPairConcat(nn.Module):
    """Distribution-search stage output: sum_k weights[k] * cat(states[i_k], states[j_k])."""

    def forward(self, states, weights, pairs):
        return sum(w * torch.cat([states[i], states[j]], dim=1) for w, (i, j) in zip(weights, pairs))
