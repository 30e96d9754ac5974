"""Cell-level search networks: the DARTS search network (one normal and one reduction cell shared
by all cells) and Hc-DAS (stage-specific cells: three normal and two reduction alpha sets).
Layout, widths and module names follow quark0/darts' model_search (docs/algorithms.md). Both can
mix partial channels (PC-DARTS: each edge mixes C/k channels) and normalise edges (PC-DARTS' betas:
node j's input is sum_i softmax(beta)_i * edge_i)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..genotypes import Genotype, StageCellsGenotype
from ..genotypes.derive import derive_cell
from ..lean import lean_apply
from ..nn import FactorizedReduce, ReLUConvBN, fused_edge_sum
from ..nn.fused_cell import fused_cell_nodes
from ..ops.partial_channels import check_partial_channels
from ..primitives import DARTS_PRIMITIVES, HDAS_PRIMITIVES
from .base import Supernet, check_int, new_alpha
from .modules import module_class


class SearchCell(nn.Module):
    """A DARTS search cell: `steps` nodes, node i sums one mixed op per earlier state (i+2 edges),
    output = channel concat of the last `multiplier` states. recompute (lean mode, fused only): the
    preprocessing and the mixed ops keep only the states for the backward, and the output is the
    tuple of the concatenated states (the next cells' preprocessing concatenates them itself)."""

    def __init__(self, steps, multiplier, C_pp, C_p, C, reduction, reduction_prev, primitives, fused,
                 recompute=False, partial_channels=1, fuse_convs=True):
        super().__init__()
        self.reduction, self.fused, self.partial = reduction, fused, partial_channels > 1
        self.recompute = recompute
        self.steps, self.multiplier = steps, multiplier
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_pp, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        if self.partial:
            mixed, kw = module_class("PartialMixedOp", fused), dict(k=partial_channels)
        else:
            mixed, kw = module_class("MixedOp", fused), {"recompute": True} if recompute else {}
        if fused:
            kw["fuse_convs"] = fuse_convs
        self._ops = nn.ModuleList(
            mixed(C, 2 if reduction and j < 2 else 1, primitives=primitives, affine=False, pool_bn=True, **kw)
            for i in range(steps) for j in range(2 + i))

    def forward(self, s0, s1, weights, edge_weights=None):
        """edge_weights: one weight per edge (normalised per node), or None."""
        if self.recompute:
            states = lean_apply([self.preprocess0, self.preprocess1], [s0, s1])
        else:
            states = [self.preprocess0(s0), self.preprocess1(s1)]
        if self.fused and any(op._conv for op in self._ops):  # convolution candidates shared per state
            states = fused_cell_nodes(self._ops, states, weights, self.steps, edge_weights)[2:]
            return tuple(states[-self.multiplier:]) if self.recompute else torch.cat(states[-self.multiplier:], dim=1)
        offset = 0
        for _ in range(self.steps):
            n = len(states)
            ops, w = self._ops[offset:offset + n], weights[offset:offset + n]
            ew = None if edge_weights is None else edge_weights[offset:offset + n]
            if self.fused and not self.partial:  # the whole node in one fused call (two in a reduction cell)
                s = fused_edge_sum(ops, states, w if ew is None else w * ew[:, None])
            else:
                terms = [op(h, w[j]) for j, (op, h) in enumerate(zip(ops, states))]
                s = sum(terms if ew is None else [ew[j] * t for j, t in enumerate(terms)])
            offset += n
            states.append(s)
        if self.recompute:
            return tuple(states[-self.multiplier:])
        return torch.cat(states[-self.multiplier:], dim=1)


def reduction_indices(layers):
    return (layers // 3, 2 * layers // 3)


class CellSearchNet(nn.Module):
    """stem (3x3 conv -> BN to stem_multiplier*C) -> `layers` search cells (reductions at L//3
    and 2L//3, channels doubled there) -> GAP -> linear. Cell i mixes with weight set
    cell_sets[i] of the list passed to forward. recompute: lean mode (see SearchCell), the stem's
    convolution output recomputed too."""

    def __init__(self, C, num_classes, layers, primitives, cell_sets, steps=4, multiplier=4,
                 stem_multiplier=3, in_channels=3, fused=True, recompute=False, partial_channels=1, fuse_convs=True):
        super().__init__()
        if recompute and not fused:
            raise ValueError("recompute=True (lean mode) needs fused=True")
        if recompute and partial_channels > 1:
            raise ValueError("recompute=True (lean mode) runs full-channel mixed ops: it needs partial_channels=1")
        self.cell_sets, self.recompute = list(cell_sets), recompute
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reduction_indices(layers)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(steps, multiplier, C_pp, C_p, C_curr, reduction,
                                         reduction_prev, primitives, fused, recompute, partial_channels, fuse_convs))
            reduction_prev = reduction
            C_pp, C_p = C_p, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x, weight_sets, edge_sets=None):
        s0 = s1 = lean_apply([self.stem], [x])[0] if self.recompute else self.stem(x)
        for cell, k in zip(self.cells, self.cell_sets):
            s0, s1 = s1, cell(s0, s1, weight_sets[k], None if edge_sets is None else edge_sets[k])
        if self.recompute:
            s1 = torch.cat(s1, dim=1)
        return self.classifier(self.global_pooling(s1).flatten(1))


