"""The H-DAS search: bi-level optimiser, auxiliary losses, data split and the epoch loop."""
from .bilevel import BilevelOptimizer
from .config import SPACES, SearchConfig
from .losses import LossMode, auxiliary_loss, complexity_loss, depth_loss, edge_weights, stage_depth
from .report import genotype_analysis
from .runner import Search, run_search
