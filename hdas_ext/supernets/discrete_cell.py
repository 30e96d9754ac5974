"""Fixed (derived) cells used inside the stage-level search network (spec §2.1): two 1x1
ReLU-conv-BN preprocessors (never FactorizedReduce: both inputs of a stage cell, and of the
reduction cell between stages, have the same resolution), the genotype's ops with affine BN and
pool BN (H-DAS builds every pool with BN), output = channel concat of the genotype's concat
states. No drop path: it stays 0 during search."""
import torch
from torch import nn

from ..genotypes import Genotype, Genotype3, get, parse, validate
from ..genotypes.types import cells as genotype_cells
from ..nn import ReLUConvBN, make_op


class DiscreteCell(nn.Module):
    def __init__(self, gene, concat, C_pp, C_p, C, reduction, affine=True):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = ReLUConvBN(C_pp, C, 1, 1, 0, affine=affine)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=affine)
        self._ops = nn.ModuleList(
            make_op(name, C, 2 if reduction and src < 2 else 1, affine, pool_bn=True) for name, src in gene)
        self._indices = [src for _, src in gene]
        self._concat = list(concat)
        self.multiplier = len(self._concat)

    def forward(self, s0, s1):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            a, b = 2 * i, 2 * i + 1
            states.append(self._ops[a](states[self._indices[a]]) + self._ops[b](states[self._indices[b]]))
        return torch.cat([states[i] for i in self._concat], dim=1)


def resolve_genotype(genotype):
    """A Genotype/Genotype3 from an object, a library name or a genotype string."""
    if isinstance(genotype, str):
        text = genotype.strip()
        genotype = parse(text) if "(" in text else get(text)
    if not isinstance(genotype, (Genotype, Genotype3)):
        raise ValueError("genotype must be a cell Genotype or a stage-specific Genotype3 (or a library "
                         f"name / string of one), got {type(genotype).__name__}")
    return validate(genotype)


def stage_cell_genes(genotype):
    """([(normal gene, concat)] for stages 1..3, [(reduce gene, concat)] for the two reductions).
    A DARTS-style Genotype uses its one normal/reduce cell everywhere; a Genotype3 gives each
    stage its own normal cell and each reduction its own reduce cell."""
    genotype = resolve_genotype(genotype)
    by_name = {name: (gene, concat) for name, gene, concat in genotype_cells(genotype)}
    if isinstance(genotype, Genotype):
        return [by_name["normal"]] * 3, [by_name["reduce"]] * 2
    return ([by_name["normal1"], by_name["normal2"], by_name["normal3"]],
            [by_name["reduce1"], by_name["reduce2"]])
