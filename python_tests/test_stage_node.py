"""FusedWindowedCellInput against its eager twin in hdas_ext.reference."""
import itertools
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hdas_ext import ops
from hdas_ext.nn import FusedWindowedCellInput
from hdas_ext.primitives import STAGE_PRIMITIVES
from hdas_ext.reference import WindowedCellInput

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


@pytest.mark.cuda
def test_node_on_cuda():
    eager, fused = twins(3, 3, STAGE_PRIMITIVES)
    eager, fused = eager.cuda(), fused.cuda()
    xs = [torch.randn(2, 3, 6, 6, dtype=torch.float64, device="cuda") for _ in range(3)]
    w = torch.rand(3, 4, dtype=torch.float64, device="cuda")
    torch.testing.assert_close(fused(xs, w), eager(xs, w))
