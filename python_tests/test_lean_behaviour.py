"""The lean mode (recompute=True) by behaviour: op modules of any class names recomputed from what
their forwards compute (torch.fx), all-parameter-free mixed ops, ops with random output replayed
or refused with a reason, partial channels proven in the lean path they run in; float64, against
the module's own forward."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dropin_standins as S
from hdas_ext import fuse_mixed_ops
from hdas_ext.dropin import probe
from hdas_ext.dropin.inspection import NOT_LEAN
from hdas_ext.lean import NotLeanable, check_leanable, lean_apply
from hdas_ext.nn import FusedMixedOp
from test_dropin import EDGES, assert_same, assert_same_state, build, mixed_ops

pytestmark = pytest.mark.usefixtures("single_thread")
PARAMETER_FREE = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")


def lean_copy(eager):
    lean = copy.deepcopy(eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything is fused: no warning
        report = fuse_mixed_ops(lean, recompute=True, report=True)
    return lean, report


def assert_lean_is_eager(lean, eager):
    for seed in range(2):  # running statistics move alike over training steps
        assert_same(lean, eager, torch.randn(4, 3, 8, 8, dtype=torch.float64), seed)
    assert_same_state(lean, eager)
    lean.eval(), eager.eval()
    assert_same(lean, eager, torch.randn(4, 3, 8, 8, dtype=torch.float64), 5)


@pytest.mark.parametrize("name", ["darts", "two_halves_sep_conv", "skip_then_dropout", "partial_k2"])
def test_lean_fuses_ops_of_any_class_names(name):
    """two_halves_sep_conv: SepConv as two halves in `.net`, the stride-2 skip as two convs in a
    ModuleList (no DARTS class or attribute name); skip_then_dropout: an op with random output
    (replayed); partial_k2: partial channels, lean too."""
    eager = build(name)
    lean, report = lean_copy(eager)
    assert len(report.fused) == EDGES and report.left_alone == []
    assert all(op.recompute for op in mixed_ops(lean))
    assert_lean_is_eager(lean, eager)


def test_lean_parameter_free_mixed_ops():
    """Edges whose ops the kernel computes alone (pools, skip, zero): no op for the lean path."""
    torch.manual_seed(0)
    eager = S.SearchNetwork(lambda C, stride: S.MixedOp(C, stride, PARAMETER_FREE), layers=3, steps=2,
                            multiplier=2, num_ops=4).double()
    lean, report = lean_copy(eager)
    assert len(report.fused) == EDGES and report.left_alone == []
    assert_lean_is_eager(lean, eager)
    op = FusedMixedOp(4, 1, PARAMETER_FREE[:3], recompute=True).double()
    default = FusedMixedOp(4, 1, PARAMETER_FREE[:3]).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(3, dtype=torch.float64), 0)
    torch.testing.assert_close(op(x, w), default(x, w), rtol=1e-12, atol=1e-12)
    assert lean_apply([], []) == []


def test_partial_channels_proven_in_the_path_installed(monkeypatch):
    """Every fused copy the proof checks runs the mode the installed module runs."""
    seen = []
    verify = probe._verify

    def spy(module, fused, *args):
        seen.append((fused.k if fused._partial else 1, fused.recompute))
        return verify(module, fused, *args)
    monkeypatch.setattr(probe, "_verify", spy)
    eager = build("partial_k2")
    lean, _ = lean_copy(eager)
    assert seen and set(seen) == {(2, True)}
    assert all(op.recompute and op.k == 2 for op in mixed_ops(lean))


class NoisyConv(nn.Module):
    """Random output from a tensor function, not a Dropout module: replayed in the backward."""

    def __init__(self, C):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(C, affine=False)

    def forward(self, x):
        keep = torch.bernoulli(torch.full_like(x[:, :1], 0.7))
        return self.norm(self.conv(F.relu(x))) * keep


class Branchy(nn.Module):
    """Chooses its computation by a tensor's value: nothing to trace."""

    def __init__(self, C):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.mean() > 0 else x


class InPlaceNoise(Branchy):
    def forward(self, x):
        return self.conv(x).mul_(2.0)


class OwnNorm(Branchy):
    def forward(self, x):
        return F.batch_norm(self.conv(x), None, None, training=True)


def test_random_output_replayed():
    torch.manual_seed(0)
    plain = NoisyConv(4).double()
    lean = copy.deepcopy(plain)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    results = []
    for run in (lambda: plain(x), lambda: lean_apply([lean], [x])[0]):
        x.grad = None
        torch.manual_seed(3)
        y = run()
        torch.rand(5)  # the random state moves on before the backward
        y.square().sum().backward()
        results.append((y.detach(), x.grad.clone()))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-12)
    assert not torch.equal(results[0][0], plain(x))  # the output is random indeed
    for (a, p), (b, q) in zip(plain.named_parameters(), lean.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12, msg=a)


@pytest.mark.parametrize("module, reason", [(Branchy, "cannot be traced"), (InPlaceNoise, "in place"),
                                            (OwnNorm, "outside a torch.nn BatchNorm")])
def test_what_lean_cannot_recompute_is_refused_with_a_reason(module, reason):
    with pytest.raises(NotLeanable, match=reason):
        check_leanable(module(4), "op")
    with pytest.raises(NotLeanable, match=reason):
        lean_apply([module(4)], [torch.randn(2, 4, 6, 6)])


def test_fuse_mixed_ops_says_why_an_op_is_not_lean():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self._ops = nn.ModuleList([S.Identity(), InPlaceNoise(4)])

        def forward(self, x, weights):
            return sum(w * op(x) for w, op in zip(weights, self._ops))
    net = nn.Sequential(nn.Conv2d(3, 4, 1))
    net.mixed = Mixed()
    with pytest.warns(UserWarning, match="in place"):
        report = fuse_mixed_ops(net.double(), recompute=True, report=True)
    assert report.fused == [] and [e.path for e in report.left_alone] == ["mixed"]
    assert report.left_alone[0].reason == NOT_LEAN and "in place" in report.left_alone[0].detail


def test_other_torch_modules_recomputed():
    """A torch module the program does not keep as a step (Conv1d, GELU) runs through its functions."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.GELU(), nn.BatchNorm1d(4)).double()
    lean = copy.deepcopy(plain)
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    grads = []
    for run in (lambda: plain(x), lambda: lean_apply([lean], [x])[0]):
        x.grad = None
        run().square().sum().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)
    assert_same_state(lean, plain)
    for (a, p), (b, q) in zip(plain.named_parameters(), lean.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12, msg=a)
