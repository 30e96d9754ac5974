"""FusedPartialMixedOp (PC-DARTS' partial-channel MixedOp) against its eager twin
hdas_ext.reference.PartialMixedOp and against a stand-in written from PC-DARTS' description."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dropin_standins as S
import hdas_ext
from hdas_ext.nn import FusedMixedOp, FusedPartialMixedOp
from hdas_ext.primitives import DARTS_PRIMITIVES, STAGE_PRIMITIVES
from hdas_ext.reference import PartialMixedOp

DT = torch.float64


def twins(C, stride, k, primitives=DARTS_PRIMITIVES):
    eager = PartialMixedOp(C, stride, k, primitives).to(DT)
    fused = FusedPartialMixedOp(C, stride, k, primitives).to(DT)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def step(op, x, w, g):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = op(x, w)
    grads = torch.autograd.grad(out, [x, w, *op.parameters()], g)
    return out.detach(), grads


def assert_same_step(fused, eager, x, w):
    N, C, H, W = x.shape
    s = fused.stride
    g = torch.randn(N, C, (H - 1) // s + 1, (W - 1) // s + 1, dtype=DT)
    out_e, grads_e = step(eager, x, w, g)
    out_f, grads_f = step(fused, x, w, g)
    torch.testing.assert_close(out_f, out_e)
    for a, b in zip(grads_f, grads_e):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("primitives", [DARTS_PRIMITIVES, STAGE_PRIMITIVES])
def test_same_function_state_and_running_stats(k, stride, primitives):
    eager, fused = twins(8, stride, k, primitives)
    assert list(fused.state_dict()) == list(eager.state_dict())
    for _ in range(2):  # each call moves the BN buffers: both twins alike
        assert_same_step(fused, eager, torch.randn(3, 8, 6, 6, dtype=DT),
                         torch.softmax(torch.randn(len(primitives), dtype=DT), 0))
    for (name, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(b, a, msg=name)
    eager.eval()
    fused.eval()
    assert_same_step(fused, eager, torch.randn(2, 8, 6, 6, dtype=DT), torch.rand(len(primitives), dtype=DT))


@pytest.mark.parametrize("k,stride", [(2, 1), (4, 2)])
def test_matches_pc_darts_layout_both_ways(k, stride):
    """The stand-in written from PC-DARTS' description: same keys, same function, channels_last too."""
    standin = S.PartialMixedOp(16, stride, k).to(DT)
    fused = FusedPartialMixedOp(16, stride, k).to(DT)
    assert list(fused.state_dict()) == list(standin.state_dict())
    fused.load_state_dict(standin.state_dict())
    x = torch.randn(2, 16, 8, 8, dtype=DT).to(memory_format=torch.channels_last)
    assert_same_step(fused, standin, x, torch.softmax(torch.randn(8, dtype=DT), 0))
    standin.load_state_dict(fused.state_dict())


def test_k1_is_the_plain_fused_mixed_op():
    fused = FusedPartialMixedOp(8, 2, 1).to(DT)
    plain = FusedMixedOp(8, 2).to(DT)
    plain.load_state_dict(fused.state_dict(), strict=True)
    x, w = torch.randn(2, 8, 6, 6, dtype=DT), torch.rand(8, dtype=DT)
    torch.testing.assert_close(fused(x, w), plain(x, w))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"C \(10\) must be divisible by k = 4"):
        FusedPartialMixedOp(10, 1, 4)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        FusedPartialMixedOp(8, 1, 0)
    op = FusedPartialMixedOp(8, 2, 4)
    with pytest.raises(ValueError, match=r"k > 1 at stride 2 needs an even height and width .* got 7x8"):
        op(torch.randn(2, 8, 7, 8), torch.rand(8))
    with pytest.raises(ValueError, match=r"x.s channels \(10\) must be divisible by k = 4"):
        FusedPartialMixedOp(8, 1, 4, ("skip_connect", "none"))(torch.randn(2, 10, 4, 4), torch.rand(2))
    with pytest.raises(ValueError, match=r"weights must have one entry per primitive, shape \[8\]"):
        op(torch.randn(2, 8, 8, 8), torch.rand(7))


class _Calls(TorchDispatchMode):
    """Records every op below autograd: name and its groups argument (hdas::mixed_node*) or
    the dimensions of the tensors it joins (cat, stack)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name.startswith("hdas::mixed_node"):
            self.calls.append((name, args[-1]))
        elif name in ("aten::cat", "aten::stack"):
            self.calls.append((name, {t.dim() for t in args[0]}))
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
@pytest.mark.parametrize("adopted", [False, True], ids=["built", "adopted"])
def test_one_op_call_with_groups_no_concatenation_or_shuffle(adopted):
    """Built or adopted by fuse_mixed_ops from PC-DARTS' layout, the partial op is one call of
    hdas::mixed_node with groups = k forward and one of its backward: no cat or stack of feature
    maps (skip_connect is left out: at stride 2 it is FactorizedReduce, which concatenates its two
    convs' outputs; the folded weights' unbind has a stack of 0-d gradients in its backward)."""
    primitives = ("none", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "dil_conv_5x5")
    if adopted:
        op = torch.nn.ModuleList([S.PartialMixedOp(16, 2, 4, primitives).to(DT)])
        hdas_ext.fuse_mixed_ops(op)
        op = op[0]
        assert isinstance(op, FusedPartialMixedOp)
    else:
        op = FusedPartialMixedOp(16, 2, 4, primitives).to(DT)
    x = torch.randn(2, 16, 8, 8, dtype=DT, requires_grad=True)
    w = torch.softmax(torch.randn(5, dtype=DT), 0).requires_grad_()
    with _Calls() as mode:
        op(x, w).sum().backward()
    hdas = [c for c in mode.calls if c[0].startswith("hdas::")]
    assert hdas == [("hdas::mixed_node", 4), ("hdas::mixed_node_backward", 4)]
    joins = [c for c in mode.calls if c[0] in ("aten::cat", "aten::stack")]
    assert all(dims == {0} for _, dims in joins), joins
