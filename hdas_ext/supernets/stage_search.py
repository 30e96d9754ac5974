"""Stage-level search networks (docs/algorithms.md): Hs-DAS (connections and parameter-free ops
between fixed cells, sliding window m; Hs-DAS* shares one stage DAG between the three stages)
and the cell-distribution search (each stage over-parameterised to N_max cells, beta over the
output pairs that give stage lengths N_min..N_max)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..genotypes import StageGenotype
from ..genotypes.derive import derive_stage, derive_stage_length
from ..lean import lean_apply
from ..nn import ReLUConvBN
from ..primitives import STAGE_PRIMITIVES
from ..stage_geometry import (NUM_STAGES, check_stage_primitives, check_window, output_pairs, per_stage,
                              window_inputs)
from .base import StageArchitecture, Supernet, check_int, new_alpha
from .fixed_cells import fixed_cell, lean_cell, stage_cell_genes
from .modules import module_class
from .stage_costs import stage_cell_costs

class SearchStage(nn.Module):
    """States 0/1 = two 1x1 ReLU-conv-BN (affine=False) projections of the stage input; cell j is
    fed the mixed sum over its window (one WindowedCellInput) and computes state j+2 = cell(x, x).
    Output: concat of the last two states, or the beta-weighted concat of `pairs`. recompute (lean
    mode): the preprocessing and the fixed cells keep only the states they read for the backward,
    and the output is the tuple of the last two states (the reduction cell reads them concatenated)."""

    def __init__(self, W, C_cell, num_cells, window, gene, concat, fused, pairs=None, primitives=STAGE_PRIMITIVES,
                 recompute=False):
        super().__init__()
        self.window, self.recompute = window, recompute
        self.preprocess0 = ReLUConvBN(W, W, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(W, W, 1, 1, 0, affine=False)
        node = module_class("WindowedCellInput", fused)
        self.nodes = nn.ModuleList(node(W, window_inputs(j, window), primitives, pool_bn=True)
                                   for j in range(num_cells))
        self.cells = nn.ModuleList(fixed_cell(gene, concat, W, W, C_cell, reduction=False)
                                   for _ in range(num_cells))
        self.pairs = None if pairs is None else [tuple(p) for p in pairs]
        self.output = module_class("WeightedPairConcat", fused)() if pairs is not None else None

    def forward(self, s0, s1, weights, beta=None):
        if self.recompute:
            states = lean_apply([self.preprocess0, self.preprocess1], [s0, s1])
        else:
            states = [self.preprocess0(s0), self.preprocess1(s1)]
        for j, (node, cell) in enumerate(zip(self.nodes, self.cells)):
            x = node(states[-window_inputs(j, self.window):], weights[j])
            states.append(lean_cell(cell, x, x) if self.recompute else cell(x, x))
        if self.pairs is None:
            return tuple(states[-2:]) if self.recompute else torch.cat(states[-2:], dim=1)
        return self.output(states, beta, self.pairs)


class StageSearchNet(nn.Module):
    """stem (3x3 conv -> BN, multiplier = cell concat size, 4 for DARTS-family cells) -> stage 1
    -> reduction cell -> stage 2 -> reduction cell -> stage 3 -> GAP -> linear. cells_per_stage:
    an int or one per stage. recompute: lean mode (see SearchStage), the stem's and the reduction
    cells' too."""

    def __init__(self, genotype, C, num_classes, cells_per_stage, window, in_channels=3, fused=True, pairs=None,
                 primitives=STAGE_PRIMITIVES, recompute=False):
        super().__init__()
        if recompute and not fused:
            raise ValueError("recompute=True (lean mode) needs fused=True")
        self.recompute = recompute
        cells_per_stage = per_stage("cells_per_stage", cells_per_stage)
        normals, reduces = stage_cell_genes(genotype)
        mult = len(normals[0][1])
        for gene, concat in normals + reduces:
            if len(concat) != mult:
                raise ValueError("genotype: every cell must concat the same number of states (stage "
                                 f"widths require it), got {[len(c) for _, c in normals + reduces]}")
        W, C_cell = mult * C, C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, W, 3, padding=1, bias=False), nn.BatchNorm2d(W))
        self.stages = nn.ModuleList()
        self.reductions = nn.ModuleList()
        for s in range(NUM_STAGES):
            gene, concat = normals[s]
            self.stages.append(SearchStage(W, C_cell, cells_per_stage[s], window, gene, concat, fused, pairs,
                                           primitives, recompute))
            if s < NUM_STAGES - 1:
                gene, concat = reduces[s]
                self.reductions.append(fixed_cell(gene, concat, 2 * W, 2 * W, 2 * C_cell, reduction=True))
                W, C_cell = 2 * W, 2 * C_cell
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * W, num_classes)

    def forward(self, x, stage_weights, betas=None):
        s = lean_apply([self.stem], [x])[0] if self.recompute else self.stem(x)
        for i, stage in enumerate(self.stages):
            s = stage(s, s, stage_weights[i], None if betas is None else betas[i])
            if i < len(self.reductions):
                s = lean_cell(self.reductions[i], s, s) if self.recompute else self.reductions[i](s, s)
        if isinstance(s, tuple):
            s = torch.cat(s, dim=1)
        return self.classifier(self.global_pooling(s).flatten(1))


