"""build_eval_network: one entry point for every evaluation network."""
from .. import genotypes as G
from ..data import DATASET_SHAPES
from .chain import ChainNetwork, chain_cell_genes
from .stage import CONSTRUCTIONS, StageNetwork

__all__ = ["build_eval_network", "cell_sets", "shared_stages"]


def shared_stages(dag, concat):
    """Hs-DAS*: the StageGenotype whose three stages are the one searched DAG."""
    return G.validate(G.StageGenotype(list(dag), list(concat), list(dag), list(concat), list(dag), list(concat)))


def cell_sets(g):
    """The five (gene, concat) pairs normal1, reduce1, normal2, reduce2, normal3 of a Genotype
    (its normal/reduce pair repeated) or a StageCellsGenotype."""
    if isinstance(g, G.Genotype):
        n, r = (g.normal, list(g.normal_concat)), (g.reduce, list(g.reduce_concat))
        return [n, r, n, r, n]
    return [(gene, concat) for _, gene, concat in G.cells(g)]


def build_eval_network(cell, stages=None, dataset="cifar10", init_channels=36, layers=20,
                       auxiliary=True, drop_path_prob=0.2, pool_bn=None, num_classes=None,
                       prune_dead=True, construction="released"):
    """An evaluation network.

    cell: a DARTS Genotype or an Hc-DAS StageCellsGenotype (object, library name such as 'DARTS_V2' or
    'HC_DAS', or a genotype string/JSON).
    stages: None for a chain network (DARTS; Hc-DAS when `cell` is a StageCellsGenotype), or an Hs-DAS
    StageGenotype (object, name such as 'HS_DAS_CIFAR', string) for a stage network, whose cell counts
    come from the stage genotype (`layers` is then unused); dead cells are pruned first. A pair
    (dag, concat) is one stage DAG built into all three stages (Hs-DAS*, see shared_stages).
    dataset: 'cifar10' or 'digits' (CIFAR stem and head) or 'imagenet' (stride-2 stems).
    pool_bn: pools followed by an affine BN. Default: off for a DARTS chain network with a
    Genotype (as DARTS evaluates it), on for Hc-DAS and Hs-DAS networks (H-DAS code).
    construction: 'released' (default) or 'paper', how a stage network joins its stages (see
    networks.stage.CONSTRUCTIONS and docs/algorithms.md); chain networks have one construction.
    drop_path_prob: the initial value of model.drop_path_prob (trainers ramp it per epoch).
    forward(x) returns (logits, aux_logits); aux_logits is None in eval mode or without a head.
    """
    if dataset not in DATASET_SHAPES:
        raise ValueError(f"dataset must be one of {tuple(DATASET_SHAPES)}, got {dataset!r}")
    for name, v in (("init_channels", init_channels), ("layers", layers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 0.0 <= drop_path_prob < 1.0:
        raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob!r}")
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")
    if construction != "released" and stages is None:
        raise ValueError(f"construction={construction!r} applies to stage networks (pass stages); a chain "
                         f"network has one construction, 'released'")
    g = G.resolve(cell, "cell", (G.Genotype, G.StageCellsGenotype))
    if num_classes is None:
        num_classes = DATASET_SHAPES[dataset][0]
    imagenet = dataset == "imagenet"
    sets = cell_sets(g)
    if stages is None:
        if pool_bn is None:
            pool_bn = isinstance(g, G.StageCellsGenotype)
        genes = chain_cell_genes(sets, layers)
        return ChainNetwork(genes, init_channels, num_classes, auxiliary, imagenet, bool(pool_bn),
                            drop_path_prob)
    if isinstance(stages, tuple) and len(stages) == 2 and isinstance(stages[0], list):
        stages = shared_stages(*stages)
    g2 = G.resolve(stages, "stages", (G.StageGenotype,))
    if pool_bn is None:
        pool_bn = True
    return StageNetwork(G.stages(g2), sets, init_channels, num_classes, auxiliary, imagenet,
                        bool(pool_bn), drop_path_prob, prune=prune_dead,
                        construction=construction)
