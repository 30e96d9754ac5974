"""Search supernets: DARTS cell search, Hc-DAS (stage-specific cells), Hs-DAS stage search and the
cell-distribution search. Each keeps architecture parameters (alphas()/named_alphas()) apart from
network weights (weights()/named_weights()); fused=False builds the eager reference twin.
SEARCH_SPACES names them by the word `hdas search` uses, with the settings each takes."""
import inspect
from typing import NamedTuple, Tuple

from .base import StageArchitecture, Supernet
from .cell_search import CellSearchNet, DartsCellSearch, HcDasSearch, SearchCell
from .fixed_cells import fixed_cell, stage_cell_genes
from .modules import module_class
from .stage_costs import THETA_KINDS, stage_cell_costs
from .stage_search import DistributionSearch, HsDasSearch, SearchStage, StageSearchNet


class SearchSpace(NamedTuple):
    supernet: type
    settings: Tuple[str, ...]   # its own search settings: constructor keywords of the same name
    image_size: bool = False    # whether it also takes the input resolution


_CELL = ("layers", "partial_channels", "edge_normalization")
_STAGE = ("genotype", "window", "stage_primitives")
SEARCH_SPACES = {
    "cells": SearchSpace(DartsCellSearch, _CELL),
    "hc": SearchSpace(HcDasSearch, _CELL),
    "hs": SearchSpace(HsDasSearch, _STAGE + ("cells_per_stage", "shared_dag")),
    "distribution": SearchSpace(DistributionSearch, _STAGE + ("n_max", "n_min", "theta"), image_size=True),
}


def search_space(name):
    """SEARCH_SPACES[name], or ValueError naming the spaces."""
    if name not in SEARCH_SPACES:
        raise ValueError(f"space must be one of {', '.join(SEARCH_SPACES)}, got {name!r}")
    return SEARCH_SPACES[name]


def setting_default(space, name):
    """The default of one of a space's settings: its supernet constructor's."""
    return inspect.signature(search_space(space).supernet).parameters[name].default


def build_supernet(space, C, num_classes, in_channels=3, image_size=32, fused=True, recompute=False, **settings):
    """The supernet of search space `space`; `settings` are its own (SEARCH_SPACES[space].settings,
    each optional: the constructor's default when left out)."""
    entry = search_space(space)
    if entry.image_size:
        settings["image_size"] = image_size
    return entry.supernet(C=C, num_classes=num_classes, in_channels=in_channels, fused=fused, recompute=recompute,
                          **settings)
