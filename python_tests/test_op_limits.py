"""What the native ops accept, the same on every backend: the four kernel dtypes only (float8 is a
floating type the kernels are not built for), and any number of inputs, primitives, extras and
states (the CUDA backend passes its tables through device memory: no fixed capacity)."""
import re

import pytest
import torch

import hdas_ext
from device_compare import (ADD, AVG, EMU, EXTRA, MAX, NONE, SKIP, mixed_node_case, pair_concat_case,
                            reference_mixed_node, reference_pair_concat, run_mixed_node, run_pair_concat)

pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
BACKENDS = ["cpu", EMU]
FLOAT8 = [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)]


def namespace(name):
    return torch.ops.hdas if name == "cpu" else torch.ops.hdas_emu


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT8, ids=str)
def test_float8_is_refused_up_front(name, dtype):
    ns = namespace(name)
    states = [torch.randn(2, 3, 4, 4).to(dtype) for _ in range(3)]
    expect = re.escape("states must be float32, float64, float16 or bfloat16, got Float8")
    with pytest.raises(TypeError, match=expect):
        ns.pair_concat(states, torch.rand(1), [0, 2])
    with pytest.raises(TypeError, match=expect):
        ns.pair_concat_backward(torch.randn(2, 6, 4, 4), states, torch.rand(1), [0, 2])
    with pytest.raises(TypeError, match="weights must be float32, float64, float16 or bfloat16"):
        ns.pair_concat([torch.randn(2, 3, 4, 4)], torch.rand(1).to(dtype), [0, 0])
    with pytest.raises(TypeError, match="inputs must be float32, float64, float16 or bfloat16"):
        ns.mixed_node([torch.randn(2, 3, 4, 4).to(dtype)], torch.rand(1, 1), [MAX], [], 1, True, True, None, None,
                      1e-5)


def test_cpu_op_has_no_input_primitive_or_extra_limit():
    """20 inputs, 18 primitives, 80 extras against the reference (the emulated and CUDA backends
    run such cases in test_cuda_emulated.py)."""
    prims = [MAX, EXTRA, AVG, ADD, SKIP, NONE] * 3
    case = mixed_node_case(20, prims, (1, 2, 3, 4), mode="batch", seed=3)
    got, want = run_mixed_node(torch.ops.hdas, "cpu", case), reference_mixed_node(case)
    torch.testing.assert_close(got["out"], want["out"])
    torch.testing.assert_close(got["grad_inputs"], want["grad_inputs"])
    torch.testing.assert_close(got["grad_extras"], want["grad_extras"])
    torch.testing.assert_close(got["grad_w"], want["grad_w"])


@pytest.mark.parametrize("name", BACKENDS)
def test_pair_concat_has_no_state_limit(name):
    case = pair_concat_case(70, [(k, 69 - k) for k in range(0, 70, 4)], (1, 2, 2, 3), seed=7)
    got, want = run_pair_concat(namespace(name), "cpu", case), reference_pair_concat(case)
    torch.testing.assert_close(got["out"], want["out"])
    torch.testing.assert_close(got["grad_states"], want["grad_states"])
    torch.testing.assert_close(got["grad_w"], want["grad_w"])

