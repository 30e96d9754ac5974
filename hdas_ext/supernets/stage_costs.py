"""theta of the complexity loss (the paper's Eq. 5, docs/algorithms.md): the cost of one cell of
each stage, from that stage's cell genotype at its width and resolution in the stage networks
(stage s: C_cell = C * 2^s, inputs W = concat * C_cell wide, ceil(image_size / 2^s) pixels)."""
import math

from ..genotypes import count_cell_madds, count_cell_params
from ..stage_geometry import NUM_STAGES
from .fixed_cells import stage_cell_genes

THETA_KINDS = ("1", "flops", "params")


def stage_cell_costs(genotype, C, kind="1", image_size=32):
    """[theta_1, theta_2, theta_3]: 1.0 each for kind '1'; for 'params' the parameters of one
    cell (its two 1x1 preprocessors included, pools with BN as the search builds them), for
    'flops' its convolution multiply-adds on one image; both in millions."""
    kind = str(kind)
    if kind not in THETA_KINDS:
        raise ValueError(f"theta must be one of {THETA_KINDS}, got {kind!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if kind == "1":
        return [1.0] * NUM_STAGES
    normals, _ = stage_cell_genes(genotype)
    costs = []
    for s, (gene, concat) in enumerate(normals):
        C_cell = C * 2 ** s
        W = len(concat) * C_cell
        if kind == "params":
            n = count_cell_params(gene, C_cell, False, affine=True, pool_bn=True, C_pp=W, C_p=W)
        else:
            n = count_cell_madds(gene, C_cell, False, math.ceil(image_size / 2 ** s), C_pp=W, C_p=W)
        costs.append(n / 1e6)
    return costs
