"""The fused ops' eager formulas, with the same signatures as the ops (defined in hdas_ext.ops.reference)."""
from ..ops.codes import ADD, AVG_POOL, CODES, EXTRA, MAX_POOL, NONE, SKIP  # noqa: F401
from ..ops.conv_reference import conv_candidates  # noqa: F401
from ..ops.reference import mixed_node, pair_concat  # noqa: F401
