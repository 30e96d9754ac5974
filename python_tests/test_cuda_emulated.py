"""The CUDA backend (launchers and kernels, the shipped source) checked against the CPU op and the
reference: on the CUDA emulator everywhere (marker cuda_emulated; `python csrc/emu/build.py` builds it,
without it these skip, and HDAS_REQUIRE_EMU=1, set by .ci/run, turns that skip into a failure), and
on a real GPU when there is one (marker cuda)."""
import itertools
import os

import pytest
import torch

import hdas_ext
from device_compare import (ADD, AVG, CUDA, EMU, EMU_LIB, EXTRA, MAX, NONE, SKIP, backend, check_mixed_node,
                            check_pair_concat, emu_knobs, mixed_node_case, pair_concat_case)

pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
BACKENDS = [EMU, CUDA]
ALL_SUBSETS = [list(s) for r in range(1, 5) for s in itertools.combinations([NONE, MAX, AVG, SKIP], r)]
MODES = ["batch", "running", "no_bn"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Odd, tiny and one-row planes (1x4, 2x2: 1x2 and 1x1 at stride 2), non-square ones, up to 12 planes.
SHAPES = [(2, 3, 8, 8), (2, 2, 7, 5), (1, 2, 1, 4), (4, 3, 2, 2), (3, 2, 5, 9)]


@pytest.mark.parametrize("name", [EMU])
def test_emulator_runs_the_requested_mode(name):
    """The emulated backend runs the build and modes the environment asks for (csrc/emu/cuda_emu.h):
    HDAS_EMU_LIB's build (checked or plain), HDAS_EMU_SEED, HDAS_EMU_BLOCKS, HDAS_EMU_BARRIER."""
    mode = torch.ops.hdas_emu.emulator_mode()
    assert mode.startswith("checked build" if EMU_LIB.parent.name == "checked" else "plain build"), mode
    seed = os.environ.get("HDAS_EMU_SEED", "")
    assert (f"interleaved with seed {int(seed)}," if seed else "threads in order,") in mode, mode
    assert f" {int(os.environ.get('HDAS_EMU_BLOCKS', '2'))} block(s) at once," in mode, mode
    assert mode.endswith("relaxed barriers" if os.environ.get("HDAS_EMU_BARRIER") == "relaxed" else "strict barriers")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("E", [1, 3])
def test_every_primitive_subset(name, mode, E):
    for i, prims in enumerate(ALL_SUBSETS):
        case = mixed_node_case(E, prims, (2, 3, 5, 4), mode=mode, seed=i)
        check_mixed_node(name, case, f"prims={prims}")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("mode", MODES)
def test_strides_shapes_layouts_dtypes(name, dtype, channels_last, mode):
    for stride, shape in itertools.product((1, 2), SHAPES):
        prims = [NONE, MAX, ADD, AVG, EXTRA, EXTRA] + ([SKIP] if stride == 1 else [])
        case = mixed_node_case(2, prims, shape, stride, mode, channels_last, dtype, seed=sum(shape) + stride)
        check_mixed_node(name, case, f"stride={stride} shape={shape}")
    # Partial channels (one input): the mix on the first C/groups channels, written into output
    # channels i*groups; the others passed (max-pooled 2x2 at stride 2).
    for stride, groups, shape in ((1, 3, (2, 6, 5, 3)), (2, 2, (2, 4, 6, 4))):
        prims = [NONE, MAX, ADD, AVG, EXTRA] + ([SKIP] if stride == 1 else [])
        case = mixed_node_case(1, prims, shape, stride, mode, channels_last, dtype, seed=groups, groups=groups)
        check_mixed_node(name, case, f"groups={groups} stride={stride} shape={shape}")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("E", [2, 4, 7])
def test_several_inputs(name, E):
    prims = [MAX, EXTRA, AVG, SKIP, ADD, NONE]
    for mode in MODES:
        check_mixed_node(name, mixed_node_case(E, prims, (2, 3, 6, 5), mode=mode, seed=E), f"E={E} {mode}")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("mode", ["batch", "running"])
def test_more_inputs_primitives_extras_than_one_launch_argument_holds(name, mode):
    """20 inputs, 18 primitives (codes repeated), 80 extras: beyond the fixed tables the CUDA
    backend once passed by value (16, 16, 64)."""
    prims = [MAX, EXTRA, AVG, ADD, SKIP, NONE] * 2 + [MAX, AVG, EXTRA, ADD, MAX, NONE]
    check_mixed_node(name, mixed_node_case(20, prims, (1, 2, 3, 4), mode=mode, seed=20), f"{mode}")


@pytest.mark.parametrize("name", BACKENDS)
def test_max_pool_ties_and_non_finite_values(name):
    """Ties (post-ReLU zeros) route the max-pool gradient where the CPU op sends it; NaN and inf
    reach the output as in the CPU op."""
    for stride, shape in itertools.product((1, 2), [(2, 2, 6, 6), (2, 3, 2, 7)]):
        case = mixed_node_case(1, [MAX, AVG], shape, stride, mode="no_bn", seed=stride)
        case.xs = [x.relu().round() for x in case.xs]
        check_mixed_node(name, case, f"ties stride={stride} shape={shape}")
    case = mixed_node_case(1, [NONE, MAX, AVG, SKIP], (2, 2, 5, 5), mode="no_bn")
    case.xs[0][0, 0, 2, 2] = float("nan")
    case.xs[0][1, 1, 0, 0] = float("inf")
    ops, device = backend(name)
    out = ops.mixed_node(*case.args(device), 1e-5)[0].cpu()
    expect = torch.ops.hdas.mixed_node(*case.args("cpu"), 1e-5)[0]
    torch.testing.assert_close(out, expect, equal_nan=True)


PAIR_CASES = [
    (1, [(0, 0)], (2, 3, 4, 4)),
    (5, [(1, 2), (2, 3), (0, 4)], (2, 3, 4, 5)),
    (6, [(0, 3), (3, 0), (2, 2), (1, 3)], (1, 1, 1, 4)),  # states 4 and 5 unused: zero gradients
    (4, [(3, 1)], (3, 2, 2, 2)),
    (4, [(0, 1), (2, 3), (1, 2)], (2, 8, 12, 12)),  # 2304 elements: three blocks
    (40, [(k, k + 1) for k in range(0, 39, 3)] + [(39, 0)], (1, 2, 3, 3)),  # 27 of 40 states referenced
    # More referenced states than a block's group of 32 (kPairGroup): the group loop and its barriers
    # run two and three times, the last group partial.
    (40, [(k, k + 1) for k in range(0, 40, 2)] + [(39, 0), (5, 33)], (1, 2, 3, 3)),
    (70, [(k, 69 - k) for k in range(35)] + [(69, 0), (40, 40), (33, 66)], (2, 3, 2, 3)),
]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_pair_concat(name, dtype, channels_last):
    for i, (T, pairs, shape) in enumerate(PAIR_CASES):
        case = pair_concat_case(T, pairs, shape, dtype, channels_last, seed=i)
        check_pair_concat(name, case, f"T={T} pairs={pairs}")


def test_pair_cases_reference_more_states_than_a_group():
    """The cases above that are meant to run pair_concat's group loop several times do."""
    referenced = [len({i for p in pairs for i in p}) for _, pairs, _ in PAIR_CASES]
    assert sorted(referenced)[-2:] == [40, 70], referenced


# The launchers' paths that small tensors do not reach by themselves, forced by the emulated build's
# knobs: int64 index math, tables in device memory, reductions in chunks of 1, 2 or 3 positions.
KNOBS = [dict(index64=True), dict(device_tables=True), dict(chunk_positions=1), dict(chunk_positions=3),
         dict(index64=True, device_tables=True, chunk_positions=2)]


@pytest.mark.parametrize("knobs", KNOBS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", [EMU])
def test_forced_paths(name, knobs, channels_last):
    with emu_knobs(name, **knobs):
        for stride, shape in itertools.product((1, 2), [(2, 3, 7, 5), (3, 33, 2, 2)]):
            prims = [NONE, MAX, ADD, AVG, EXTRA] + ([SKIP] if stride == 1 else [])
            for mode in MODES:
                case = mixed_node_case(2, prims, shape, stride, mode, channels_last, seed=stride)
                check_mixed_node(name, case, f"{knobs} stride={stride} shape={shape} {mode}")
        case = mixed_node_case(1, [MAX, AVG, SKIP, NONE], (2, 6, 5, 3), 1, "batch", channels_last, seed=3, groups=3)
        check_mixed_node(name, case, f"{knobs} groups=3")
        for i, (T, pairs, shape) in enumerate(PAIR_CASES):
            case = pair_concat_case(T, pairs, shape, torch.float64, channels_last, seed=i)
            check_pair_concat(name, case, f"{knobs} T={T} pairs={pairs}")
