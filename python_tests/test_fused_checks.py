"""What the fused modules accept: channels, dtypes and devices of x and the weights checked before any
op runs (a named error), weights of another floating dtype cast as `w * op(x)` casts them, a model
converted to half precision whose architecture weights stay float32 run fused as eagerly; and what
TorchScript cannot do with them, said in our words."""
import copy
import warnings

import pytest
import torch
from torch import nn

import dropin_standins as S
from hdas_ext import fuse_mixed_ops
from hdas_ext.nn import FusedMixedOp, FusedPartialMixedOp, FusedWindowedCellInput, fused_edge_sum
from hdas_ext.reference import MixedOp


def convs_run(module):
    """A list that records every convolution or BatchNorm run inside module."""
    ran = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
            m.register_forward_pre_hook(lambda *_: ran.append(1))
    return ran


def test_channels_dtypes_and_devices_are_checked_before_any_op_runs():
    op = FusedMixedOp(16, 1)
    ran = convs_run(op)
    with pytest.raises(ValueError, match=r"FusedMixedOp: x must have 16 channels, got 15"):
        op(torch.randn(2, 15, 8, 8), torch.rand(8))
    with pytest.raises(TypeError, match=r"FusedMixedOp: weights must be a floating-point tensor, got torch.int64"):
        op(torch.randn(2, 16, 8, 8), torch.ones(8, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x is torch.float64, the module's parameters and buffers torch.float32"):
        op(torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.rand(8))
    with pytest.raises(TypeError, match=r"weights must be a tensor, got list"):
        op(torch.randn(2, 16, 8, 8), [0.1] * 8)
    partial = FusedPartialMixedOp(16, 1, 4)
    with pytest.raises(ValueError, match=r"x must have 16 channels \(the ops take 4, times k = 4\), got 12"):
        partial(torch.randn(2, 12, 8, 8), torch.rand(8))
    node = FusedWindowedCellInput(4, 2)  # the 4-primitive op: parameter-free, pool BNs in float32
    with pytest.raises(TypeError, match=r"inputs\[0\] is torch.float64, the module's parameters and buffers"):
        node([torch.randn(2, 4, 6, 6, dtype=torch.float64)] * 2, torch.rand(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"inputs\[1\] must have 4 channels, got 3"):
        fused_edge_sum([op, FusedMixedOp(4, 1)], [torch.randn(2, 16, 8, 8), torch.randn(2, 3, 8, 8)], torch.rand(2, 8))
    assert ran == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_weights_of_another_dtype_are_cast_as_eager_casts_them(dtype):
    """w * op(x) with a 0-d weight computes in x's dtype: so does the fused op."""
    torch.manual_seed(0)
    eager = MixedOp(4, 1)
    fused = FusedMixedOp(4, 1)
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(2, 4, 6, 6)
    w = torch.softmax(torch.randn(8, dtype=dtype), 0).requires_grad_()
    out = fused(x, w)
    want = eager(x, w)
    assert out.dtype == want.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=2e-2 if dtype != torch.float64 else 1e-5, atol=1e-2)
    g, = torch.autograd.grad(out.sum(), w)
    assert g.dtype == dtype


class PlainAlphas(S.SearchNetwork):
    """Keeps its alphas as plain tensors, as DARTS does (not registered: model.half() leaves them)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        for kind in ("normal", "reduce"):
            alpha = getattr(self, "alphas_" + kind).detach().clone().requires_grad_()
            del self._parameters["alphas_" + kind]
            setattr(self, "alphas_" + kind, alpha)


def test_a_bfloat16_model_with_float32_alphas_runs_fused(single_thread):
    torch.manual_seed(0)
    eager = PlainAlphas(S.MixedOp, layers=3, steps=2, multiplier=2).to(torch.bfloat16)
    assert eager.alphas_normal.dtype == torch.float32
    fused = copy.deepcopy(eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fuse_mixed_ops(fused) == 15
    x = torch.randn(4, 3, 8, 8, dtype=torch.bfloat16)
    ran = [0]
    for m in fused.modules():
        if isinstance(m, FusedMixedOp):
            m.register_forward_hook(lambda mod, args, out: ran.__setitem__(0, ran[0] + (args[1].dtype == torch.float32)))
    out, want = fused(x), eager(x)
    assert ran[0] == 15 and out.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want.float(), rtol=5e-2, atol=5e-2)


def test_torchscript_says_what_it_cannot_do():
    with pytest.raises(TypeError, match="torch.jit.script: FusedMixedOp cannot be scripted"):
        torch.jit.script(nn.Sequential(FusedMixedOp(4, 1)))
    with pytest.raises(RuntimeError, match="torch.jit.trace: FusedMixedOp cannot be traced"):
        torch.jit.trace(FusedMixedOp(4, 1), (torch.randn(2, 4, 6, 6), torch.rand(8)))
    net = nn.ModuleList([S.MixedOp(4, 1)])
    eager = copy.deepcopy(net[0])
    assert fuse_mixed_ops(net) == 1
    with pytest.raises(TypeError, match=r"torch.jit.script: FusedMixedOp\[MixedOp\] was fused in place"):
        torch.jit.script(net)
    x, w = torch.randn(2, 4, 6, 6), torch.softmax(torch.randn(8), 0)
    net.eval()
    eager.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(net[0], (x, w))  # records the module's own forward
    torch.testing.assert_close(traced(x, w), eager(x, w))
