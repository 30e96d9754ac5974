"""The lean mode (recompute=True: the fused modules keep only their inputs and per-channel
statistics, and the backward recomputes the ops' internals) against the default mode, in float64:
outputs, every parameter and architecture gradient, running statistics, first- and second-order
search steps, on every supernet and on a model fused by fuse_mixed_ops; and what it keeps."""
import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from hdas_ext import fuse_mixed_ops
from hdas_ext.nn import FusedMixedOp, operations
from hdas_ext.lean import NotLeanable, lean_apply
from hdas_ext.primitives import DARTS_PRIMITIVES
from hdas_ext.search import SearchConfig, run_search, runner
from hdas_ext.search.bilevel import BilevelOptimizer
from hdas_ext.supernets import DartsCellSearch, HsDasSearch
from test_supernets_fused import TINY, grads_of

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = dict(rtol=1e-12, atol=1e-12)
# The tiny full-channel supernets (edge normalisation included; the lean mode refuses partial
# channels), and the stage searches' variants: per-stage cells (Hs-DAS-dagger's stage cells, one
# cell count per stage) and Hs-DAS* (one DAG shared by the stages, fewer stage ops).
SUPERNETS = {**{name: net for name, net in TINY.items() if net[1].get("partial_channels", 1) == 1},
             "hs-per-stage": (HsDasSearch, dict(C=4, cells_per_stage=(3, 2, 2), genotype="HC_DAS")),
             "hs-shared": (HsDasSearch, dict(C=4, cells_per_stage=2, shared_dag=True,
                                             stage_primitives=("max_pool_3x3", "skip_connect", "none")))}


def twins(space):
    cls, kw = SUPERNETS[space]
    torch.manual_seed(0)
    default = cls(**kw).double()
    lean = cls(recompute=True, **kw).double()
    lean.load_state_dict(default.state_dict())
    return default, lean


def assert_same(a, b):
    """Two dicts of tensors (state dicts, gradients) equal to float64 precision."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], **TOL, msg=k)


def assert_same_step(default, lean, x):
    """Outputs and the gradients of every parameter, network weights and alphas (betas) alike."""
    yd, gd = grads_of(default, x)
    yl, gl = grads_of(lean, x)
    torch.testing.assert_close(yl, yd, **TOL)
    torch.testing.assert_close(gl, gd, **TOL)


def search_step(model, order, data):
    w = torch.optim.SGD(model.weights(), 0.05, momentum=0.9, weight_decay=3e-4)
    a = torch.optim.Adam(model.alphas(), 3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    opt = BilevelOptimizer(model, w, a, order=order)
    for train, val in data:
        opt.step(train, val, lr=0.05)


def batches(n, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    make = lambda: [(torch.randn(4, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (4,), generator=g))]
    return [(make(), make()) for _ in range(n)]


@pytest.mark.parametrize("space", list(SUPERNETS))
def test_lean_supernet_equals_default(space):
    """Train mode (several steps: the running statistics too, each BatchNorm updated once per
    forward), eval mode, then first- and second-order search steps (the second order substitutes
    the weights through functional_call: the backward must differentiate the tensors the forward read)."""
    default, lean = twins(space)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for _ in range(2):
        assert_same_step(default, lean, x)
    assert_same(default.state_dict(), lean.state_dict())
    default.eval(), lean.eval()
    assert_same_step(default, lean, x)
    default.train(), lean.train()
    for order in (1, 2):
        data = batches(1)
        search_step(default, order, data)
        search_step(lean, order, data)
        assert_same(default.state_dict(), lean.state_dict())


class SepConv(operations.SepConv):
    """A DARTS-family code's own class (same name, same forward): the default mode weights its
    output in the kernel, the lean mode folds the weight into its last BatchNorm."""


class DilConv(operations.DilConv):
    pass


@pytest.mark.parametrize("own_classes", [False, True])
def test_fuse_mixed_ops_lean_equals_default(own_classes):
    torch.manual_seed(0)
    model = DartsCellSearch(C=4, layers=3, steps=2, multiplier=2, fused=False).double()
    if own_classes:
        for m in model.modules():
            if type(m) in (operations.SepConv, operations.DilConv):
                m.__class__ = SepConv if isinstance(m, operations.SepConv) else DilConv
    default, lean = model, copy.deepcopy(model)
    n = fuse_mixed_ops(default)
    assert n > 0 and fuse_mixed_ops(lean, recompute=True) == n
    assert all(m.recompute for m in lean.modules() if isinstance(m, FusedMixedOp))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    assert_same_step(default, lean, x)
    default.eval(), lean.eval()
    assert_same_step(default, lean, x)
    default.train(), lean.train()
    data = batches(1)
    search_step(default, 2, data)
    search_step(lean, 2, data)
    assert_same(default.state_dict(), lean.state_dict())


def saved_storages(fn):
    """{storage pointer: bytes} of every tensor autograd saves while fn() runs."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


