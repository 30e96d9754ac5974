"""FusedMixedOp and fuse_mixed_ops against DARTS' eager MixedOp (hdas_ext.reference.MixedOp)."""
import copy
import importlib
import re
import warnings

import pytest
import torch
from torch import nn

import hdas_ext
from hdas_ext import fuse_mixed_ops
from hdas_ext.nn import FusedMixedOp, FusedPartialMixedOp, fused_edge_sum
from hdas_ext.primitives import DARTS_PRIMITIVES, HDAS_PRIMITIVES, STAGE_PRIMITIVES
from hdas_ext.reference import MixedOp


def twins(C, stride, primitives, affine=False, pool_bn=True, dtype=torch.float64):
    eager = MixedOp(C, stride, primitives, affine, pool_bn).to(dtype)
    fused = FusedMixedOp(C, stride, primitives, affine, pool_bn).to(dtype)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def check_step(eager, fused, x, weights):
    xe, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    we, wf = weights.clone().requires_grad_(), weights.clone().requires_grad_()
    oe, of = eager(xe, we), fused(xf, wf)
    torch.testing.assert_close(of, oe)
    g = torch.randn_like(oe)
    oe.backward(g)
    of.backward(g)
    torch.testing.assert_close(xf.grad, xe.grad)
    torch.testing.assert_close(wf.grad, we.grad)
    for (n, pe), (_, pf) in zip(eager.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(pf.grad, pe.grad, msg=n)


@pytest.mark.parametrize("primitives", [DARTS_PRIMITIVES, HDAS_PRIMITIVES, STAGE_PRIMITIVES,
                                        ("skip_connect", "avg_pool_3x3", "sep_conv_3x3")])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("pool_bn,affine", [(True, False), (False, False), (True, True)])
def test_same_function_state_and_running_stats(primitives, stride, pool_bn, affine):
    torch.manual_seed(1)
    eager, fused = twins(4, stride, primitives, affine, pool_bn)
    assert list(fused.state_dict()) == list(eager.state_dict())
    for _ in range(3):  # running statistics stay equal over several training steps
        x = torch.randn(3, 4, 8, 8, dtype=torch.float64)
        w = torch.softmax(torch.randn(len(primitives), dtype=torch.float64), 0)
        check_step(eager, fused, x, w)
    for (k, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(b, a, msg=k)
    eager.eval()
    fused.eval()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.softmax(torch.randn(len(primitives), dtype=torch.float64), 0)
    check_step(eager, fused, x, w)


@pytest.mark.parametrize("strides", [(2, 2, 1, 1), (1, 2, 1), (1, 1, 1)])
@pytest.mark.parametrize("train", [True, False])
def test_fused_edge_sum_equals_sum_of_edges(strides, train):
    """A cell node in one fused call per stride group equals DARTS' sum of per-edge MixedOps,
    outputs, every gradient and the running statistics (reduction-cell nodes mix strides)."""
    torch.manual_seed(2)
    C, dt = 4, torch.float64
    pairs = [twins(C, s, DARTS_PRIMITIVES) for s in strides]
    eager = nn.ModuleList(e for e, _ in pairs).train(train)
    fused = nn.ModuleList(f for _, f in pairs).train(train)
    full, half = torch.randn(2, C, 8, 8, dtype=dt), torch.randn(2, C, 4, 4, dtype=dt)
    xs = [full if s == 2 else (half if 2 in strides else full) for s in strides]
    w = torch.softmax(torch.randn(len(strides), len(DARTS_PRIMITIVES), dtype=dt), -1)
    xe = [x.clone().requires_grad_() for x in xs]
    xf = [x.clone().requires_grad_() for x in xs]
    we, wf = w.clone().requires_grad_(), w.clone().requires_grad_()
    oe = sum(op(x, we[j]) for j, (op, x) in enumerate(zip(eager, xe)))
    of = fused_edge_sum(fused, xf, wf)
    torch.testing.assert_close(of, oe)
    g = torch.randn_like(oe)
    oe.backward(g)
    of.backward(g)
    for a, b in zip(xf + [wf], xe + [we]):
        torch.testing.assert_close(a.grad, b.grad)
    for (n, pe), pf in zip(eager.named_parameters(), fused.parameters()):
        torch.testing.assert_close(pf.grad, pe.grad, msg=n)
    for (k, a), b in zip(eager.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(b, a, msg=k)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("fuse_convs", [False, True])
def test_one_relu_for_all_parametric_ops(stride, fuse_convs):
    """The fused MixedOp's parametric ops share one relu(x): one ReLU module runs per call (the
    eager MixedOp runs one per op), and the result is the eager one (checked above). With the
    convolution candidates fused, hdas::conv_candidates computes their ReLUs itself (without the
    native library they run as modules, one more ReLU for FactorizedReduce at stride 2)."""
    counts = {}
    for model in twins(4, stride, DARTS_PRIMITIVES):
        if isinstance(model, FusedMixedOp) and not fuse_convs:
            model = FusedMixedOp(4, stride, DARTS_PRIMITIVES, fuse_convs=False).double()
        calls = []
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.register_forward_hook(lambda *_: calls.append(1))
        model(torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.rand(8, dtype=torch.float64))
        counts[type(model).__name__] = len(calls)
    # eager: sep_conv x 2 ReLUs each, dil_conv x 1 each, FactorizedReduce 1 at stride 2
    fused = 1 + 2
    if fuse_convs:
        fused = (1 if stride == 2 else 0) if hdas_ext.native_available() else 1 + 2 + (1 if stride == 2 else 0)
    assert counts == {"MixedOp": 6 + (1 if stride == 2 else 0), "FusedMixedOp": fused}


def test_checkpoints_load_both_ways():
    eager, fused = twins(6, 1, DARTS_PRIMITIVES, dtype=torch.float32)
    x = torch.randn(2, 6, 8, 8)
    w = torch.softmax(torch.randn(8), 0)
    fused(x, w)  # moves running stats
    eager2 = MixedOp(6, 1)
    eager2.load_state_dict(fused.state_dict())
    for a, b in zip(eager2.state_dict().values(), fused.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("stride", [1, 2])
def test_momentum_none_and_no_tracking(stride):
    """Pool BNs (in the kernel) and the convs' last BNs (weight folded into their affine) update
    their buffers as nn.BatchNorm2d does: cumulative averages, and no update when not tracking."""
    eager, fused = twins(4, stride, DARTS_PRIMITIVES)
    assert fused.codes.count(hdas_ext.ops.ADD) == (5 if stride == 2 else 4)  # convs (+ FactorizedReduce)
    bns = [m for m in [*eager.modules(), *fused.modules()] if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
    for _ in range(3):
        check_step(eager, fused, torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.rand(8, dtype=torch.float64))
    for a, b in zip(eager.state_dict().values(), fused.state_dict().values()):
        torch.testing.assert_close(b, a)
    for m in bns:
        m.track_running_stats = False
    before = copy.deepcopy(fused.state_dict())
    check_step(eager, fused, torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.rand(8, dtype=torch.float64))
    for k, v in fused.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_weights_length_checked():
    op = FusedMixedOp(4, 1)
    with pytest.raises(ValueError, match=r"weights must have one entry per primitive, shape \[8\]"):
        op(torch.randn(2, 4, 8, 8), torch.rand(7))
    with pytest.raises(ValueError, match="unknown primitive 'conv_9x9'"):
        FusedMixedOp(4, 1, ["max_pool_3x3", "conv_9x9"])
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        FusedMixedOp(4, 3)


class TinyDartsCell(nn.Module):
    """A user's DARTS code: its own MixedOps inside a model."""

    def __init__(self, C):
        super().__init__()
        self.edges = nn.ModuleList([MixedOp(C, 1), MixedOp(C, 2)])
        self.head = nn.Conv2d(C, C, 1)

    def forward(self, x, weights):
        a = self.edges[0](x, weights[0])
        return self.head(a), self.edges[1](a, weights[1])


def test_fuse_mixed_ops_in_place_sharing_parameters():
    model = TinyDartsCell(4).double()
    reference = copy.deepcopy(model)
    assert fuse_mixed_ops(model) == 2
    assert all(isinstance(e, FusedMixedOp) for e in model.edges)
    assert fuse_mixed_ops(model) == 0  # idempotent
    assert model.edges[0]._ops is not None and len(list(model.parameters())) == len(list(reference.parameters()))
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.softmax(torch.randn(2, 8, dtype=torch.float64), -1)
    for a, b in zip(model(x, w), reference(x, w)):
        torch.testing.assert_close(a, b)
    # Sharing: editing the fused model's conv weight is seen through its modules' parameters.
    sep = model.edges[0]._ops[DARTS_PRIMITIVES.index("sep_conv_3x3")]
    assert sep.op[1].weight is dict(model.named_parameters())["edges.0._ops.4.op.1.weight"]


class PartialChannelMixedOp(MixedOp):
    """PC-DARTS' MixedOp: DARTS' structure (an `_ops` list of primitives for C // k channels), but
    its forward mixes only the first C // k channels and shuffles them with the rest."""

    def __init__(self, C, stride, primitives, k=2):
        super().__init__(C // k, stride, primitives)
        self.k = k

    def forward(self, x, weights):
        part = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :part]) for w, op in zip(weights, self._ops))
        out = torch.cat([mixed, x[:, part:]], dim=1)
        return out.view(out.shape[0], 2, -1, *out.shape[2:]).transpose(1, 2).reshape(out.shape)


@pytest.mark.parametrize("primitives", [STAGE_PRIMITIVES, DARTS_PRIMITIVES])
def test_fuse_keeps_a_mixed_op_with_another_forward_as_written(primitives):
    # Same structure as DARTS' MixedOp, another function: fusing it as DARTS' would drop the partial
    # channels (with parameter-free primitives and pools without BN, without any error). With k = 2
    # the shuffle is PC-DARTS' (fused as such); with k = 4 and 2 shuffle groups it is no known mix:
    # only the sum in its forward is fused, the slicing and shuffle run as written.
    model = nn.ModuleDict({"plain": MixedOp(4, 1, primitives), "pc": PartialChannelMixedOp(8, 1, primitives),
                           "other": PartialChannelMixedOp(16, 1, primitives, k=4)}).double()
    model.train()
    model["plain"].eval()  # mixed modes must survive the probe
    eager = copy.deepcopy(model["other"])
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left alone
        assert fuse_mixed_ops(model) == 3
    assert isinstance(model["plain"], FusedMixedOp) and isinstance(model["pc"], FusedPartialMixedOp)
    assert not isinstance(model["other"], FusedMixedOp) and isinstance(vars(model["other"]._ops)["_hdas_mix"],
                                                                       FusedMixedOp)
    assert torch.equal(torch.get_rng_state(), rng)  # the probe draws from its own generator
    assert not model["plain"].training and model["other"].training
    assert not model["plain"]._ops[1][0].training and model["other"]._ops[1][0].training
    for k, v in model.state_dict().items():  # the probe ran on copies: no buffer moved
        assert torch.equal(v, before[k]), k
    x, w = torch.randn(2, 16, 6, 6, dtype=torch.float64), torch.rand(len(primitives), dtype=torch.float64)
    torch.testing.assert_close(model["other"](x, w), eager(x, w), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="model is itself a MixedOp"):
        fuse_mixed_ops(MixedOp(4, 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fuse_low_precision_models(dtype):
    # The probe allows for the fused op's float32 accumulation against an eager low-precision sum.
    model = nn.ModuleDict({"a": MixedOp(8, 1), "b": MixedOp(8, 2)}).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fuse_mixed_ops(model) == 2


def test_fused_modules_check_inputs_before_the_parametric_ops_run():
    op = FusedMixedOp(4, 1)
    with pytest.raises(ValueError, match=r"inputs\[0\] must be a 4-D tensor \[N, C, H, W\], got shape \[4, 8, 8\]"):
        op(torch.randn(4, 8, 8), torch.rand(8))
    with pytest.raises(TypeError, match=r"edges\[1\] must be a FusedMixedOp .*got MixedOp"):
        fused_edge_sum([op, MixedOp(4, 1)], [torch.randn(2, 4, 8, 8)] * 2, torch.rand(2, 8))
    with pytest.raises(ValueError, match=re.escape("weights must have shape [num_edges, num_primitives] = [2, 8]")):
        fused_edge_sum([op, op], [torch.randn(2, 4, 8, 8)] * 2, torch.rand(8))


def test_weights_checked_once_on_the_way_down(monkeypatch):
    """The modules check the arguments they were given; the op's Python checks do not run again."""
    from hdas_ext.nn import FusedWindowedCellInput
    op_module = importlib.import_module("hdas_ext.ops.mixed_node")  # hdas_ext.ops.mixed_node is the function
    calls = []
    check = op_module.check_args
    monkeypatch.setattr(op_module, "check_args", lambda *a: calls.append(1) or check(*a))
    x = torch.randn(2, 4, 6, 6)
    FusedMixedOp(4, 1)(x, torch.rand(8))
    fused_edge_sum([FusedMixedOp(4, 1), FusedMixedOp(4, 1)], [x, x], torch.rand(2, 8))
    FusedWindowedCellInput(4, 2)([x, x], torch.rand(2, 4))
    assert calls == []
    hdas_ext.ops.mixed_node([x], torch.rand(1, 2), [1, 2])
    assert calls == [1]


@pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
@pytest.mark.parametrize("primitives,stride", [(STAGE_PRIMITIVES, 1), (DARTS_PRIMITIVES, 1), (DARTS_PRIMITIVES, 2)])
def test_torch_compile_fullgraph(primitives, stride):
    """One graph through the registered autograd; with DARTS primitives the convs' weights are
    folded into their last BN (code ADD) inside the graph, buffers updated as in eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    op = FusedMixedOp(4, stride, primitives)
    eager = MixedOp(4, stride, primitives)
    eager.load_state_dict(op.state_dict())
    compiled = torch.compile(op, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.softmax(torch.randn(len(primitives)), 0).requires_grad_()
    out = compiled(x, w)
    expect = eager(x, w)
    torch.testing.assert_close(out, expect)
    g = torch.randn_like(expect)  # not out.sum(): a BN output's sum is 0, its gradient rounding noise
    got = torch.autograd.grad(out, [x, w, *op.parameters()], g)
    want = torch.autograd.grad(expect, [x, w, *eager.parameters()], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    for (k, a), b in zip(eager.state_dict().items(), op.state_dict().values()):
        torch.testing.assert_close(b, a, msg=k)


@pytest.mark.cuda
def test_module_on_cuda_matches_eager():
    eager, fused = twins(4, 1, DARTS_PRIMITIVES, dtype=torch.float64)
    eager, fused = eager.cuda(), fused.cuda()
    for _ in range(2):
        check_step(eager, fused, torch.randn(3, 4, 8, 8, dtype=torch.float64, device="cuda"),
                   torch.rand(8, dtype=torch.float64, device="cuda"))
