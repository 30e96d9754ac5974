"""Builds hdas_ext._C: CPU kernels always, CUDA kernels when a CUDA toolkit and a CUDA build of
torch are present (sm_90 unless TORCH_CUDA_ARCH_LIST says otherwise). HDAS_FORCE_CPU=1 skips CUDA."""
import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = "0.1.0"

# On this project's machines /usr/local/bin/nvcc is a wrapper that makes torch guess the wrong
# CUDA_HOME, and torch crashes picking archs when no GPU is visible. Both must be set before
# torch.utils.cpp_extension is imported.
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
os.environ.setdefault("MAX_JOBS", "2")

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def sources():
    lines = (ROOT / "csrc" / "SOURCES").read_text().splitlines()
    return [f"csrc/{s.strip()}" for s in lines if s.strip() and not s.startswith("#")]


def want_cuda():
    if os.environ.get("HDAS_FORCE_CPU") == "1":
        return False, "HDAS_FORCE_CPU=1"
    if torch.version.cuda is None:
        return False, "torch is a CPU build"
    if CUDA_HOME is None or shutil.which("nvcc", path=str(Path(CUDA_HOME) / "bin")) is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"CUDA {torch.version.cuda} at {CUDA_HOME}, archs {os.environ['TORCH_CUDA_ARCH_LIST']}"


def extension():
    with_cuda, why = want_cuda()
    srcs = [s for s in sources() if with_cuda or not s.endswith(".cu")]
    print(f"hdas_ext: building {'CPU + CUDA' if with_cuda else 'CPU-only'} kernels ({why})", flush=True)
    macros = [("HDAS_VERSION", f'"{VERSION}"')]
    cxx = ["-O3", "-fopenmp"]
    if with_cuda:
        macros += [("HDAS_WITH_CUDA", None), ("HDAS_CUDA_ARCHS", f'"{os.environ["TORCH_CUDA_ARCH_LIST"]}"')]
        return CUDAExtension("hdas_ext._C", srcs, define_macros=macros,
                             extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
                             extra_link_args=["-fopenmp"])
    return CppExtension("hdas_ext._C", srcs, define_macros=macros,
                        extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])


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