def test_lean_mixed_op_keeps_only_its_input_and_per_channel_tensors():
    torch.manual_seed(0)
    C = 8
    op = FusedMixedOp(C, 1, DARTS_PRIMITIVES, recompute=True)
    x = torch.randn(4, C, 8, 8, requires_grad=True)
    weights = torch.softmax(torch.randn(len(DARTS_PRIMITIVES)), 0).requires_grad_()
    saved = saved_storages(lambda: op(x, weights))
    own = {p.untyped_storage().data_ptr() for p in [x, weights, *op.parameters()]}
    big = [n for ptr, n in saved.items() if ptr not in own and n > 8 * C * 8]
    assert not big, f"the lean op kept tensors of {big} bytes besides its input and parameters"


@pytest.mark.parametrize("space, fraction", [("cells", 1 / 6), ("hs", 1 / 3)])
def test_lean_supernet_keeps_a_fraction(space, fraction):
    """Bytes saved for the backward (parameters aside): lean a fraction of default (these tiny
    supernets have few ops per state; the paper-sized ones are in docs/memory.md)."""
    default, lean = twins(space)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    kept = {}
    for name, model in (("default", default), ("lean", lean)):
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved = saved_storages(lambda: model(x))
        kept[name] = sum(n for ptr, n in saved.items() if ptr not in params)
    assert kept["lean"] < kept["default"] * fraction, kept


def test_batch_norm_statistics_come_from_the_forward():
    """BatchNorm running statistics updated once per forward (momentum None: the cumulative
    average, num_batches_tracked counting forwards); the backward computes no batch statistics."""
    torch.manual_seed(0)
    plain = operations.SepConv(4, 4, 3, 1, 1, affine=True).double()
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    lean = copy.deepcopy(plain)
    x = torch.randn(4, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    for _ in range(2):
        plain(x).square().sum().backward()
        y = lean_apply([lean], [x])[0]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            y.square().sum().backward()
        names = {e.name for e in prof.events()}
        assert "aten::native_batch_norm_backward" in names
        assert not names & {"aten::native_batch_norm", "aten::_native_batch_norm_legit", "aten::batch_norm"}
    assert_same(plain.state_dict(), lean.state_dict())
    assert int(lean.op[3].num_batches_tracked) == 2
    assert_same({n: p.grad for n, p in plain.named_parameters()}, {n: p.grad for n, p in lean.named_parameters()})


def test_dropout_replayed_with_the_forward_random_state():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                          nn.Dropout(0.5)).double()
    lean = copy.deepcopy(plain)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    yp = plain(x)
    yp.sum().backward()
    gx, state = x.grad.clone(), torch.get_rng_state()
    x.grad = None
    torch.manual_seed(5)
    yl = lean_apply([lean], [x])[0]
    torch.rand(3)  # the random state moves on before the backward
    yl.sum().backward()
    torch.testing.assert_close(yl, yp, **TOL)
    torch.testing.assert_close(x.grad, gx, **TOL)
    assert_same({n: p.grad for n, p in plain.named_parameters()}, {n: p.grad for n, p in lean.named_parameters()})
    torch.manual_seed(5)
    lean_apply([lean], [x])[0].sum().backward()
    assert torch.equal(torch.get_rng_state(), state)  # the backward leaves the random state alone


def test_autocast_replayed():
    torch.manual_seed(0)
    plain = operations.SepConv(4, 4, 3, 1, 1, affine=False)
    lean = copy.deepcopy(plain)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    grads = []
    for run in (lambda: plain(x), lambda: lean_apply([lean], [x])[0]):
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = run()
        assert y.dtype == torch.bfloat16
        y.float().sum().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def test_unsupported_module_and_double_backward_refused():
    with pytest.raises(NotLeanable, match="Conv1d"):
        lean_apply([nn.Conv1d(4, 4, 3)], [torch.randn(2, 4, 8)])
    with pytest.raises(NotLeanable, match="sep_conv_3x3 op.*Conv1d"):
        FusedMixedOp.adopt(nn.ModuleList([nn.Conv1d(4, 4, 3)]), ["sep_conv_3x3"], 1, True, recompute=True)
    op = FusedMixedOp(4, 1, recompute=True).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(8, dtype=torch.float64), 0)
    y = op(x, w).square().sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(y, x, create_graph=True)


