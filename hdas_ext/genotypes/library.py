"""Published architectures, retrievable by name with :func:`get`.

DARTS-family cells are verbatim from the authors' repositories. The H-DAS values (HC_DAS,
HS_DAS_CIFAR, HS_DAS_IMAGENET) were decoded from the paper's figures; where our reading of a figure
and a third-party transcription differ, ours is used (docs/genotypes.md).
"""
import copy

from .types import Genotype, StageGenotype, StageCellsGenotype, flatten_nodes, validate

_C = [2, 3, 4, 5]

DARTS_V1 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
    normal_concat=list(_C),
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)],
    reduce_concat=list(_C))

DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    normal_concat=list(_C),
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
    reduce_concat=list(_C))

DARTS = DARTS_V2

PDARTS = Genotype(
    normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)],
    normal_concat=list(_C),
    reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2),
            ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)],
    reduce_concat=list(_C))

PC_DARTS_cifar = Genotype(
    normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1),
            ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)],
    normal_concat=list(_C),
    reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2),
            ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)],
    reduce_concat=list(_C))

PC_DARTS_image = Genotype(
    normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)],
    normal_concat=list(_C),
    reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1),
            ('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)],
    reduce_concat=list(_C))

noisy_darts_a = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('dil_conv_3x3', 2),
            ('dil_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4), ('dil_conv_3x3', 3)],
    normal_concat=list(_C),
    reduce=[('max_pool_3x3', 0), ('dil_conv_5x5', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('skip_connect', 2), ('skip_connect', 3), ('skip_connect', 2), ('dil_conv_5x5', 4)],
    reduce_concat=list(_C))

HC_DAS = StageCellsGenotype(
    normal1=flatten_nodes([[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)],
                           [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)],
                           [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)],
                           [('sep_conv_3x3', 2), ('sep_conv_3x3', 3)]]),
    normal1_concat=list(_C),
    reduce1=flatten_nodes([[('max_pool_3x3', 0), ('skip_connect', 1)],
                           [('max_pool_3x3', 0), ('max_pool_3x3', 2)],
                           [('sep_conv_3x3', 0), ('skip_connect', 1)],
                           [('sep_conv_3x3', 0), ('dil_conv_3x3', 4)]]),
    reduce1_concat=list(_C),
    normal2=flatten_nodes([[('skip_connect', 0), ('dil_conv_3x3', 1)],
                           [('skip_connect', 0), ('sep_conv_3x3', 1)],
                           [('skip_connect', 0), ('sep_conv_3x3', 1)],
                           [('skip_connect', 0), ('sep_conv_3x3', 1)]]),
    normal2_concat=list(_C),
    reduce2=flatten_nodes([[('max_pool_3x3', 0), ('dil_conv_3x3', 1)],
                           [('max_pool_3x3', 0), ('dil_conv_5x5', 2)],
                           [('max_pool_3x3', 0), ('dil_conv_5x5', 3)],
                           [('max_pool_3x3', 0), ('skip_connect', 4)]]),
    reduce2_concat=list(_C),
    normal3=flatten_nodes([[('dil_conv_5x5', 0), ('sep_conv_3x3', 1)],
                           [('sep_conv_3x3', 1), ('dil_conv_3x3', 2)],
                           [('dil_conv_3x3', 0), ('sep_conv_5x5', 2)],
                           [('sep_conv_5x5', 3), ('sep_conv_3x3', 4)]]),
    normal3_concat=list(_C))

HS_DAS_CIFAR = StageGenotype(
    DAG1=[[('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('max_pool_3x3', 2)],
          [('max_pool_3x3', 2), ('skip_connect', 4)],
          [('max_pool_3x3', 3), ('skip_connect', 5)],
          [('max_pool_3x3', 4), ('skip_connect', 6)]],
    DAG1_concat=[6, 7],
    DAG2=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)],
          [('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('skip_connect', 2)],
          [('max_pool_3x3', 2), ('skip_connect', 3)],
          [('max_pool_3x3', 3), ('skip_connect', 5)],
          [('avg_pool_3x3', 4), ('skip_connect', 6)]],
    DAG2_concat=[6, 7],
    DAG3=[[('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('skip_connect', 2)],
          [('skip_connect', 2), ('skip_connect', 3)],
          [('max_pool_3x3', 2), ('skip_connect', 3)],
          [('max_pool_3x3', 3), ('skip_connect', 5)],
          [('max_pool_3x3', 4), ('max_pool_3x3', 5)]],
    DAG3_concat=[6, 7])

HS_DAS_IMAGENET = StageGenotype(
    DAG1=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)],
          [('skip_connect', 0), ('skip_connect', 2)],
          [('skip_connect', 2), ('skip_connect', 3)],
          [('skip_connect', 2), ('avg_pool_3x3', 4)]],
    DAG1_concat=[4, 5],
    DAG2=[[('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('skip_connect', 2)],
          [('skip_connect', 2), ('skip_connect', 3)],
          [('skip_connect', 3), ('skip_connect', 4)]],
    DAG2_concat=[4, 5],
    DAG3=[[('skip_connect', 0), ('skip_connect', 1)],
          [('skip_connect', 1), ('skip_connect', 2)],
          [('skip_connect', 2), ('skip_connect', 3)],
          [('max_pool_3x3', 2), ('skip_connect', 3)]],
    DAG3_concat=[4, 5])

LIBRARY = {
    "DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS, "PDARTS": PDARTS,
    "PC_DARTS_cifar": PC_DARTS_cifar, "PC_DARTS_image": PC_DARTS_image,
    "noisy_darts_a": noisy_darts_a, "HC_DAS": HC_DAS,
    "HS_DAS_CIFAR": HS_DAS_CIFAR, "HS_DAS_IMAGENET": HS_DAS_IMAGENET,
}
for _g in LIBRARY.values():
    validate(_g)


def _key(name):
    # 'P-DARTS', 'pdarts', 'pc_darts_cifar' all resolve; published spellings stay canonical.
    return name.replace("-", "").replace("_", "").lower()


_BY_KEY = {_key(n): n for n in LIBRARY}


def names():
    """Canonical library names."""
    return list(LIBRARY)


def get(name):
    """A published genotype by name (case, '-' and '_' ignored, so 'P-DARTS' finds PDARTS).
    Returns a copy whose lists may be edited freely."""
    if not isinstance(name, str):
        raise TypeError(f"get(name): name must be a str, got {type(name).__name__}")
    canonical = _BY_KEY.get(_key(name))
    if canonical is None:
        raise KeyError(f"unknown genotype name {name!r}; known: {', '.join(LIBRARY)}")
    return copy.deepcopy(LIBRARY[canonical])
