"""Builds hdas_ext._C: CPU kernels always, CUDA kernels when a CUDA toolkit and a CUDA build of
torch are present, for the architectures of cuda_archs.txt unless TORCH_CUDA_ARCH_LIST says
otherwise (docs/building.md). HDAS_FORCE_CPU=1 skips CUDA."""
import os
import re
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = "0.1.0"


def listed(name):
    """The entries of a list file at the root (csrc/SOURCES, cuda_archs.txt): one a line, '#' comments."""
    lines = (ROOT / name).read_text().splitlines()
    return [e for e in (line.split("#")[0].strip() for line in lines) if e]


# On this project's machines /usr/local/bin/nvcc is a wrapper that makes torch guess the wrong
# CUDA_HOME, and torch crashes picking archs when no GPU is visible. Both must be set before
# torch.utils.cpp_extension is imported.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ";".join(listed("cuda_archs.txt")))
os.environ.setdefault("MAX_JOBS", "2")

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402
from torch.utils.cpp_extension import _get_cuda_arch_flags  # noqa: E402  (what BuildExtension passes nvcc)


def sources():
    return [f"csrc/{s}" for s in listed("csrc/SOURCES")]


def cuda_archs():
    """What nvcc builds, as 'sm_75 ... compute_120' (SASS, then PTX): read off the -gencode flags
    that BuildExtension passes (torch's own function, on the same TORCH_CUDA_ARCH_LIST)."""
    if os.environ["TORCH_CUDA_ARCH_LIST"] == "native" and not torch.cuda.is_available():
        sys.exit("hdas_ext: TORCH_CUDA_ARCH_LIST=native needs a visible GPU; name the architectures instead")
    codes = {flag.rsplit("code=", 1)[1] for flag in _get_cuda_arch_flags()}
    return " ".join(sorted(codes, key=lambda c: (c.startswith("compute"), int(re.sub(r"\D", "", c)), c)))


def want_cuda():
    if os.environ.get("HDAS_FORCE_CPU") == "1":
        return False, "HDAS_FORCE_CPU=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU build"
    if CUDA_HOME is None or shutil.which("nvcc", path=str(Path(CUDA_HOME) / "bin")) is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"CUDA {torch.version.cuda} at {CUDA_HOME}"


def extension():
    with_cuda, why = want_cuda()
    srcs = [s for s in sources() if with_cuda or not s.endswith(".cu")]
    archs = cuda_archs() if with_cuda else ""
    print(f"hdas_ext: building {'CPU + CUDA' if with_cuda else 'CPU-only'} kernels ({why})"
          + (f" for {archs}" if with_cuda else ""), flush=True)
    macros = [("HDAS_VERSION", f'"{VERSION}"')]
    cxx = ["-O3", "-fopenmp"]
    if with_cuda:
        macros += [("HDAS_WITH_CUDA", None), ("HDAS_CUDA_ARCHS", f'"{archs}"')]
        return CUDAExtension("hdas_ext._C", srcs, define_macros=macros,
                             extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
                             extra_link_args=["-fopenmp"])
    return CppExtension("hdas_ext._C", srcs, define_macros=macros,
                        extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])



# Guarded so that a test can read cuda_archs() without building (pip runs this file as __main__).
if __name__ == "__main__":
    setup(
        name="hdas_ext",
        version=VERSION,
        description="Fused CPU/CUDA kernels and searches for hierarchical differentiable architecture search (H-DAS)",
        long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
        long_description_content_type="text/markdown",
        packages=find_packages(include=["hdas_ext", "hdas_ext.*"]),
        # The embedded default dataset (hdas_ext.data.load_digits reads it with importlib.resources).
        package_data={"hdas_ext": ["digits.npz"]},
        python_requires=">=3.9",
        # Loose on purpose: the GPU machine runs an older torch; requirement files pin 2.14.1.
        # Base: what a plain install needs for the main job (search/train on the embedded digits):
        # numpy reads the dataset; tqdm draws the progress bars that are on by default (small, pure
        # Python, no dependencies of its own). Extras, each imported only where it is used:
        # torchvision ('data': CIFAR-10 and ImageNet readers) pins one exact torch release, so as a base
        # dependency it would make pip replace the torch a user already has; tensorboard ('log') brings
        # grpcio and protobuf for logs the runs skip with a one-line note; graphviz ('viz') draws genotypes.
        install_requires=["torch>=2.6", "numpy", "tqdm"],
        extras_require={"data": ["torchvision"], "viz": ["graphviz"], "log": ["tensorboard"],
                        "all": ["torchvision", "graphviz", "tensorboard"]},
        ext_modules=[extension()],
        cmdclass={"build_ext": BuildExtension},
        entry_points={"console_scripts": ["hdas=hdas_ext.cli:main"]},
        zip_safe=False,
    )
