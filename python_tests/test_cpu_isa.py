"""The CPU kernels are built per instruction set (csrc/cpu/mixed_node_kernel.h) and chosen at run
time; this process runs one set, so the other runs the op tests in a child process."""
import os
import subprocess
import sys

import pytest

import hdas_ext

pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")


def _isa(env):
    code = "import hdas_ext; print(hdas_ext.build_info()['cpu_isa'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_baseline_kernels_pass_the_op_tests():
    """HDAS_CPU_ISA=base forces the baseline kernels; the mixed_node op tests (reference, gradcheck,
    opcheck) pass on them too. Where this process already runs the baseline (no AVX2), this is the
    same set, and the check is that the switch keeps it."""
    env = dict(os.environ, HDAS_CPU_ISA="base")
    assert _isa(env) == "base"
    assert hdas_ext.build_info()["cpu_isa"] in ("base", "avx2")
    here = os.path.dirname(__file__)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          os.path.join(here, "test_mixed_node_op.py"), "-k", "not cuda"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
