"""The drop-in: DARTS-family MixedOps of other code found in a model by what they compute, proven
equal to their fused form on float64 copies, and fused in place (fuse_mixed_ops)."""
from .fuse import FuseReport, fuse_mixed_ops

__all__ = ["fuse_mixed_ops", "FuseReport"]
