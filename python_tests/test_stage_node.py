"""FusedWindowedCellInput and WeightedPairConcat against their eager twins in hdas_ext.reference."""
import itertools
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hdas_ext
from hdas_ext import ops
from hdas_ext.nn import FusedWindowedCellInput, WeightedPairConcat
from hdas_ext.primitives import STAGE_PRIMITIVES
from hdas_ext.reference import WindowedCellInput
from hdas_ext.reference import WeightedPairConcat as EagerPairConcat

SUBSETS = [list(s) for r in range(1, 5) for s in itertools.permutations(STAGE_PRIMITIVES, r)][::3]


def twins(C, m, primitives, pool_bn=True):
    eager = WindowedCellInput(C, m, primitives, pool_bn).double()
    fused = FusedWindowedCellInput(C, m, primitives, pool_bn).double()
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def step(eager, fused, shape, m, P, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(shape, dtype=torch.float64).contiguous(memory_format=fmt) for _ in range(m)]
    w = torch.softmax(torch.randn(m, P, dtype=torch.float64), -1)
    xe = [x.clone().requires_grad_() for x in xs]
    xf = [x.clone().requires_grad_() for x in xs]
    we, wf = w.clone().requires_grad_(), w.clone().requires_grad_()
    oe, of = eager(xe, we), fused(xf, wf)
    torch.testing.assert_close(of, oe)
    g = torch.randn_like(oe)
    torch.testing.assert_close(torch.autograd.grad(of, xf + [wf], g), torch.autograd.grad(oe, xe + [we], g))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("train", [True, False])
def test_node_matches_eager_every_subset(m, train):
    for prims in SUBSETS if m <= 3 else SUBSETS[::4]:
        eager, fused = twins(3, m, prims)
        eager.train(train)
        fused.train(train)
        for _ in range(2):
            step(eager, fused, (2, 3, 6, 6), m, len(prims))
        for (k, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
            torch.testing.assert_close(b, a, msg=k)


@pytest.mark.parametrize("channels_last", [False, True])
def test_node_formats_and_state_dict_layout(channels_last):
    eager, fused = twins(4, 3, STAGE_PRIMITIVES)
    assert list(fused.state_dict()) == list(eager.state_dict())
    assert "edges.2._ops.0.1.running_mean" in fused.state_dict()
    step(eager, fused, (2, 4, 7, 7), 3, 4, channels_last)


@settings(max_examples=15, deadline=None)
@given(N=st.integers(1, 3), C=st.integers(1, 5), H=st.integers(1, 9), W=st.integers(1, 9), m=st.integers(1, 4),
       pool_bn=st.booleans())
def test_node_property_shapes(N, C, H, W, m, pool_bn):
    if pool_bn and N * H * W == 1:
        return  # BatchNorm needs more than one value per channel in training
    eager, fused = twins(C, m, STAGE_PRIMITIVES, pool_bn)
    step(eager, fused, (N, C, H, W), m, 4)


def test_node_errors():
    node = FusedWindowedCellInput(3, 2)
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match=r"expected 2 inputs"):
        node([x], torch.rand(2, 4))
    with pytest.raises(ValueError, match=re.escape("weights must have shape [num_inputs, num_primitives] = [2, 4]")):
        node([x, x], torch.rand(2, 3))
    with pytest.raises(ValueError, match="must have the shape of inputs"):
        node([x, torch.randn(2, 3, 4, 5)], torch.rand(2, 4))
    with pytest.raises(ValueError, match="non-empty list"):
        ops.mixed_node([], torch.rand(0, 4), [1, 2, 3, 0])


def test_old_names_are_aliases():
    """Published code uses the names of 0.1.0."""
    import hdas_ext.nn
    import hdas_ext.reference
    from hdas_ext.supernets import module_class
    assert hdas_ext.nn.FusedStageNode is FusedWindowedCellInput
    assert hdas_ext.reference.StageNode is WindowedCellInput
    assert hdas_ext.nn.fused_node is hdas_ext.nn.fused_edge_sum
    assert module_class("StageNode", True) is FusedWindowedCellInput
    assert module_class("StageNode", False) is WindowedCellInput


