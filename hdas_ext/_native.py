"""Loads the compiled library once. Missing native code is not an error: the package then runs on
the pure-PyTorch reference and says so once."""
import warnings

import torch  # noqa: F401  (loads libtorch, which _C links against)

try:
    from . import _C  # registers torch.ops.hdas.*
except ImportError as exc:  # not built, or built against another torch
    _C = None
    _ERROR = exc
else:
    _ERROR = None


def native_available():
    """True when the compiled hdas ops are loaded."""
    return _C is not None


def build_info():
    """Facts of the native build (version, torch it was built against, CUDA and the architectures
    its kernels were built for, OpenMP, the CPU kernels' instruction set in this process)."""
    if _C is None:
        return {"native": False, "error": str(_ERROR)}
    return {
        "native": True,
        "version": _C.__version__,
        "torch_version": _C.torch_version,
        "with_cuda": _C.with_cuda,
        "cuda_archs": cuda_archs(_C.cuda_archs),
        "with_openmp": _C.with_openmp,
        "num_threads": _C.num_threads(),
        "cpu_isa": _C.cpu_isa(),
    }


def cuda_archs(built):
    """'sm_75 sm_90 compute_90' -> {'sass': ['sm_75', 'sm_90'], 'ptx': ['compute_90']}."""
    entries = built.split()
    return {"sass": [a for a in entries if a.startswith("sm_")],
            "ptx": [a for a in entries if a.startswith("compute_")]}


_warned = False


def warn_fallback():
    global _warned
    if not _warned and _C is None:
        warnings.warn(f"hdas_ext: native ops unavailable ({_ERROR}); using the PyTorch reference", stacklevel=3)
        _warned = True
