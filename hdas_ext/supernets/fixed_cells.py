"""The fixed (derived) cells inside the stage-level search networks (docs/algorithms.md), built with the
evaluation networks' Cell: two 1x1 ReLU-conv-BN preprocessors (never FactorizedReduce: both
inputs of a stage cell, and of the reduction cell between stages, have the same resolution),
affine ops with pool BN (H-DAS builds every pool with BN), no drop path during search."""
import torch

from ..genotypes import Genotype, StageCellsGenotype, resolve
from ..networks import Cell
from ..networks.build import cell_sets
from ..lean import lean_apply
from ..nn import Identity


def stage_cell_genes(genotype):
    """([(normal gene, concat)] for stages 1..3, [(reduce gene, concat)] for the two reductions).
    A DARTS-style Genotype uses its one normal/reduce cell everywhere; a StageCellsGenotype gives each
    stage its own normal cell and each reduction its own reduce cell. `genotype`: an object, a
    library name or a genotype string / JSON (ValueError for any other kind)."""
    try:
        genotype = resolve(genotype, "genotype", (Genotype, StageCellsGenotype))
    except TypeError as e:
        raise ValueError(str(e)) from None
    normal1, reduce1, normal2, reduce2, normal3 = cell_sets(genotype)
    return [normal1, normal2, normal3], [reduce1, reduce2]


def fixed_cell(gene, concat, C_pp, C_p, C, reduction):
    return Cell(gene, concat, C_pp, C_p, C, reduction, reduction_prev=False, pool_bn=True)


def lean_cell(cell, s0, s1):
    """cell(s0, s1) for a fixed search-time Cell (no drop path) in lean mode: its preprocessing
    and every op keep only the states they read for the backward (see hdas_ext.lean).
    s0 and s1 may be tuples of states, read concatenated."""
    states = lean_apply([cell.preprocess0, cell.preprocess1], [s0, s1])
    for i in range(cell._steps):
        pair = [(cell._ops[j], states[cell._indices[j]]) for j in (2 * i, 2 * i + 1)]
        computed = iter(lean_apply([op for op, _ in pair if not isinstance(op, Identity)],
                                   [x for op, x in pair if not isinstance(op, Identity)]))
        h1, h2 = (x if isinstance(op, Identity) else next(computed) for op, x in pair)
        states.append(h1 + h2)
    return torch.cat([states[i] for i in cell._concat], dim=1)