def pair_case(T=5, K=3, shape=(2, 3, 4, 4), dtype=torch.float64):
    states = [torch.randn(shape, dtype=dtype, requires_grad=True) for _ in range(T)]
    w = torch.softmax(torch.randn(K, dtype=dtype), 0).requires_grad_()
    pairs = [(k + 1, k + 2) for k in range(K)]
    return states, w, pairs


def test_pair_concat_matches_eager():
    states, w, pairs = pair_case(T=8, K=5)
    out = WeightedPairConcat()(states, w, pairs)
    expect = EagerPairConcat()(states, w, pairs)
    torch.testing.assert_close(out, expect)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, states + [w], g)
    want = torch.autograd.grad(expect, states + [w], g, allow_unused=True)
    for a, b in zip(got, want):  # states no pair uses get a zero gradient
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)


def test_pair_concat_arbitrary_pairs_gradcheck_opcheck():
    states, w, _ = pair_case(T=4, K=4, shape=(2, 2, 3, 3))
    pairs = [(0, 3), (3, 0), (2, 2), (1, 3)]
    assert torch.autograd.gradcheck(lambda *a: ops.pair_concat(list(a[:-1]), a[-1], pairs), states + [w])
    if hdas_ext.native_available():
        flat = [v for p in pairs for v in p]
        torch.library.opcheck(torch.ops.hdas.pair_concat.default, (states, w, flat))
        torch.library.opcheck(torch.ops.hdas.pair_concat_backward.default,
                              (torch.randn(2, 4, 3, 3, dtype=torch.float64), [s.detach() for s in states], w.detach(), flat))


def test_pair_concat_errors():
    states, w, pairs = pair_case()
    with pytest.raises(ValueError, match="index 7 is out of range for 5 states"):
        ops.pair_concat(states, w, [(1, 2), (3, 7), (0, 1)])
    with pytest.raises(ValueError, match=re.escape("weights must have shape [num_pairs] = [2]")):
        ops.pair_concat(states, w, [(1, 2), (3, 4)])
    with pytest.raises(ValueError, match="non-empty"):
        ops.pair_concat([], w, pairs)
    if hdas_ext.native_available():
        with pytest.raises(ValueError, match="index 7 is out of range"):
            torch.ops.hdas.pair_concat(states, w, [1, 2, 3, 7, 0, 1])
        # A transposed grad_out has the right number of elements per plane, not the right shape.
        states, w, _ = pair_case(T=3, K=1, shape=(2, 3, 4, 5))
        with pytest.raises(ValueError, match=re.escape("grad_out must have shape [N, 2C, H, W] = [2, 6, 4, 5]")):
            torch.ops.hdas.pair_concat_backward(torch.randn(2, 6, 5, 4, dtype=torch.float64),
                                                [s.detach() for s in states], w.detach(), [0, 2])


@pytest.mark.cuda
def test_stage_ops_on_cuda():
    eager, fused = twins(3, 3, STAGE_PRIMITIVES)
    eager, fused = eager.cuda(), fused.cuda()
    xs = [torch.randn(2, 3, 6, 6, dtype=torch.float64, device="cuda") for _ in range(3)]
    w = torch.rand(3, 4, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(fused(xs, w), eager(xs, w))
    states, wp, pairs = pair_case()
    states = [s.detach().cuda().requires_grad_() for s in states]
    wp = wp.detach().cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: ops.pair_concat(list(a[:-1]), a[-1], pairs), states + [wp])
    flat = [v for p in pairs for v in p]
    g = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="grad_out must be on cuda"):
        torch.ops.hdas.pair_concat_backward(g, [s.detach() for s in states], wp.detach(), flat)