def node_softmax(beta, steps):
    """PC-DARTS' edge normalisation: softmax over each node's incoming edges (node i has i + 2)."""
    return torch.cat([F.softmax(b, dim=-1) for b in beta.split([2 + i for i in range(steps)])])


class _CellSupernet(Supernet):
    SET_NAMES = ()
    PRIMITIVES = ()
    RULE = "darts"

    def __init__(self, C, num_classes, layers, in_channels, steps, multiplier, fused, recompute, partial_channels,
                 edge_normalization, fuse_convs):
        super().__init__()
        check_int("C", C, 1)
        check_int("num_classes", num_classes, 1)
        check_int("steps", steps, 1)
        check_int("multiplier", multiplier, 1, steps)
        check_partial_channels(partial_channels, C, "partial_channels")
        if not isinstance(edge_normalization, bool):
            raise ValueError(f"edge_normalization must be True or False, got {edge_normalization!r}")
        self.steps, self.multiplier, self.layers, self.fused = steps, multiplier, layers, fused
        self.partial_channels, self.edge_normalization = partial_channels, edge_normalization
        self.net = CellSearchNet(C, num_classes, layers, self.PRIMITIVES,
                                 [self.cell_set(i, layers) for i in range(layers)], steps, multiplier,
                                 in_channels=in_channels, fused=fused, recompute=recompute,
                                 partial_channels=partial_channels, fuse_convs=fuse_convs)
        edges = sum(2 + i for i in range(steps))
        for name in self.SET_NAMES:
            setattr(self, "alpha_" + name, new_alpha(edges, len(self.PRIMITIVES)))
        for name in self.SET_NAMES if edge_normalization else ():
            setattr(self, "beta_" + name, new_alpha(edges))

    def alpha_sets(self):
        return [getattr(self, "alpha_" + name) for name in self.SET_NAMES]

    def edge_weight_sets(self):
        """Per set, each edge's weight normalised over its node's edges (edge normalisation only)."""
        return [node_softmax(getattr(self, "beta_" + name), self.steps) for name in self.SET_NAMES]

    def arch_weights(self):
        sets = [F.softmax(a, dim=-1) for a in self.alpha_sets()]
        return (sets, self.edge_weight_sets()) if self.edge_normalization else (sets,)

    def _derive(self, alpha, edge_weights=None):
        """With edge normalisation, edges rank by op probability times edge weight (PC-DARTS)."""
        if edge_weights is None:
            return derive_cell(alpha, self.PRIMITIVES, rule=self.RULE, k=2, multiplier=self.multiplier)
        return derive_cell(alpha, self.PRIMITIVES, rule="darts", k=2, multiplier=self.multiplier,
                           edge_weights=edge_weights)

    def _derive_sets(self):
        edges = self.edge_weight_sets() if self.edge_normalization else [None] * len(self.SET_NAMES)
        return [self._derive(a, e) for a, e in zip(self.alpha_sets(), edges)]


class DartsCellSearch(_CellSupernet):
    """DARTS' search network: C=16, 8 cells, one shared normal and reduction alpha
    set (14 x 8, 'none' first), genotype by DARTS' softmax ranking."""
    SET_NAMES = ("normal", "reduce")
    PRIMITIVES = DARTS_PRIMITIVES
    RULE = "darts"

    def __init__(self, C=16, num_classes=10, layers=8, in_channels=3, steps=4, multiplier=4, fused=True,
                 recompute=False, partial_channels=1, edge_normalization=False, fuse_convs=True):
        check_int("layers", layers, 3)
        super().__init__(C, num_classes, layers, in_channels, steps, multiplier, fused, recompute, partial_channels,
                         edge_normalization, fuse_convs)

    @staticmethod
    def cell_set(i, layers):
        return 1 if i in reduction_indices(layers) else 0

    def genotype(self):
        (normal, nc), (reduce, rc) = self._derive_sets()
        return Genotype(normal=normal, normal_concat=nc, reduce=reduce, reduce_concat=rc)


class HcDasSearch(_CellSupernet):
    """Hc-DAS: the same network with stage-specific cells. Cells before L//3 use
    normal1, cell L//3 reduce1, cells up to 2L//3 normal2, cell 2L//3 reduce2, the rest normal3.
    H-DAS primitive order ('none' last) and raw-logit edge ranking."""
    SET_NAMES = ("normal1", "reduce1", "normal2", "reduce2", "normal3")
    PRIMITIVES = HDAS_PRIMITIVES
    RULE = "hdas"

    def __init__(self, C=16, num_classes=10, layers=8, in_channels=3, steps=4, multiplier=4, fused=True,
                 recompute=False, partial_channels=1, edge_normalization=False, fuse_convs=True):
        # Fewer than 5 cells would leave some alpha set without a cell.
        check_int("layers", layers, 5)
        super().__init__(C, num_classes, layers, in_channels, steps, multiplier, fused, recompute, partial_channels,
                         edge_normalization, fuse_convs)

    @staticmethod
    def cell_set(i, layers):
        r1, r2 = reduction_indices(layers)
        if i < r1:
            return 0
        if i == r1:
            return 1
        if i < r2:
            return 2
        return 3 if i == r2 else 4

    def genotype(self):
        fields = {}
        for name, (gene, concat) in zip(self.SET_NAMES, self._derive_sets()):
            fields[name], fields[name + "_concat"] = gene, concat
        return StageCellsGenotype(**fields)
