"""Fused supernets (hdas_ext.nn.FusedMixedOp / FusedWindowedCellInput / WeightedPairConcat) against their
eager twins (fused=False, the hdas_ext.reference modules): same state-dict keys, outputs,
gradients, BN statistics and one full search step, within float32 tolerance. Gradient errors
are judged against a float64 eager reference: the fused error must stay within a small multiple
of eager float32's own error (the extension guide's criterion)."""
import pytest
import torch

from hdas_ext.search.bilevel import BilevelOptimizer
from hdas_ext.supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "cells": (DartsCellSearch, dict(C=4, layers=5, steps=2, multiplier=2)),
    "hc": (HcDasSearch, dict(C=4, layers=5, steps=2, multiplier=2)),
    "hs": (HsDasSearch, dict(C=4, cells_per_stage=3)),
    "distribution": (DistributionSearch, dict(C=4, n_max=3, n_min=2)),
    # PC-DARTS: partial channels, and its edge normalisation
    "cells_pc": (DartsCellSearch, dict(C=8, layers=5, steps=2, multiplier=2, partial_channels=4, edge_normalization=True)),
    "hc_pc": (HcDasSearch, dict(C=4, layers=5, steps=2, multiplier=2, partial_channels=2)),
    "cells_edge_norm": (DartsCellSearch, dict(C=4, layers=5, steps=2, multiplier=2, edge_normalization=True)),
}


def twins(space, dtype=torch.float32, device="cpu"):
    cls, kw = TINY[space]
    torch.manual_seed(0)
    eager = cls(fused=False, **kw).to(device, dtype)
    fused = cls(fused=True, **kw).to(device, dtype)
    assert list(fused.state_dict()) == list(eager.state_dict())
    kinds = {type(m).__name__ for m in fused.modules()}
    assert kinds & {"FusedMixedOp", "FusedPartialMixedOp", "FusedWindowedCellInput"}, "fused=True built no fused module"
    assert not kinds & {"MixedOp", "PartialMixedOp", "WindowedCellInput"}, "fused=True fell back to a reference module"
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def grads_of(model, x):
    model.zero_grad(set_to_none=True)
    y = model(x)
    (y.square().sum() + y[:, 0].sum()).backward()
    return y.detach(), torch.cat([p.grad.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("space", list(TINY))
def test_fused_equals_eager_float64(space):
    """In float64 no rounding flips a ReLU or max-pool decision, so the two must agree tightly."""
    eager, fused = twins(space, torch.float64)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ye, ge = grads_of(eager, x)
    yf, gf = grads_of(fused, x)
    torch.testing.assert_close(yf, ye, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gf, ge, rtol=1e-9, atol=1e-9 * ge.abs().max().item())
    se, sf = eager.state_dict(), fused.state_dict()
    for k in se:  # BatchNorm running statistics (pool BNs included) are updated alike
        torch.testing.assert_close(sf[k], se[k], rtol=1e-9, atol=1e-12, msg=k)
    eager.eval(), fused.eval()  # and used alike in eval mode
    with torch.no_grad():
        torch.testing.assert_close(fused(x), eager(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("space", list(TINY))
def test_fused_equals_eager_float32(space):
    """float32 against a float64 eager reference: the fused outputs' error within 3x eager's own
    (the extension guide's criterion). Gradients of these tiny BN-heavy nets amplify rounding,
    and a rounding can flip a max-pool/ReLU decision, so they get a loose whole-vector bound;
    the float64 test above is the tight one."""
    eager, fused = twins(space)
    reference = TINY[space][0](fused=False, **TINY[space][1]).double()
    reference.load_state_dict(eager.state_dict())
    x = torch.randn(4, 3, 8, 8)
    ye, ge = grads_of(eager, x)
    yf, gf = grads_of(fused, x)
    yr, gr = grads_of(reference, x.double())
    err_e, err_f = (ye.double() - yr).norm(), (yf.double() - yr).norm()
    assert err_f <= 3 * err_e + 1e-7 * yr.norm(), f"fused output error {err_f:.3g}, eager {err_e:.3g}"
    assert (gf.double() - gr).norm() <= 1e-2 * gr.norm()
    se, sf = eager.state_dict(), fused.state_dict()
    for k in se:
        torch.testing.assert_close(sf[k], se[k], rtol=1e-4, atol=1e-5, msg=k)


def on_cuda(*args):
    return pytest.param(*args, "cuda", marks=pytest.mark.cuda)


@pytest.mark.parametrize("space,order,device", [("cells", 1, "cpu"), ("hc", 1, "cpu"), ("hs", 1, "cpu"), ("hs", 2, "cpu"),
                                                ("distribution", 1, "cpu"), ("distribution", 2, "cpu"),
                                                ("cells_pc", 1, "cpu"), ("cells_pc", 2, "cpu"),
                                                on_cuda("hc", 1), on_cuda("hs", 2), on_cuda("distribution", 1)])
def test_fused_search_step_equals_eager(space, order, device):
    """Two full search steps (architecture step with the auxiliary losses, weight step), float64."""
    eager, fused = twins(space, torch.float64, device)
    stage = space in ("hs", "distribution")
    opts = []
    for m in (eager, fused):
        w = torch.optim.SGD(m.weights(), 0.05, momentum=0.9, weight_decay=3e-4)
        a = torch.optim.Adam(m.alphas(), 3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
        opts.append(BilevelOptimizer(m, w, a, order=order, delta=1.0 if stage else 0.0,
                                     gamma=0.4 if space == "distribution" else 0.0))
    gen = torch.Generator().manual_seed(1)
    batch = lambda: (torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64).to(device),
                     torch.randint(0, 10, (4,), generator=gen).to(device))
    for _ in range(2):
        train, val = [batch()], [batch()]
        (se, *_), (sf, *_) = (o.step(train, val, lr=0.05) for o in opts)
        assert sf["train_loss"] == pytest.approx(se["train_loss"], rel=1e-9)
        assert sf["val_loss"] == pytest.approx(se["val_loss"], rel=1e-9)
    for (n, pe), pf in zip(eager.named_parameters(), fused.parameters()):
        torch.testing.assert_close(pf, pe, rtol=1e-7, atol=1e-9, msg=n)
    assert fused.genotype() == eager.genotype()


@pytest.mark.cuda
@pytest.mark.parametrize("space", ["hc", "distribution"])
def test_fused_autocast_bf16_on_cuda(space):
    """Under CUDA autocast (the search's --amp bf16) the fused supernet runs its kernels on the
    dtypes autocast hands it and stays within bf16 rounding of its eager twin."""
    eager, fused = twins(space, torch.float32, "cuda")
    x = torch.randn(4, 3, 8, 8, device="cuda")
    outs = []
    for m in (eager, fused):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = m(x)
        y.float().square().sum().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
        outs.append(y.float())
    torch.testing.assert_close(outs[1], outs[0], rtol=5e-2, atol=5e-2)
