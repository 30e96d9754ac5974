"""fuse_mixed_ops through the state changes of a search: a fused MixedOp runs its fused forward only
for a call and a state its proof covered, and its own forward otherwise, so that the fused network
stays the user's network (float64, to 1e-9: outputs, every gradient, BN buffers) when the call,
the module's state, a global or the weights' zero pattern changes. Stand-ins in dropin_stateful.py."""
import copy
import warnings

import pytest
import torch

import dropin_standins as S
import dropin_stateful as D
from hdas_ext import fuse_mixed_ops
from hdas_ext.nn import FusedMixedOp

TOL = dict(rtol=1e-9, atol=1e-9)
P = 8


def network(mixed, **kw):
    torch.manual_seed(0)
    return S.SearchNetwork(mixed, layers=3, steps=2, multiplier=2, **kw).double()


def fused_twin(net, left_alone=0):
    fused = copy.deepcopy(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = fuse_mixed_ops(fused, report=True)
    assert len(report.fused) == 15 - left_alone and len(report.left_alone) == left_alone
    assert len(caught) == (left_alone > 0)
    return fused


def step(net, x, seed, weights=None):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_()
    out = net(x, weights)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    extra = [w for w in (weights or {}).values() if w.requires_grad]
    return out.detach(), torch.autograd.grad(out, [x, *net.parameters(), *extra], g, allow_unused=True)


def assert_same(fused, eager, seed, weights=None):
    """One training step of each, compared: output, every gradient (None where the user's gets
    None), every buffer after. No warning on the way."""
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out_f, grads_f = step(fused, x, seed, weights)
    out_e, grads_e = step(eager, x, seed, weights)
    torch.testing.assert_close(out_f, out_e, **TOL)
    names = ["x"] + [n for n, _ in eager.named_parameters()] + [f"weights {k}" for k in weights or {}]
    for n, a, b in zip(names, grads_f, grads_e):
        assert (a is None) == (b is None), f"gradient of {n}: {a is None} fused, {b is None} unfused"
        if a is not None:
            torch.testing.assert_close(a, b, msg=lambda m: f"gradient of {n}: {m}", **TOL)
    want = dict(eager.named_buffers())
    for n, v in fused.named_buffers():
        torch.testing.assert_close(v, want[n], msg=lambda m: f"buffer {n}: {m}", **TOL)


def test_extra_arguments_run_the_modules_own_forward(single_thread):
    """Progressive edge decisions call a decided edge as op(x, None, index)."""
    eager = network(D.ExtraArgMixedOp)
    for cell in eager.cells:
        cell.__class__ = D.DecidingCell
        cell.selected = [None] * len(cell._ops)
    fused = fused_twin(eager)
    assert_same(fused, eager, 0)
    for net in (eager, fused):
        for cell in net.cells:
            cell.selected[0], cell.selected[3] = 4, 0  # decided: sep_conv_3x3, and the zero op
    assert_same(fused, eager, 1)
    assert_same(fused, eager, 2)


def test_a_global_schedule_read_by_the_forward():
    """The auxiliary skip's rate, a module-level schedule's attribute read through a method, moves
    from 0 (when fused) to 0.5 and back."""
    D.set_rate(0.0)
    try:
        eager = network(D.AuxSkipMixedOp)
        # The reducing edges' aux skips hold parameters and a BN that run (zero gradients, running
        # statistics) at rate 0: their forward's sum is fused, the aux term runs as written.
        fused = fused_twin(eager)
        sums = [vars(m._ops).get("_hdas_mix") for m in fused.modules() if isinstance(m, D.AuxSkipMixedOp)
                and not isinstance(m, FusedMixedOp)]
        assert len(sums) == 8 and all(isinstance(e, FusedMixedOp) for e in sums)
        assert_same(fused, eager, 0)
        D.set_rate(0.5)
        assert_same(fused, eager, 1)
        for net in (eager, fused):
            for m in net.modules():
                if isinstance(m, D.AuxSkipMixedOp):
                    m.use_aux = False
        assert_same(fused, eager, 2)
        D.set_rate(0.0)
        assert_same(fused, eager, 3)
    finally:
        D.set_rate(0.0)


@pytest.mark.parametrize("mixed", [D.MaskedMixedOp, D.MaskSkipMixedOp])
def test_a_mask_buffer_changed_in_place_or_replaced(mixed, single_thread):
    eager = network(mixed)
    fused = fused_twin(eager)
    assert_same(fused, eager, 0)
    for net in (eager, fused):
        for m in net.modules():
            if isinstance(m, mixed):
                m.mask[2] = 0.0
    assert_same(fused, eager, 1)
    for net in (eager, fused):
        for m in net.modules():
            if isinstance(m, mixed):
                m.mask = torch.ones(P, dtype=torch.float64)
    assert_same(fused, eager, 2)  # the mask of the proof again: fused again
    ops = [m for m in fused.modules() if isinstance(m, mixed)]
    assert all(m._guard.admit(m, (torch.randn(2, m._guard.channels, 4, 4, dtype=torch.float64),
                                  torch.rand(P, dtype=torch.float64)), {}) is not False for m in ops)


def weights_like(net, fill):
    return {kind: fill(torch.softmax(getattr(net, "alphas_" + kind).detach().clone(), -1)).requires_grad_()
            for kind in ("normal", "reduce")}


def hard(w):
    """Straight-through one-hot weights, as hard Gumbel-softmax gives them: exact zeros but one."""
    index = w.argmax(-1, keepdim=True)
    one_hot = torch.zeros_like(w).scatter_(-1, index, 1.0)
    return one_hot - w.detach() + w


def zeros(w):
    w = w.clone()
    w[:, ::2] = 0.0   # several zeros
    w[1] = 0.0        # a whole edge at zero: the user's forward returns 0
    w[2] = torch.tensor([0, 0, 0, 0.6, 0, 0, 0, 0])
    return w


@pytest.mark.parametrize("mixed", [D.FewNonZeroMixedOp, D.SkipZeroMixedOp, D.ContinueZeroMixedOp,
                                   D.PositiveOnlyMixedOp])
def test_forwards_that_branch_on_the_weights(mixed, single_thread):
    """Ops skipped for zero (or non-positive) weights are not run: their BatchNorms see no batch,
    their parameters get no gradient, as in the user's forward."""
    eager = network(mixed)
    fused = fused_twin(eager)
    assert_same(fused, eager, 0)
    for seed, fill in enumerate((hard, zeros, hard, lambda w: w), 1):
        assert_same(fused, eager, seed, weights_like(eager, fill))
    edge = next(m for m in fused.modules() if isinstance(m, mixed))
    x = torch.randn(2, edge._guard.channels, 4, 4, dtype=torch.float64)
    assert edge._guard.admit(edge, (x, torch.zeros(P, dtype=torch.float64)), {}) is False  # the user's 0
    w = torch.zeros(P, dtype=torch.float64)
    w[3] = 1.0
    assert edge._guard.admit(edge, (x, w), {}) == (3,)  # fused, one op run


def test_a_forward_that_does_more_than_the_sum_has_its_sum_fused(single_thread):
    """The module itself is not a MixedOp (it sets .calls); the sum in its own forward is fused,
    the rest of it runs as written."""
    eager = network(D.CountingMixedOp)
    fused = fused_twin(eager)
    assert all("_hdas_mix" in vars(m._ops) for m in fused.modules() if isinstance(m, D.CountingMixedOp))
    assert_same(fused, eager, 0)
    assert_same(fused, eager, 1, weights_like(eager, lambda w: -w))  # another input, negative weights
    calls = lambda net: [m.calls for m in net.modules() if isinstance(m, D.CountingMixedOp)]  # noqa: E731
    assert calls(fused) == calls(eager) and min(calls(fused)) > 0


@pytest.mark.parametrize("mixed, reason", [
    (D.ThresholdMixedOp, "chooses its ops by the weights' values"),
])
def test_forwards_it_cannot_follow_are_left_alone(mixed, reason, single_thread):
    net = torch.nn.ModuleList([mixed(4, 1), mixed(4, 2)]).double()
    with pytest.warns(UserWarning, match="left 2 MixedOp-like"):
        report = fuse_mixed_ops(net, report=True)
    assert report.fused == [] and all(reason in e.detail for e in report.left_alone)
    assert all(type(m) is mixed for m in net)


def test_a_refusal_is_proven_once_per_structure(monkeypatch, single_thread):
    import hdas_ext.dropin.inspection as inspection
    calls = []
    prove = inspection.prove
    monkeypatch.setattr(inspection, "prove", lambda *a: calls.append(1) or prove(*a))
    net = network(D.ThresholdMixedOp)
    with pytest.warns(UserWarning, match="15 x its forward"):
        fuse_mixed_ops(net)
    assert len(calls) == 5  # one per distinct structure: (C, stride) = (8, 1), (16, 2), (16, 1), (32, 2), (32, 1)


def test_copies_and_pickles_keep_their_guards(tmp_path, single_thread):
    D.set_rate(0.0)
    try:
        eager = network(D.AuxSkipMixedOp)
        fused = fused_twin(eager)
        torch.save(fused, tmp_path / "m.pt")
        start = copy.deepcopy(eager)  # each twin is compared with the user's network as it was
        for twin in (copy.deepcopy(fused), torch.load(tmp_path / "m.pt", weights_only=False)):
            eager = copy.deepcopy(start)
            ops = [m for m in twin.modules() if isinstance(m, FusedMixedOp)]
            x = torch.randn(2, ops[0]._guard.channels, 4, 4, dtype=torch.float64)
            w = torch.rand(P, dtype=torch.float64)
            assert ops[0]._guard.admit(ops[0], (x, w), {}) is None
            D.set_rate(0.5)
            assert ops[0]._guard.admit(ops[0], (x, w), {}) is False
            assert_same(twin, eager, 0)
            D.set_rate(0.0)
    finally:
        D.set_rate(0.0)
