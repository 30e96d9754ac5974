"""Chain networks: DARTS' NetworkCIFAR / NetworkImageNet, with one cell gene per position so
that Hc-DAS stage-specific cells (normal1, reduce1, normal2, reduce2, normal3) use the same code."""
from torch import nn

from .cells import (AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, Cell, DropPathMixin, cifar_stem,
                    imagenet_stems)


def reduction_positions(layers):
    """Cells that halve the resolution: L//3 and 2L//3 (DARTS)."""
    return (layers // 3, 2 * layers // 3)


def chain_cell_genes(cell_sets, layers):
    """Per position (gene, concat, reduction). cell_sets: the five (gene, concat) pairs normal1,
    reduce1, normal2, reduce2, normal3 (a DARTS genotype repeats its normal/reduce pair)."""
    r1, r2 = reduction_positions(layers)
    out = []
    for i in range(layers):
        if i == r1:
            out.append((*cell_sets[1], True))
        elif i == r2:
            out.append((*cell_sets[3], True))
        else:
            out.append((*cell_sets[0 if i < r1 else 2 if i < r2 else 4], False))
    return out


class ChainNetwork(DropPathMixin, nn.Module):
    """stem -> L cells (reductions at L//3, 2L//3) -> global pool -> linear; the auxiliary head
    reads the output of cell 2L//3 (the second reduction) and runs in training mode only.
    forward returns (logits, aux_logits or None)."""

    def __init__(self, genes, C, num_classes, auxiliary, imagenet, pool_bn, drop_path_prob=0.0):
        super().__init__()
        layers = len(genes)
        if layers < 3:
            raise ValueError(f"layers must be >= 3 (two reduction cells and a normal cell), got {layers}")
        self._layers = layers
        self._auxiliary = auxiliary
        self.imagenet = imagenet
        self._init_drop_path(drop_path_prob)
        if imagenet:
            self.stem0, self.stem1 = imagenet_stems(C, C)
            C_prev_prev, C_prev, C_curr = C, C, C
            reduction_prev = True
        else:
            C_curr = 3 * C  # DARTS' stem multiplier
            self.stem = cifar_stem(C_curr)
            C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
            reduction_prev = False
        self._aux_position = reduction_positions(layers)[1]
        self.cells = nn.ModuleList()
        C_aux = None
        for i, (gene, concat, reduction) in enumerate(genes):
            if reduction:
                C_curr *= 2
            cell = Cell(gene, concat, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, pool_bn)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_position:
                C_aux = C_prev
        if auxiliary:
            head = AuxiliaryHeadImageNet if imagenet else AuxiliaryHeadCIFAR
            self.auxiliary_head = head(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        logits_aux = None
        p = self._drop_arg()
        if self.imagenet:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, p)
            if i == self._aux_position and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return logits, logits_aux
