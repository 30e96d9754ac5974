"""Without the compiled library, `import hdas_ext` works and the fused modules run the eager
reference (hdas_ext.ops.reference): their tests, which compare them with the eager modules, pass
in a child process that cannot load hdas_ext._C."""
import os
import subprocess
import sys

_CHILD = "import sys; sys.modules['hdas_ext._C'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"
_FILES = ("test_fused_mixed_op.py", "test_stage_node.py", "test_pair_concat_op.py", "test_supernets_fused.py",
          "test_partial_mixed_op.py")


def test_fused_modules_pass_their_tests_on_the_reference():
    here = os.path.dirname(__file__)
    code = "import sys; sys.modules['hdas_ext._C'] = None; import hdas_ext; print(hdas_ext.native_available())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    run = subprocess.run([sys.executable, "-c", _CHILD, "-q", "-x", "-p", "no:cacheprovider",
                          *(os.path.join(here, f) for f in _FILES)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