def test_torch_compile_of_a_lean_op():
    """The lean call runs eagerly inside a compiled model (a graph break), with the same result;
    fullgraph=True refuses with a message."""
    torch.manual_seed(0)
    eager = FusedMixedOp(4, 1, DARTS_PRIMITIVES, recompute=True).double()
    compiled_op = copy.deepcopy(eager)
    compiled = torch.compile(compiled_op, backend="aot_eager")
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(8, dtype=torch.float64), 0)
    for _ in range(2):
        results = []
        for model, module in ((eager, eager), (compiled, compiled_op)):
            xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
            module.zero_grad(set_to_none=True)
            y = model(xi, wi)
            y.square().sum().backward()
            results.append({"y": y.detach(), "x": xi.grad, "w": wi.grad,
                            **{n: p.grad for n, p in module.named_parameters()}})
        assert_same(*results)
    assert_same(eager.state_dict(), compiled_op.state_dict())
    with pytest.raises(Exception, match="recompute=False"):  # a full graph is refused, saying why
        torch.compile(copy.deepcopy(eager), fullgraph=True, backend="aot_eager")(x, w)


@pytest.mark.parametrize("space, network", [("cells", dict(layers=3)), ("distribution", dict(n_max=3, n_min=2))])
def test_search_recompute_finds_the_default_genotype(tmp_path, monkeypatch, space, network):
    """hdas search --recompute: the same alphas (betas) and genotype as the default mode for the
    same seed (float64 supernet: the data cast on the way in)."""
    build = runner.build_supernet

    def build_float64(*args, **kwargs):
        model = build(*args, **kwargs).double()
        model.net.register_forward_pre_hook(lambda m, args: (args[0].double(), *args[1:]))
        return model

    monkeypatch.setattr(runner, "build_supernet", build_float64)
    results, states = {}, {}
    for memory, recompute in (("default", False), ("lean", True)):
        out = tmp_path / memory
        cfg = SearchConfig(space=space, output=str(out), init_channels=4, epochs=1, batch_size=8,
                           steps_per_epoch=3, eval_batches=1, order=2, progress=False, tensorboard=False,
                           plot=False, seed=0, recompute=recompute, **network)
        results[memory] = run_search(cfg)
        states[memory] = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert results["lean"] == results["default"]
    assert_same(states["default"], states["lean"])


@pytest.mark.cuda
@pytest.mark.parametrize("space", ["cells", "hs"])
def test_lean_on_cuda_equals_default(space):
    """CUDA: float64 to float64 precision (the default mode's BatchNorms run cuDNN, the lean
    recomputation ATen's kernels), a second-order step, and a bf16 autocast step on channels_last."""
    default, lean = (m.cuda() for m in twins(space))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, device="cuda")
    assert_same_step(default, lean, x)
    data = [([(a.cuda(), b.cuda()) for a, b in train], [(a.cuda(), b.cuda()) for a, b in val])
            for train, val in batches(1)]
    search_step(default, 2, data)
    search_step(lean, 2, data)
    assert_same(default.state_dict(), lean.state_dict())
    grads = []
    for model in (default, lean):
        model.float().to(memory_format=torch.channels_last)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = model(x.float().contiguous(memory_format=torch.channels_last))
        y.float().square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.isfinite(grads[1]).all()
    assert (grads[1] - grads[0]).norm() <= 5e-2 * grads[0].norm()


def test_lean_mode_is_full_channel_only():
    """Supernets (what the search builds) refuse lean partial channels and lean eager modules;
    fuse_mixed_ops(recompute=True) fuses a partial-channel MixedOp in the default mode."""
    with pytest.raises(ValueError, match="partial_channels=1"):
        DartsCellSearch(C=4, layers=3, steps=2, multiplier=2, recompute=True, partial_channels=2)
    with pytest.raises(ValueError, match="fused=True"):
        HsDasSearch(C=4, cells_per_stage=2, recompute=True, fused=False)
    model = DartsCellSearch(C=4, layers=3, steps=2, multiplier=2, fused=False, partial_channels=2)
    n = fuse_mixed_ops(model, recompute=True)
    fused = [m for m in model.modules() if isinstance(m, FusedMixedOp)]
    assert n == len(fused) > 0 and not any(m.recompute for m in fused)
