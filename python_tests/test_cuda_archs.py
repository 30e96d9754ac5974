"""The CUDA architectures: the rules by which the launchers decide, once per GPU, that the build holds
code the GPU runs (csrc/cuda/arch_check.h, through hdas_ext._C.cuda_arch_error), the default list
of cuda_archs.txt as setup.py turns it into nvcc flags, and build_info() against the built library."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hdas_ext
from hdas_ext import _native

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
DEFAULT_LIKE = "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 compute_100 compute_120"
# Every compute capability of a GPU that CUDA 13.0 supports (7.5 to 12.1), and one newer.
CAPABILITIES = [(7, 5), (8, 0), (8, 6), (8, 7), (8, 9), (9, 0), (10, 0), (10, 3), (11, 0), (12, 0), (12, 1)]


def error(major, minor, built):
    return _native._C.cuda_arch_error(major, minor, built)


@pytest.mark.parametrize("built, runs, fails", [
    (DEFAULT_LIKE, CAPABILITIES + [(13, 0)], [(7, 0), (6, 1)]),
    ("sm_90", [(9, 0)], [(8, 0), (8, 9), (10, 0), (12, 0)]),  # SASS: same major, minor >= its own
    ("sm_80", [(8, 0), (8, 6), (8, 7), (8, 9)], [(7, 5), (9, 0)]),
    ("compute_80", [(8, 0), (9, 0), (12, 1)], [(7, 5)]),  # PTX: the driver compiles it for newer GPUs
    ("sm_90a compute_90a", [(9, 0)], [(10, 0), (12, 0)]),  # 'a': that capability only
    ("sm_100f compute_100f", [(10, 0), (10, 3)], [(11, 0), (12, 0)]),  # 'f': that family
    ("sm_75;compute_120", [(7, 5), (12, 0)], [(8, 0), (10, 0)]),  # ';' separates too
    ("", [], [(9, 0)]),
])
def test_arch_rules(built, runs, fails):
    for cap in runs:
        assert error(*cap, built) == "", (built, cap)
    for cap in fails:
        assert error(*cap, built) != "", (built, cap)


def test_error_names_the_built_list_and_the_rebuild_command():
    msg = error(7, 0, "sm_80 sm_90 compute_90")
    assert "SASS sm_80 sm_90, PTX compute_90" in msg
    assert "compute capability 7.0" in msg
    assert "TORCH_CUDA_ARCH_LIST=7.0 pip install --no-build-isolation -e ." in msg
    assert "unreadable entry 'sm_9x'" in error(9, 0, "sm_9x")


def setup_archs(env_list):
    """The architectures setup.py has nvcc build for TORCH_CUDA_ARCH_LIST=env_list (None: unset),
    from its cuda_archs(), without building anything."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    if env_list is not None:
        env["TORCH_CUDA_ARCH_LIST"] = env_list
    code = "import runpy; print(runpy.run_path('setup.py', run_name='hdas_setup')['cuda_archs']())"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def test_default_build_covers_compute_capability_7_5_to_12_x():
    built = setup_archs(None)
    listed = [line.split("#")[0].strip() for line in (ROOT / "cuda_archs.txt").read_text().splitlines()]
    assert len(built.split()) == len([a for a in listed if a]) + sum(a.endswith("+PTX") for a in listed)
    for cap in CAPABILITIES:
        assert error(*cap, built) == "", (cap, built)
    assert error(7, 0, built) != ""  # CUDA 13.0 builds nothing older


def test_torch_cuda_arch_list_overrides_the_default():
    assert setup_archs("8.6") == "sm_86"
    assert setup_archs("8.0;9.0+PTX") == "sm_80 sm_90 compute_90"


def test_build_info_lists_the_architectures_built():
    info = hdas_ext.build_info()["cuda_archs"]
    assert info == _native.cuda_archs(_native._C.cuda_archs)
    assert all(re.fullmatch(r"sm_\d+[af]?", a) for a in info["sass"])
    assert all(re.fullmatch(r"compute_\d+[af]?", a) for a in info["ptx"])
    assert bool(info["sass"]) == hdas_ext.build_info()["with_cuda"]
    assert _native.cuda_archs("sm_75 sm_90 compute_90") == {"sass": ["sm_75", "sm_90"], "ptx": ["compute_90"]}


def cuobjdump():
    """CUDA's cuobjdump: the toolkit's, else the copy in triton's package (torch installs triton)."""
    found = shutil.which("cuobjdump") or shutil.which("cuobjdump", path=os.path.join(
        os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin"))
    if found is None:
        try:
            import triton

            bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
            found = str(bundled) if bundled.exists() else None
        except ImportError:
            pass
    return found


@pytest.mark.skipif(not hdas_ext.build_info().get("with_cuda"), reason="a CPU-only build holds no GPU code")
def test_the_library_holds_what_build_info_lists():
    tool = cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or triton) to read the library with")
    run = subprocess.run([tool, "--list-elf", "--list-ptx", _native._C.__file__], capture_output=True, text=True)
    images = re.findall(r"\.(sm_\d+[af]?)\.(cubin|ptx)", run.stdout)
    sass = sorted({a for a, kind in images if kind == "cubin"})
    ptx = sorted({a.replace("sm_", "compute_") for a, kind in images if kind == "ptx"})
    info = hdas_ext.build_info()["cuda_archs"]
    assert (sass, ptx) == (sorted(info["sass"]), sorted(info["ptx"])), run.stdout + run.stderr


@pytest.mark.cuda
def test_this_gpu_is_covered_and_a_build_without_it_is_refused():
    cap = torch.cuda.get_device_capability()
    assert error(*cap, _native._C.cuda_archs) == ""
    other = "sm_75" if cap[0] != 7 else "sm_90"
    assert f"TORCH_CUDA_ARCH_LIST={cap[0]}.{cap[1]} pip install" in error(*cap, other)