class _StageSupernet(Supernet):
    """cells_per_stage: one int per stage; shared: one alpha set for all three stages (needs equal
    counts), derived once and built into every stage."""
    n_min = None   # the distribution search's shortest stage
    theta = None   # ... and its per-stage cell costs

    def __init__(self, genotype, C, num_classes, cells_per_stage, window, in_channels, fused, pairs,
                 stage_primitives, shared=False, recompute=False):
        super().__init__()
        check_int("C", C, 1)
        check_int("num_classes", num_classes, 1)
        self.cells_per_stage = per_stage("cells_per_stage", cells_per_stage)
        check_window(window, min(self.cells_per_stage))
        self.stage_primitives = check_stage_primitives(stage_primitives)
        if shared and len(set(self.cells_per_stage)) != 1:
            raise ValueError(f"a shared stage DAG needs the same number of cells in every stage, got "
                             f"cells_per_stage={self.cells_per_stage}")
        self.window, self.fused, self.shared = window, fused, bool(shared)
        self.net = StageSearchNet(genotype, C, num_classes, self.cells_per_stage, window, in_channels, fused,
                                  pairs, self.stage_primitives, recompute)
        P = len(self.stage_primitives)
        for name, n in ([("alpha_shared", self.cells_per_stage[0])] if self.shared else
                        [(f"alpha_stage{s + 1}", n) for s, n in enumerate(self.cells_per_stage)]):
            setattr(self, name, nn.ParameterList(new_alpha(window_inputs(j, window), P) for j in range(n)))

    def _alpha_sets(self):
        if self.shared:
            return [list(self.alpha_shared)]
        return [list(getattr(self, f"alpha_stage{s + 1}")) for s in range(NUM_STAGES)]

    def stage_alphas(self):
        """Raw alpha logits, one list of per-cell [edges, P] tensors per stage (with a shared DAG
        the same tensors for every stage)."""
        sets = self._alpha_sets()
        return sets * NUM_STAGES if self.shared else sets

    def stage_betas(self):
        return None

    def stage_architecture(self):
        return StageArchitecture(self.stage_alphas(), self.stage_betas(), self.window, self.n_min,
                                 self.stage_primitives, self.theta)

    def _stage_weights(self):
        weights = [[F.softmax(a, dim=-1) for a in alphas] for alphas in self._alpha_sets()]
        return weights * NUM_STAGES if self.shared else weights

    def _dags(self):
        dags = [derive_stage(alphas, self.stage_primitives, window=self.window, k=2, rule="hdas")[0]
                for alphas in self._alpha_sets()]
        return [dags[0]] * NUM_STAGES if self.shared else dags


