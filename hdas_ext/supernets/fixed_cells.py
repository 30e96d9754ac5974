"""The fixed (derived) cells inside the stage-level search networks (docs/algorithms.md), built with the
evaluation networks' Cell: two 1x1 ReLU-conv-BN preprocessors (never FactorizedReduce: both
inputs of a stage cell, and of the reduction cell between stages, have the same resolution),
affine ops with pool BN (H-DAS builds every pool with BN), no drop path during search."""
from ..genotypes import Genotype, StageCellsGenotype, resolve
from ..networks import Cell
from ..networks.build import cell_sets


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
