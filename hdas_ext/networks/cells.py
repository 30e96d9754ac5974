"""Discrete cells, drop path and auxiliary heads of the evaluation networks (DARTS model.py
conventions; attribute names kept so DARTS state dicts map key for key)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.operations import FactorizedReduce, Identity, ReLUConvBN, make_op


def drop_path(x, drop_prob):
    """Zero whole samples with probability drop_prob and rescale the survivors by 1/(1-p)
    (DARTS' drop path, out of place so autograd and torch.compile see a plain product).
    drop_prob may be a float or a 0-dim tensor (what the networks pass, see DropPathMixin)."""
    keep = 1.0 - drop_prob
    mask = (torch.rand((x.size(0), 1, 1, 1), device=x.device) < keep).to(x.dtype)
    return x * (mask / keep).to(x.dtype)


def apply_op(op, x, drop_prob, training):
    """op(x), with drop path on every op that is not the identity (DARTS, H-DAS to_dag).
    drop_prob None (or 0) means no drop path."""
    h = op(x)
    if training and drop_prob is not None and not isinstance(op, Identity):
        if isinstance(drop_prob, torch.Tensor) or drop_prob > 0.0:
            h = drop_path(h, drop_prob)
    return h


class DropPathMixin:
    """`model.drop_path_prob = p` (trainers ramp it every epoch). The value lives in a 0-dim
    buffer, so changing it does not recompile a torch.compile'd model (a Python float would be
    specialised into the graph: one recompilation per epoch); only p > 0 vs p == 0 is static."""

    def _init_drop_path(self, p):
        self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self.drop_path_prob = p

    @property
    def drop_path_prob(self):
        return self._drop_value

    @drop_path_prob.setter
    def drop_path_prob(self, p):
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {p}")
        self._drop_value = p
        self._drop_prob.fill_(p)

    def _drop_arg(self):
        return self._drop_prob if self.training and self._drop_value > 0.0 else None


class Cell(nn.Module):
    """A DARTS cell from a flat gene [(op, input_state), ...] (two pairs per node) and a concat.

    preprocess0 is a FactorizedReduce when the previous cell halved the resolution (so s0 is
    twice as large as s1), else a 1x1 ReLU-conv-BN; ops read by a reduction cell from its two
    inputs have stride 2. Output: channel concat of the concat states (len(concat) * C)."""

    def __init__(self, gene, concat, C_prev_prev, C_prev, C, reduction, reduction_prev, pool_bn):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.reduction = reduction
        self._steps = len(gene) // 2
        self._concat = [int(c) for c in concat]
        self.multiplier = len(self._concat)
        self._indices = [int(src) for _, src in gene]
        self._ops = nn.ModuleList(
            make_op(name, C, 2 if reduction and src < 2 else 1, True, pool_bn) for name, src in gene)

    def forward(self, s0, s1, drop_prob=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self._steps):
            h1 = apply_op(self._ops[2 * i], states[self._indices[2 * i]], drop_prob, self.training)
            h2 = apply_op(self._ops[2 * i + 1], states[self._indices[2 * i + 1]], drop_prob, self.training)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxPool(nn.Module):
    """DARTS' auxiliary-head pooling (kernel 5, padding not counted) when it yields 2x2, as on
    the 8x8 CIFAR and 7x7 ImageNet maps; other map sizes (small test images, 16 px digits) are
    pooled adaptively to the same 2x2, so the head's layers and parameters never change."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        h, w = x.shape[-2:]
        if h >= 5 and w >= 5 and (h - 5) // self.stride == 1 and (w - 5) // self.stride == 1:
            return F.avg_pool2d(x, 5, stride=self.stride, padding=0, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)


class AuxiliaryHeadCIFAR(nn.Module):
    def __init__(self, C, num_classes):
        super().__init__()
        # The first ReLU is not in place: its input is also the next cell's input.
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            AuxPool(3),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    def __init__(self, C, num_classes):
        super().__init__()
        # No BN after the 768 conv: DARTS left it out in the experiments of its paper.
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            AuxPool(2),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def cifar_stem(C_out):
    return nn.Sequential(nn.Conv2d(3, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out))


def imagenet_stems(C, C_out):
    """DARTS' ImageNet stems: stem0 = two stride-2 3x3 convs (3 -> C/2 -> C), stem1 = ReLU, a
    stride-2 3x3 conv to C_out, BN (224 -> 112 -> 56 -> 28)."""
    stem0 = nn.Sequential(
        nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C),
    )
    # Not in place: stem0's output also feeds the first cell (DARTS chain).
    stem1 = nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(C, C_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(C_out),
    )
    return stem0, stem1
