"""Genotypes: data types, the published library, safe parsing/JSON, derivation and analysis."""
from .types import (GENOTYPE_TYPES, KNOWN_OPS, TYPE_NAMES, Genotype, Genotype2, Genotype3, StageCellsGenotype,
                    StageGenotype, cell_nodes, cells, flatten_nodes, stages, validate)
from .library import (DARTS, DARTS_V1, DARTS_V2, HC_DAS, HS_DAS_CIFAR, HS_DAS_IMAGENET, LIBRARY, PDARTS,
                      PC_DARTS_cifar, PC_DARTS_image, get, names, noisy_darts_a)
from .serialize import from_json, parse, resolve, to_json
from .analysis import (average_path_length, dead_cells, expected_depth, live_states, path_stats,
                       prune_dead_cells, stage_depth)
from .derive import (RULES, cell_edge_counts, derive_cell, derive_genotype, derive_stage, derive_stage_cells_genotype,
                     derive_stage_genotype, derive_stage_length, stage_edge_counts)
from .cost import count_cell_madds, count_cell_params, op_madds, op_params
