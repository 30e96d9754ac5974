"""hdas::pair_concat and WeightedPairConcat against their eager twins (hdas_ext.ops.reference.pair_concat,
hdas_ext.reference.WeightedPairConcat)."""
import re

import pytest
import torch

import hdas_ext
from hdas_ext import ops
from hdas_ext.nn import WeightedPairConcat
from hdas_ext.reference import WeightedPairConcat as EagerPairConcat


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
def test_pair_concat_on_cuda():
    states, wp, pairs = pair_case()
    states = [s.detach().cuda().requires_grad_() for s in states]
    wp = wp.detach().cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: ops.pair_concat(list(a[:-1]), a[-1], pairs), states + [wp])
    flat = [v for p in pairs for v in p]
    g = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="grad_out must be on cuda"):
        torch.ops.hdas.pair_concat_backward(g, [s.detach() for s in states], wp.detach(), flat)
