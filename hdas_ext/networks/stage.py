"""Hs-DAS evaluation networks: stages whose cells form a searched DAG, any number of cells per
stage (docs/algorithms.md; the released code hard-codes 6/6/6 and 4/4/4)."""
import torch
from torch import nn

from ..genotypes import prune_dead_cells
from ..nn.operations import ReLUConvBN, make_op
from .cells import (AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, Cell, DropPathMixin, apply_op, cifar_stem,
                    imagenet_stems)

# 'released': two 1x1 projections of each stage's input, reduction cells reading the stage's
# concatenated output (what the H-DAS release builds; its ImageNet count is the paper's 5.1 M).
# 'paper': no projections (the stage input is states 0 and 1), reduction cells reading the stage's
# last two output states, one cell's width each (the paper's CIFAR counts, 3.5 M / 3.4 M).
CONSTRUCTIONS = ("released", "paper")


class Stage(nn.Module):
    """One stage. States 0 and 1 are two 1x1 ReLU-conv-BN projections (C_in -> W) of the stage
    input (project=False: the input itself, C_in must be W); cell j reads the sum of its edges'
    ops (pools with BN, skip = identity) on their source states and its own two inputs are both
    that sum; state j+2 is its output (W channels). The
    stage output is the channel concat of the concat states. Dead cells must be pruned first:
    they would hold parameters that never receive a gradient (and break DDP)."""

    def __init__(self, dag, concat, C_in, W, cell_gene, cell_concat, C_cell, pool_bn, project=True):
        super().__init__()
        if len(cell_concat) * C_cell != W:
            raise ValueError(f"cell output width {len(cell_concat)}x{C_cell} must equal the stage width {W}")
        if not project and C_in != W:
            raise ValueError(f"a stage without input projections needs its input width {C_in} to equal its width {W}")
        self.project = project
        if project:
            self.preproc0 = ReLUConvBN(C_in, W, 1, 1, 0)
            self.preproc1 = ReLUConvBN(C_in, W, 1, 1, 0)
        self.sources = [[int(src) for _, src in node] for node in dag]
        self.concat = [int(c) for c in concat]
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(op, W, 1, True, pool_bn) for op, _ in node) for node in dag)
        self.cells = nn.ModuleList(
            Cell(cell_gene, cell_concat, W, W, C_cell, False, False, pool_bn) for _ in dag)
        self.out_channels = len(self.concat) * W

    def outputs(self, s0, s1, drop_prob=None):
        """The concat states, in order (forward concatenates them)."""
        states = [self.preproc0(s0), self.preproc1(s1)] if self.project else [s0, s1]
        for ops, srcs, cell in zip(self.edges, self.sources, self.cells):
            x = sum(apply_op(op, states[src], drop_prob, self.training) for op, src in zip(ops, srcs))
            states.append(cell(x, x, drop_prob))
        return [states[i] for i in self.concat]

    def forward(self, s0, s1, drop_prob=None):
        return torch.cat(self.outputs(s0, s1, drop_prob), dim=1)


class StageNetwork(DropPathMixin, nn.Module):
    """stem -> stage 1 -> reduction cell -> stage 2 -> reduction cell -> stage 3 -> pool -> linear.

    stage_genes: three (dag, concat); cell_sets: the five (gene, concat) pairs normal1, reduce1,
    normal2, reduce2, normal3 (stage s uses normal s+1, the reduction after it reduce s+1).
    Widths: stage s has C_s = C*2^s channels per cell node and W_s = len(normal concat)*C_s between
    cells (4C, 8C, 16C for DARTS cells, hence the CIFAR stem's multiplier 4). construction
    'released': reduction cells read the stage output twice; 'paper': they read the stage's last
    two output states (W channels each) and stages have no input projections (CONSTRUCTIONS).
    Either way at one resolution, so no FactorizedReduce preprocessing. The auxiliary
    head reads the second reduction cell's output; forward returns (logits, aux_logits or None)."""

    def __init__(self, stage_genes, cell_sets, C, num_classes, auxiliary, imagenet, pool_bn,
                 drop_path_prob=0.0, prune=True, construction="released"):
        super().__init__()
        if len(stage_genes) != 3:
            raise ValueError(f"a stage network needs 3 stages, got {len(stage_genes)}")
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")
        self.construction = construction
        paper = construction == "paper"
        self.imagenet = imagenet
        self._auxiliary = auxiliary
        self._init_drop_path(drop_path_prob)
        self.pruned = []
        if prune:
            pruned = [prune_dead_cells(dag, concat) for dag, concat in stage_genes]
            self.pruned = [len(d0) - len(d1) for (d0, _), (d1, _) in zip(stage_genes, pruned)]
            stage_genes = pruned
        normals = [cell_sets[0], cell_sets[2], cell_sets[4]]
        reduces = [cell_sets[1], cell_sets[3]]
        W0 = len(normals[0][1]) * C
        if imagenet:
            self.stem0, self.stem1 = imagenet_stems(C, W0)
        else:
            self.stem = cifar_stem(W0)
        C_in = W0
        self.stages = nn.ModuleList()
        self.reductions = nn.ModuleList()
        for s, (dag, concat) in enumerate(stage_genes):
            C_cell = C * 2 ** s
            gene, cell_concat = normals[s]
            W = len(cell_concat) * C_cell
            stage = Stage(dag, concat, C_in, W, gene, cell_concat, C_cell, pool_bn, project=not paper)
            self.stages.append(stage)
            if s < 2:
                gene, red_concat = reduces[s]
                C_red_in = W if paper else stage.out_channels
                red = Cell(gene, red_concat, C_red_in, C_red_in, 2 * C_cell, True, False, pool_bn)
                self.reductions.append(red)
                C_in = red.multiplier * 2 * C_cell
        self.cells_per_stage = [len(dag) for dag, _ in stage_genes]
        if auxiliary:
            head = AuxiliaryHeadImageNet if imagenet else AuxiliaryHeadCIFAR
            self.auxiliary_head = head(C_in, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.stages[-1].out_channels, num_classes)

    def forward(self, x):
        logits_aux = None
        s = self.stem1(self.stem0(x)) if self.imagenet else self.stem(x)
        p = self._drop_arg()
        for i, stage in enumerate(self.stages):
            if i == 2:
                s = stage(s, s, p)
                break
            if self.construction == "paper":
                outs = stage.outputs(s, s, p)
                s = self.reductions[i](outs[-2 if len(outs) > 1 else -1], outs[-1], p)
            else:
                s = stage(s, s, p)
                s = self.reductions[i](s, s, p)
            if i == 1 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s)
        logits = self.classifier(self.global_pooling(s).flatten(1))
        return logits, logits_aux
