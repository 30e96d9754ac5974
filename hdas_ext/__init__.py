"""hdas_ext: fused CPU/CUDA kernels for DARTS-style mixed operations and H-DAS stage aggregation,
and the H-DAS searches built on them."""
from ._native import build_info, native_available
from . import ops  # noqa: F401  (registers fake kernels and autograd for torch.ops.hdas.*)
from .dropin import fuse_mixed_ops

__version__ = "0.1.0"
__all__ = ["native_available", "build_info", "fuse_mixed_ops", "ops", "__version__"]
