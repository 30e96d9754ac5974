"""Evaluation networks: DARTS chains (CIFAR/ImageNet), Hc-DAS stage-specific chains, Hs-DAS stage
networks with any number of cells per stage; parameter and multiply-add counters."""
from .build import build_eval_network, cell_sets, shared_stages
from .cells import AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, Cell, drop_path
from .chain import ChainNetwork, reduction_positions
from .counting import count_multiply_adds, count_params
from .stage import CONSTRUCTIONS, Stage, StageNetwork

__all__ = [
    "build_eval_network", "cell_sets", "shared_stages", "count_params", "count_multiply_adds",
    "ChainNetwork", "StageNetwork", "Stage", "Cell", "drop_path", "AuxiliaryHeadCIFAR",
    "AuxiliaryHeadImageNet", "reduction_positions", "CONSTRUCTIONS",
]
