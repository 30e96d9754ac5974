"""The fused modules running their convolution candidates through hdas::conv_candidates
(hdas_ext.nn.conv_fused): FusedMixedOp and the cell supernets against the eager modules, float64 to
1e-12 (outputs, every gradient, BatchNorm running statistics), and the op actually used."""
import pytest
import torch

import hdas_ext
from hdas_ext.nn import FusedMixedOp, FusedPartialMixedOp, conv_fused
from hdas_ext.primitives import DARTS_PRIMITIVES, HDAS_PRIMITIVES
from hdas_ext.reference import MixedOp, PartialMixedOp
from hdas_ext.supernets import DartsCellSearch, HcDasSearch

pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")


def close(a, b, rel=1e-12, floor=1e-300):
    """max |a - b| within rel times max |b|, plus an absolute floor for quantities that are zero
    up to rounding."""
    err, scale = (a - b).abs().max().item(), b.abs().max().item()
    assert err <= rel * scale + floor, f"max error {err:.3g} vs scale {scale:.3g}"


@pytest.fixture
def calls(monkeypatch):
    """Counts hdas::conv_candidates calls (the eager path's entry)."""
    seen = []
    real = conv_fused.conv_candidates_unchecked

    def counted(*a, **k):
        seen.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(conv_fused, "conv_candidates_unchecked", counted)
    return seen


def step(model, x, w, g):
    """Output and the gradients of x, w and every parameter for grad_output g."""
    out = model(x, w)
    wrt = [x, w, *model.parameters()]
    return [out, *torch.autograd.grad(out, wrt, g, allow_unused=True)]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("primitives", [DARTS_PRIMITIVES, HDAS_PRIMITIVES, ("sep_conv_7x7", "skip_connect",
                                                                             "dil_conv_3x3")])
def test_mixed_op_equals_eager(stride, affine, primitives, calls):
    torch.manual_seed(0)
    eager = MixedOp(6, stride, primitives, affine).double()
    fused = FusedMixedOp(6, stride, primitives, affine).double()
    fused.load_state_dict(eager.state_dict())
    assert fused._conv and fused.kernel_codes()[-1] == hdas_ext.ops.ADD
    for train in (True, True, False):  # running statistics over two training steps, then used in eval
        eager.train(train), fused.train(train)
        W = 7 if stride == 1 else 8  # FactorizedReduce (skip_connect at stride 2) needs even sizes
        x = torch.randn(3, 6, 8, W, dtype=torch.float64, requires_grad=True)
        w = torch.softmax(torch.randn(len(primitives), dtype=torch.float64), 0).requires_grad_()
        g = torch.randn(3, 6, (8 - 1) // stride + 1, (W - 1) // stride + 1, dtype=torch.float64)
        for a, b in zip(step(fused, x, w, g), step(eager, x, w, g)):
            close(a, b)
    for (k, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
        close(b.double(), a.double(), 1e-12 if a.is_floating_point() else 0)
    assert len(calls) == 3  # one call per forward


@pytest.mark.parametrize("k,stride", [(2, 1), (4, 2)])
def test_partial_mixed_op_equals_eager(k, stride, calls):
    torch.manual_seed(0)
    eager = PartialMixedOp(8, stride, k).double()
    fused = FusedPartialMixedOp(8, stride, k).double()
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(8, dtype=torch.float64), 0).requires_grad_()
    g = torch.randn(2, 8, 6 // stride, 6 // stride, dtype=torch.float64)
    for a, b in zip(step(fused, x, w, g), step(eager, x, w, g)):
        close(a, b)
    assert calls


def test_fuse_convs_false_runs_the_modules(calls):
    op = FusedMixedOp(4, 1, DARTS_PRIMITIVES, fuse_convs=False)
    assert not op._conv
    op(torch.randn(2, 4, 5, 5), torch.rand(8))
    assert not calls


TINY = dict(C=4, layers=5, steps=3, multiplier=2)


@pytest.mark.parametrize("cls,kw", [(DartsCellSearch, {}), (HcDasSearch, {}),
                                    (DartsCellSearch, dict(C=8, partial_channels=4, edge_normalization=True)),
                                    (DartsCellSearch, dict(edge_normalization=True)),
                                    (DartsCellSearch, dict(recompute=True))],
                         ids=["cells", "hc", "pc-darts", "edge-norm", "lean"])
def test_supernet_equals_eager(cls, kw, calls):
    """One hdas::conv_candidates call per state that edges read (the cell's two inputs and every
    node but the last): edges reading one state share it."""
    torch.manual_seed(0)
    args = dict(TINY, **kw)
    eager = cls(fused=False, **{k: v for k, v in args.items() if k != "recompute"}).double()
    fused = cls(fused=True, **args).double()
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    ye, yf = eager(x), fused(x)
    close(yf, ye)
    g = torch.randn_like(ye)
    wrt_e, wrt_f = list(eager.parameters()), list(fused.parameters())
    for a, b in zip(torch.autograd.grad(yf, wrt_f, g), torch.autograd.grad(ye, wrt_e, g)):
        close(a, b)
    for (k, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
        # pool BNs' running means of zero-mean states (2x2 planes, one window) are zero up to rounding
        close(b.double(), a.double(), 1e-12 if a.is_floating_point() else 0, 1e-15)
    assert len(calls) == TINY["layers"] * (2 + TINY["steps"] - 1)


@pytest.mark.parametrize("momentum", [None, 0.3])
def test_running_statistics_cumulative_and_eval(momentum, calls):
    """Running statistics as nn.BatchNorm2d updates them (cumulative average with momentum=None),
    then used in eval; num_batches_tracked counted."""
    torch.manual_seed(1)
    eager = MixedOp(5, 1, DARTS_PRIMITIVES, False).double()
    fused = FusedMixedOp(5, 1, DARTS_PRIMITIVES, False).double()
    for m in (*eager.modules(), *fused.modules()):
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = momentum
    fused.load_state_dict(eager.state_dict())
    for train in (True, True, True, False):
        eager.train(train), fused.train(train)
        x = torch.randn(2, 5, 6, 6, dtype=torch.float64, requires_grad=True)
        w = torch.softmax(torch.randn(8, dtype=torch.float64), 0).requires_grad_()
        g = torch.randn(2, 5, 6, 6, dtype=torch.float64)
        for a, b in zip(step(fused, x, w, g), step(eager, x, w, g)):
            close(a, b)
    for (k, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
        close(b.double(), a.double(), 1e-12 if a.is_floating_point() else 0)
    assert len(calls) == 4
