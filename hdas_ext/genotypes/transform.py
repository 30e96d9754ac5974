"""Transforms of fixed genotypes: the same connections with another set of stage operations (the
paper's Table 6 compares the Hs-DAS network with its stage ops swapped, retrained, not searched)."""
from ..primitives import STAGE_PRIMITIVES
from .serialize import resolve
from .types import StageGenotype, stages, validate

__all__ = ["swap_stage_ops"]


def swap_stage_ops(genotype, primitives=("skip_connect", "none"), replacement="skip_connect"):
    """`genotype` (a StageGenotype, library name, string or JSON) with every stage edge whose op is
    not in `primitives` given `replacement`. The DAG's connections are kept: a derived edge exists,
    so it becomes the reduced set's op that keeps an edge. With {skip_connect, none} the pools
    (max_pool_3x3, avg_pool_3x3) become skip_connect: 'none' would cut the edge and change the
    connections, and skip_connect is the other parameter-free op of the same shape.
    Returns a new StageGenotype."""
    g = resolve(genotype, "genotype", (StageGenotype,))
    primitives = tuple(primitives)
    unknown = [p for p in primitives if p not in STAGE_PRIMITIVES]
    if not primitives or unknown:
        raise ValueError(f"primitives must be stage primitives from {STAGE_PRIMITIVES}, got {primitives!r}")
    if replacement == "none" or replacement not in primitives:
        raise ValueError(f"replacement must be one of primitives {primitives!r} other than 'none' (it keeps an "
                         f"edge), got {replacement!r}")
    swapped = []
    for dag, concat in stages(g):
        swapped += [[[(op if op in primitives else replacement, src) for op, src in cell] for cell in dag],
                    list(concat)]
    return validate(StageGenotype(*swapped))
