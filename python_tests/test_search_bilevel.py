"""The bi-level optimiser: first-order architecture gradients are taken at the live weights (not
a stale copy), and the second-order gradient matches a float64 finite difference of the unrolled
objective L_val(w - xi (momentum buf + grad_w L_train(w, alpha) + wd w), alpha)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from hdas_ext.search.bilevel import BilevelOptimizer
from hdas_ext.supernets import DistributionSearch, HsDasSearch

pytestmark = pytest.mark.usefixtures("single_thread")


def batch(n=4, size=8, dtype=torch.float32):
    return torch.randn(n, 3, size, size, dtype=dtype), torch.randint(0, 10, (n,))


def optimiser(model, order, lr=0.025, **kw):
    w_opt = torch.optim.SGD(model.weights(), lr, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    return BilevelOptimizer(model, w_opt, a_opt, order=order, **kw), w_opt


def test_first_order_gradient_is_taken_at_the_live_weights():
    torch.manual_seed(0)
    model = HsDasSearch(C=4, cells_per_stage=2, fused=False)
    stale = copy.deepcopy(model)  # what the released code differentiated
    opt, _ = optimiser(model, order=1, lr=0.1)
    for _ in range(3):
        opt.step([batch()], [batch()], lr=0.1)
    xv, yv = batch()
    grads, _, _ = opt.arch_gradients([batch()], [(xv, yv)], lr=0.1)
    expected = torch.autograd.grad(F.cross_entropy(model(xv), yv), model.alphas())
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)
    # the test can fail: the gradient at the initial weights/alphas is a different vector
    at_init = torch.autograd.grad(F.cross_entropy(stale(xv), yv), stale.alphas())
    diff = sum((g - s).norm() ** 2 for g, s in zip(grads, at_init)) ** 0.5
    assert diff > 1e-3 * sum(g.norm() ** 2 for g in grads) ** 0.5


def test_first_order_gradient_averages_chunks():
    torch.manual_seed(0)
    model = HsDasSearch(C=4, cells_per_stage=2, fused=False)
    opt, _ = optimiser(model, order=1)
    chunks = [batch(), batch()]
    grads, _, _ = opt.arch_gradients(None, chunks, lr=0.1)
    per = [torch.autograd.grad(F.cross_entropy(model(x), y), model.alphas()) for x, y in chunks]
    for g, a, b in zip(grads, *per):
        torch.testing.assert_close(g, (a + b) / 2, rtol=1e-5, atol=1e-7)


def unrolled_objective(model, w_opt, xi, train, val):
    """L_val at the virtual step, computed directly (float64 reference)."""
    net = model.net
    names = [n for n, _ in net.named_parameters()]
    weights = list(net.parameters())
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    aw = model.arch_weights()
    state = dict(zip(names, weights), **buffers)
    loss = F.cross_entropy(functional_call(net, state, (train[0], *aw)), train[1])
    g = torch.autograd.grad(loss, weights)
    group = w_opt.param_groups[0]
    virtual = {}
    for n, w, gw in zip(names, weights, g):
        buf = w_opt.state[w]["momentum_buffer"]
        virtual[n] = w - xi * (group["momentum"] * buf + gw + group["weight_decay"] * w)
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    return F.cross_entropy(functional_call(net, dict(virtual, **buffers), (val[0], *aw)), val[1])


def shifted(model, alphas, v, h, fn):
    with torch.no_grad():
        for a, d in zip(alphas, v):
            a += h * d
    try:
        return fn().item()
    finally:
        with torch.no_grad():
            for a, d in zip(alphas, v):
                a -= h * d


@pytest.mark.parametrize("cls,kw", [(HsDasSearch, dict(cells_per_stage=2)),
                                    (DistributionSearch, dict(n_max=2, n_min=1))])
def test_second_order_gradient_matches_finite_difference(cls, kw):
    """The ReLU/max-pool network makes grad_alpha L_train piecewise smooth in w: DARTS' radius
    (eps * ||dw'|| = 0.01) smooths over many kinks, so the check uses a radius of 1e-6 (float64;
    much smaller ones drown in round-off), where the finite-difference Hessian-vector product must agree with the
    exact derivative of the unrolled objective, itself checked by central differences in alpha."""
    torch.manual_seed(0)
    model = cls(C=4, window=2, fused=False, **kw).double()
    xi = 0.1  # large, so the implicit (Hessian) term is a sizeable part of the gradient
    opt, w_opt = optimiser(model, order=2, lr=xi, fd_radius=1e-6)
    opt.weight_step([batch(dtype=torch.float64)])  # creates momentum buffers
    train, val = batch(dtype=torch.float64), batch(dtype=torch.float64)
    grads, _, _ = opt.arch_gradients([train], [val], lr=xi)
    alphas = model.alphas()
    d_alpha = torch.autograd.grad(  # the first-order part alone, at the virtual weights
        unrolled_objective(model, w_opt, xi, train, val), alphas, allow_unused=True)
    h = 1e-8
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = [torch.randn(a.shape, generator=gen, dtype=a.dtype) for a in alphas]
        f_plus = shifted(model, alphas, v, h, lambda: unrolled_objective(model, w_opt, xi, train, val))
        f_minus = shifted(model, alphas, v, -h, lambda: unrolled_objective(model, w_opt, xi, train, val))
        fd = (f_plus - f_minus) / (2 * h)
        got = sum((g * d).sum() for g, d in zip(grads, v)).item()
        partial = sum((g * d).sum() for g, d in zip(d_alpha, v) if g is not None).item()
        assert got == pytest.approx(fd, rel=1e-2, abs=1e-6)
        # the implicit term matters here, so a wrong scaling of it would fail the check above
        assert abs(partial - fd) > 20 * abs(got - fd)


def test_second_order_runs_a_full_step_at_darts_radius():
    torch.manual_seed(0)
    model = HsDasSearch(C=4, cells_per_stage=2, fused=False)
    opt, _ = optimiser(model, order=2)
    before = [a.detach().clone() for a in model.alphas()]
    stats, _, _ = opt.step([batch()], [batch()], lr=0.025)
    assert all(torch.isfinite(a).all() for a in model.alphas())
    assert any(not torch.equal(a, b) for a, b in zip(model.alphas(), before))
    assert stats["train_loss"] > 0 and stats["val_loss"] > 0


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_step(dtype, fused):
    """The autocast / loss-scaling path (CUDA in practice; CPU autocast exercises the same code),
    with the eager and the fused mixed ops."""
    torch.manual_seed(0)
    model = HsDasSearch(C=4, cells_per_stage=2, fused=fused)
    scalers = {}
    if dtype == torch.float16:
        scalers = dict(w_scaler=torch.amp.GradScaler("cpu", init_scale=256.0),
                       a_scaler=torch.amp.GradScaler("cpu", init_scale=256.0))
    opt, _ = optimiser(model, order=1, amp_dtype=dtype, delta=1.0, **scalers)
    before = [a.detach().clone() for a in model.alphas()]
    for _ in range(2):
        stats, _, _ = opt.step([batch()], [batch()], lr=0.025)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(model.alphas(), before))
    assert stats["train_loss"] > 0 and "depth_loss" in stats
