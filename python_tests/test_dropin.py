"""fuse_mixed_ops on stand-ins of DARTS-family search networks (dropin_standins.py): what it fuses,
and that the fused network computes what the user's own code computes, forward, backward and
running statistics."""
import copy
import io
import threading
import warnings

import pytest
import torch

import dropin_standins as S
import dropin_stateful as D
from hdas_ext import fuse_mixed_ops
from hdas_ext.nn import FusedMixedOp, FusedPartialMixedOp

SUBSETS = ([1, 0, 1, 1, 0, 1, 0, 0], [0, 1, 0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0, 1, 1])
CASES = {
    "darts": dict(mixed=S.MixedOp),
    "two_halves_sep_conv": dict(mixed=S.HalvesMixedOp),
    "other_name_subsets": dict(mixed=S.SubsetMixedOp, num_ops=4,
                               edge_kwargs=lambda i, j: {"switches": SUBSETS[(i + j) % 3]}),
    "skip_then_dropout": dict(mixed=S.SubsetMixedOp, edge_kwargs=lambda i, j: {"p": 0.3}),
    "bare_pools": dict(mixed=S.BarePoolMixedOp),
    "partial_k2": dict(mixed=S.PartialMixedOp, C=8, edge_kwargs=lambda i, j: {"k": 2}),
    "partial_k4_edge_norm": dict(mixed=S.PartialMixedOp, C=16, edge_norm=True),
    "sigmoid_weights": dict(mixed=S.MixedOp, weight_fn="sigmoid"),
}
EDGES = 3 * 5  # 3 cells (normal, reduce, reduce) of 2 nodes: 2 + 3 edges each


def build(name, dtype=torch.float64):
    torch.manual_seed(0)
    kw = dict(CASES[name])
    return S.SearchNetwork(kw.pop("mixed"), layers=3, steps=2, multiplier=2, **kw).to(dtype)


def fused_copy(net):
    fused = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything is fused: no warning
        report = fuse_mixed_ops(fused, report=True)
    return fused, report


def mixed_ops(net):
    return [c._ops[e] for c in net.cells for e in range(len(c._ops))]


def step(net, x, seed, weights=None):
    """Output, input gradient and every parameter's gradient of one training step, RNG seeded."""
    torch.manual_seed(seed)
    x = x.clone().requires_grad_()
    out = net(x, weights)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    extra = list(weights.values()) if weights else []
    grads = torch.autograd.grad(out, [x, *net.parameters(), *extra], g, allow_unused=True)
    return out.detach(), grads


def assert_same(fused, eager, x, seed, weights=None, **tol):
    out_f, grads_f = step(fused, x, seed, weights)
    out_e, grads_e = step(eager, x, seed, weights)
    torch.testing.assert_close(out_f, out_e, **tol)
    names = ["x"] + [n for n, _ in eager.named_parameters()] + list(weights or [])
    assert len(grads_f) == len(names)
    for n, a, b in zip(names, grads_f, grads_e):
        assert (a is None) == (b is None), n
        if a is not None:
            torch.testing.assert_close(a, b, msg=lambda m: f"gradient of {n}: {m}", **tol)


def assert_same_state(fused, eager):
    want = eager.state_dict()
    got = fused.state_dict()
    assert list(got) == list(want)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("name", list(CASES))
def test_fused_network_is_the_users_network(name, single_thread):
    eager = build(name)
    fused, report = fused_copy(eager)
    k = CASES[name].get("edge_kwargs", lambda i, j: {})(0, 0).get("k", 4 if "partial" in name else 1)
    assert len(report.fused) == EDGES and report.left_alone == []
    assert {r.k for r in report.fused} == {k}
    assert sorted(r.path for r in report.fused) == sorted(f"cells.{c}._ops.{e}" for c in range(3) for e in range(5))
    for op, own in zip(mixed_ops(fused), mixed_ops(eager)):
        assert isinstance(op, FusedPartialMixedOp if k > 1 else FusedMixedOp) and isinstance(op, type(own))
    assert_same_state(fused, eager)  # fusing changes no key and no value
    for seed in range(2):  # running statistics move alike over training steps
        assert_same(fused, eager, torch.randn(4, 3, 8, 8, dtype=torch.float64), seed)
    assert_same_state(fused, eager)
    fused.eval()
    eager.eval()
    assert_same(fused, eager, torch.randn(4, 3, 8, 8, dtype=torch.float64), 5)


@pytest.mark.parametrize("name", ["darts", "two_halves_sep_conv", "partial_k2"])
def test_their_convolution_candidates_run_in_one_fused_call(name, single_thread):
    fused, _ = fused_copy(build(name))  # equal to theirs: test_fused_network_is_the_users_network
    for op in mixed_ops(fused):  # sep_conv 3x3, 5x5, dil_conv 3x3, 5x5 recognised by what they compute
        assert sorted(kind for _, kind in op._conv) == [0, 1, 2, 3]