class HsDasSearch(_StageSupernet):
    """Hs-DAS stage search: fixed cells from `genotype` (a cell Genotype, a stage-specific
    StageCellsGenotype, a library name or a genotype string), `cells_per_stage` cells per stage (an
    int, 6 in the CIFAR setting and 4 in the ImageNet one, or one per stage such as (6, 6, 4)),
    window m in [2, N+1] (default 3), `stage_primitives` the ops of a stage edge.
    shared_dag=True is Hs-DAS*: one stage DAG (one alpha set) for all three stages. With a
    StageCellsGenotype (stage-specific cells) the search is Hs-DAS-dagger."""

    def __init__(self, genotype="DARTS_V2", C=16, num_classes=10, cells_per_stage=6, window=3,
                 in_channels=3, fused=True, stage_primitives=STAGE_PRIMITIVES, shared_dag=False, recompute=False):
        super().__init__(genotype, C, num_classes, cells_per_stage, window, in_channels, fused, None,
                         stage_primitives, shared_dag, recompute)

    def arch_weights(self):
        return (self._stage_weights(),)

    def genotype(self):
        d1, d2, d3 = self._dags()
        n1, n2, n3 = self.cells_per_stage
        return StageGenotype(DAG1=d1, DAG1_concat=[n1, n1 + 1], DAG2=d2, DAG2_concat=[n2, n2 + 1],
                             DAG3=d3, DAG3_concat=[n3, n3 + 1])


class DistributionSearch(_StageSupernet):
    """Cell-distribution search: every stage has N_max cells, all computed; stage output =
    sum_k softmax(beta)_k * concat(last two cells of a stage of N_min+k cells). Works for any
    1 <= N_min <= N_max (the released code only for 8 and 4).

    theta: the per-stage cost of Eq. 5's complexity loss, '1' (every cell costs 1: the loss is the
    expected number of cells), 'flops' or 'params' (one cell of the stage at its width and, for
    'flops', its resolution on image_size x image_size inputs; in millions); see stage_cell_costs."""

    def __init__(self, genotype="DARTS_V2", C=16, num_classes=10, n_max=8, n_min=4, window=3,
                 in_channels=3, fused=True, stage_primitives=STAGE_PRIMITIVES, theta="1", image_size=32,
                 recompute=False):
        check_int("n_max", n_max, 1)
        check_int("n_min", n_min, 1, n_max)
        self.n_min, self.n_max = n_min, n_max
        super().__init__(genotype, C, num_classes, n_max, window, in_channels, fused,
                         output_pairs(n_min, n_max), stage_primitives, recompute=recompute)
        self.theta_kind = str(theta)
        self.theta = stage_cell_costs(genotype, C, self.theta_kind, image_size)
        for s in range(NUM_STAGES):
            setattr(self, f"beta_stage{s + 1}", new_alpha(n_max - n_min + 1))

    def stage_betas(self):
        return [getattr(self, f"beta_stage{s + 1}") for s in range(NUM_STAGES)]

    def arch_weights(self):
        return self._stage_weights(), [F.softmax(b, dim=-1) for b in self.stage_betas()]

    def stage_lengths(self):
        return [derive_stage_length(b, self.n_min)[0] for b in self.stage_betas()]

    def genotype(self):
        """All N_max cells of each stage, concat = the searched pair; cells after it are dead
        (see hdas_ext.genotypes.prune_dead_cells)."""
        dags = self._dags()
        concats = [derive_stage_length(b, self.n_min)[1] for b in self.stage_betas()]
        return StageGenotype(DAG1=dags[0], DAG1_concat=concats[0], DAG2=dags[1], DAG2_concat=concats[1],
                         DAG3=dags[2], DAG3_concat=concats[2])
