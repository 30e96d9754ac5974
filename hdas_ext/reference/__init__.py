"""Plain-PyTorch versions of everything the fused ops compute: the test oracle, the fallback when
the native library is missing, and the benchmark baseline."""
from .functional import mixed_node, pair_concat
from .modules import MixedOp, PartialMixedOp, WeightedPairConcat, WindowedCellInput