def test_exactly_zero_weights_give_the_users_sum(single_thread):
    eager = build("darts")
    fused, _ = fused_copy(eager)
    w = {kind: torch.softmax(torch.randn(5, 8, dtype=torch.float64), -1) for kind in ("normal", "reduce")}
    for kind in w:
        w[kind][:, ::2] = 0.0  # pruned ops: their outputs count zero, their BNs still see batches
        w[kind][1] = torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0])
        w[kind].requires_grad_()
    for seed in range(2):
        assert_same(fused, eager, torch.randn(4, 3, 8, 8, dtype=torch.float64), seed, weights=w)
    assert_same_state(fused, eager)


@pytest.mark.parametrize("name", list(CASES))
def test_float32_within_eagers_own_error(name, single_thread):
    truth = build(name)
    eager = build(name, torch.float32)
    fused, _ = fused_copy(eager)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    out_t, grads_t = step(truth, x, 0)
    out_e, grads_e = step(eager, x.float(), 0)
    out_f, grads_f = step(fused, x.float(), 0)
    for what, t, e, f in [("output", out_t, out_e, out_f)] + [(f"grad {i}", *z) for i, z in enumerate(zip(grads_t, grads_e, grads_f))]:
        err_e, err_f = (e.double() - t).abs().max().item(), (f.double() - t).abs().max().item()
        assert err_f <= 2 * err_e + 1e-6 * t.abs().max().item() + 1e-12, f"{what}: fused {err_f:.3g}, eager {err_e:.3g}"


def test_float32_of_a_partial_channel_network_of_the_published_shape(single_thread):
    """PC-DARTS' search network shape (8 cells, 4 nodes, k = 4, edge normalisation, batch 8): every
    gradient of the fused float32 network within twice eager float32's own error, both against the
    float64 truth."""
    torch.manual_seed(0)
    truth = S.SearchNetwork(S.PartialMixedOp, C=8, layers=8, steps=4, multiplier=4, edge_norm=True).double()
    eager = copy.deepcopy(truth).float()
    fused, report = fused_copy(eager)
    assert len(report.fused) == 8 * 14 and {r.k for r in report.fused} == {4}
    x = torch.randn(8, 3, 16, 16, dtype=torch.float64)
    out_t, grads_t = step(truth, x, 0)
    out_e, grads_e = step(eager, x.float(), 0)
    out_f, grads_f = step(fused, x.float(), 0)
    names = ["output", "x"] + [n for n, _ in truth.named_parameters()]
    for name, t, e, f in zip(names, [out_t, *grads_t], [out_e, *grads_e], [out_f, *grads_f]):
        err_e, err_f = (e.double() - t).abs().max().item(), (f.double() - t).abs().max().item()
        assert err_f <= 2 * err_e + 1e-6 * t.abs().max().item() + 1e-12, f"{name}: fused {err_f:.3g}, eager {err_e:.3g}"


def test_dropout_rate_set_by_the_users_own_method(single_thread):
    """A progressive search lowers the skip-connection dropout through its MixedOp's own method:
    the fused module keeps the method and its attribute, and stays equal in training mode."""
    eager = build("skip_then_dropout")
    fused, _ = fused_copy(eager)
    for net in (eager, fused):
        for op in mixed_ops(net):
            op.p = 0.6
            op.update_p()
    assert {m.p for m in fused.modules() if isinstance(m, torch.nn.Dropout)} == {0.6}
    assert_same(fused, eager, torch.randn(4, 3, 8, 8, dtype=torch.float64), 3)


