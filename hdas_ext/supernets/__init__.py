"""Search supernets: DARTS cell search, Hc-DAS (stage-specific cells), Hs-DAS stage search and the
cell-distribution search. Each keeps architecture parameters (alphas()/named_alphas()) apart from
network weights (weights()/named_weights()); fused=False builds the eager reference twin."""
from .base import Supernet
from .cell_search import CellSearchNet, DartsCellSearch, HcDasSearch, SearchCell
from .fixed_cells import fixed_cell, stage_cell_genes
from .modules import module_class
from .stage_costs import THETA_KINDS, stage_cell_costs
from .stage_search import (DistributionSearch, HsDasSearch, SearchStage, StageSearchNet, check_stage_primitives,
                           output_pairs, per_stage, window_inputs, window_sources)

SUPERNETS = {"cells": DartsCellSearch, "hc": HcDasSearch, "hs": HsDasSearch,
             "distribution": DistributionSearch}