def test_what_is_left_alone_is_said_once(single_thread):
    net = torch.nn.ModuleDict({"threshold": S.SearchNetwork(D.ThresholdMixedOp, layers=3, steps=2, multiplier=2),
                               "mean": S.SearchNetwork(S.MeanMixedOp, layers=3, steps=2, multiplier=2),
                               "darts": S.SearchNetwork(S.MixedOp, layers=3, steps=2, multiplier=2)}).double()
    before = copy.deepcopy(net.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = fuse_mixed_ops(net, report=True)
    assert len(caught) == 1
    text = str(caught[0].message)
    # MeanMixedOp is no MixedOp (it divides the sum): the sum in its forward is fused instead.
    assert "fused 30 MixedOp(s); left 15 MixedOp-like module(s)" in text
    assert "15 x its forward is not sum_k weights[k] * ops[k](x)" in text
    assert "(e.g. threshold.cells.0._ops.0 (ThresholdMixedOp): its forward chooses its ops by the weights' values" in text
    assert len(report.fused) == 30 and report.reasons() == {report.left_alone[0].reason: 15}
    assert {e.kind for e in report.left_alone} == {"ThresholdMixedOp"}
    assert {e.kind for e in report.fused} == {"MixedOp", "ModuleList mixed by MeanMixedOp.forward"}
    assert all(type(m) is D.ThresholdMixedOp for n, m in net.named_modules() if n.startswith("threshold.")
               and n.count(".") == 3 and "_ops." in n)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unrelated_models_are_left_alone_silently():
    torchvision = pytest.importorskip("torchvision")  # the GPU machine's image may lack it
    model = torchvision.models.resnet18(num_classes=10)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = fuse_mixed_ops(model, report=True)
    assert report.fused == [] and report.left_alone == []
    assert fuse_mixed_ops(torch.nn.ModuleList([torch.nn.Linear(2, 2)])) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fused_model_copies_pickles_and_keeps_its_hooks(single_thread):
    eager = build("partial_k2")
    fused, _ = fused_copy(eager)
    buffer = io.BytesIO()
    torch.save(fused, buffer)  # the whole model, fused classes and all
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    calls = []
    mixed_ops(fused)[0].register_forward_hook(lambda *_: calls.append(1))
    clone = copy.deepcopy(fused)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for net in (loaded, clone):
        assert type(mixed_ops(net)[0]) is type(mixed_ops(fused)[0])
        assert_same(net, eager, x, 0)
    assert len(calls) == 1  # the hook, copied with the module, fired in the copy's forward
    fused(x)
    assert len(calls) == 2
    assert fuse_mixed_ops(fused) == 0  # already fused


class RaisingMixedOp(S.MixedOp):
    def forward(self, x, weights):
        raise RuntimeError("not today")


class LockedMixedOp(S.MixedOp):
    """Holds something deepcopy refuses."""

    def __init__(self, C, stride):
        super().__init__(C, stride)
        self.lock = threading.Lock()


class CodesMixedOp(S.MixedOp):
    """Its own attribute under a name the fused op uses."""

    def __init__(self, C, stride):
        super().__init__(C, stride)
        self.codes = "mine"


def test_never_a_crash_whatever_the_model_holds(single_thread):
    model = torch.nn.ModuleDict({"ok": S.MixedOp(4, 1), "raises": RaisingMixedOp(4, 1), "locked": LockedMixedOp(4, 1),
                                 "codes": CodesMixedOp(4, 2), "tuple_ops": TupleOps()}).double()
    with torch.device("meta"):
        model["meta"] = S.MixedOp(4, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = fuse_mixed_ops(model, report=True)
    assert [f.path for f in report.fused] == ["ok"] and len(caught) == 1
    reasons = {e.path: e.reason for e in report.left_alone}
    assert reasons == {"raises": "its forward is not sum_k weights[k] * ops[k](x), nor that on partial channels",
                       "locked": "it cannot be deep-copied for the probe",
                       "codes": "it has an attribute of its own that the fused op would overwrite",
                       "meta": "its tensors are on the meta device (nothing to run the probe on)"}
    assert model["codes"].codes == "mine" and type(model["codes"]) is CodesMixedOp


class TupleOps(torch.nn.Module):
    """A list of modules that are not ops of x (they return tuples): not a MixedOp, nothing said."""

    def __init__(self):
        super().__init__()
        self.branches = torch.nn.ModuleList([torch.nn.LSTM(4, 4), torch.nn.LSTM(4, 4)])

    def forward(self, x, state):
        return [b(x, state) for b in self.branches]


def test_adopted_mixed_ops_compile():
    """torch.compile runs an adopted MixedOp (other code's ops folded into their BNs: that part runs
    outside the graph) to the eager result."""
    torch._dynamo.reset()
    model = torch.nn.ModuleList([S.HalvesMixedOp(4, 1), S.PartialMixedOp(8, 2, k=2)])
    eager = copy.deepcopy(model)
    assert fuse_mixed_ops(model) == 2
    for op, own, C in zip(model, eager, (4, 8)):
        x, w = torch.randn(2, C, 8, 8, requires_grad=True), torch.softmax(torch.randn(8), 0)
        out, want = torch.compile(op, backend="aot_eager")(x, w), own(x, w)
        torch.testing.assert_close(out, want)
        g = torch.randn_like(want)
        for a, b in zip(torch.autograd.grad(out, [x, *op.parameters()], g),
                        torch.autograd.grad(want, [x, *own.parameters()], g)):
            torch.testing.assert_close(a, b)


def test_misuse_of_the_arguments_raises():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fuse_mixed_ops([S.MixedOp(4, 1)])
    with pytest.raises(TypeError, match="report must be True or False"):
        fuse_mixed_ops(torch.nn.Linear(2, 2), report="yes")
