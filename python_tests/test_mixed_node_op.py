"""hdas::mixed_node against hdas_ext.ops.reference.mixed_node (eager PyTorch)."""
import itertools
import re

import pytest
import torch

import hdas_ext
from device_compare import check_mixed_node, mixed_node_case
from hdas_ext import ops
from hdas_ext.ops import reference as ref

NONE, MAX, AVG, SKIP, EXTRA, ADD = ref.NONE, ref.MAX_POOL, ref.AVG_POOL, ref.SKIP, ref.EXTRA, ref.ADD
pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")

ALL_SUBSETS = [list(s) for r in range(1, 5) for s in itertools.combinations([NONE, MAX, AVG, SKIP], r)]


def make(E, prims, shape=(3, 4, 7, 6), stride=1, dtype=torch.float64, device="cpu", channels_last=False, K=None):
    N, C, H, W = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(shape, dtype=dtype, device=device).contiguous(memory_format=fmt) for _ in range(E)]
    w = torch.rand(E, len(prims), dtype=dtype, device=device)
    K = sum(1 for c in prims if c in (EXTRA, ADD))
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    extras = [torch.randn(N, C, Ho, Wo, dtype=dtype, device=device).contiguous(memory_format=fmt) for _ in range(E * K)]
    return xs, w, extras


def reference(xs, w, prims, extras, stride, pool_bn, batch_stats, rm=None, rv=None):
    """Reference output plus the batch statistics it used."""
    return ref.mixed_node(xs, w, prims, extras, stride, pool_bn=pool_bn, training=batch_stats,
                          running_mean=rm, running_var=rv)


def grads(out, tensors, seed_grad):
    return torch.autograd.grad(out, tensors, seed_grad, allow_unused=True)


@pytest.mark.parametrize("E", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("pool_bn,batch_stats", [(True, True), (True, False), (False, True)])
def test_forward_backward_every_subset(E, pool_bn, batch_stats):
    for prims in ALL_SUBSETS:
        xs, w, extras = make(E, prims)
        xs = [x.requires_grad_() for x in xs]
        w.requires_grad_()
        Q = sum(1 for c in prims if c in (MAX, AVG))
        rm = torch.randn(E, Q, xs[0].shape[1], dtype=torch.float64)
        rv = torch.rand(E, Q, xs[0].shape[1], dtype=torch.float64) + 0.5
        out, mean, invstd, var = ops.mixed_node(xs, w, prims, extras, 1, pool_bn, batch_stats,
                                                rm if not batch_stats else None, rv if not batch_stats else None)
        expect = reference(xs, w, prims, extras, 1, pool_bn, batch_stats, rm.clone(), rv.clone())
        torch.testing.assert_close(out, expect, msg=f"forward, prims={prims}")
        g = torch.randn_like(out)
        torch.testing.assert_close(grads(out, xs + [w], g), grads(expect, xs + [w], g), msg=f"backward, prims={prims}")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 2, 7, 5), (1, 2, 1, 4), (4, 3, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strides_shapes_formats_with_extras(stride, shape, channels_last):
    prims = [NONE, MAX, ADD, AVG, EXTRA, EXTRA] + ([SKIP] if stride == 1 else [])
    xs, w, extras = make(2, prims, shape, stride, channels_last=channels_last)
    leaves = [t.requires_grad_() for t in xs + extras + [w]]
    out = ops.mixed_node(xs, w, prims, extras, stride)[0]
    expect = reference(xs, w, prims, extras, stride, True, True)
    torch.testing.assert_close(out, expect)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    g = torch.randn_like(out)
    torch.testing.assert_close(grads(out, leaves, g), grads(expect, leaves, g))


def test_non_contiguous_inputs():
    base = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    xs = [base[:, ::2, 1:, 1:], base.transpose(2, 3)[:, 1::2, :8, :9]]
    xs = [x.detach().requires_grad_() for x in xs]
    assert not xs[0].is_contiguous()
    w = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
    prims = [MAX, AVG, SKIP, NONE]
    out = ops.mixed_node(xs, w, prims)[0]
    expect = reference(xs, w, prims, [], 1, True, True)
    torch.testing.assert_close(out, expect)
    g = torch.randn_like(out)
    torch.testing.assert_close(grads(out, xs + [w], g), grads(expect, xs + [w], g))


def test_batch_statistics_outputs():
    prims = [MAX, AVG, SKIP]
    xs, w, _ = make(2, prims, (4, 3, 6, 6))
    _, mean, invstd, var = ops.mixed_node(xs, w, prims)
    for e, x in enumerate(xs):
        for q, code in enumerate([MAX, AVG]):
            y = ref._prim_value(code, x, 1).transpose(0, 1).reshape(3, -1)
            torch.testing.assert_close(mean[e, q], y.mean(1))
            torch.testing.assert_close(invstd[e, q], (y.var(1, unbiased=False) + 1e-5).rsqrt())
            torch.testing.assert_close(var[e, q], y.var(1, unbiased=True))


@pytest.mark.parametrize("pool_bn,batch_stats", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("stride", [1, 2])
def test_gradcheck(pool_bn, batch_stats, stride):
    prims = [NONE, MAX, AVG, EXTRA, ADD] + ([SKIP] if stride == 1 else [])
    xs, w, extras = make(2, prims, (2, 2, 5, 4), stride)
    rm = torch.randn(2, 2, 2, dtype=torch.float64)
    rv = torch.rand(2, 2, 2, dtype=torch.float64) + 0.5
    args = xs + extras + [w]
    for t in args:
        t.requires_grad_()

    def f(*a):
        return ops.mixed_node(list(a[:2]), a[-1], prims, list(a[2:-1]), stride, pool_bn, batch_stats,
                              None if batch_stats else rm, None if batch_stats else rv)[0]

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("batch_stats", [True, False])
def test_opcheck(batch_stats):
    prims = [NONE, MAX, ADD, AVG, SKIP, EXTRA]
    for dtype, fmt in [(torch.float32, False), (torch.float64, True)]:
        xs, w, extras = make(2, prims, (2, 3, 6, 5), dtype=dtype, channels_last=fmt)
        for t in xs + extras + [w]:
            t.requires_grad_()
        rm = None if batch_stats else torch.zeros(2, 2, 3, dtype=dtype)
        rv = None if batch_stats else torch.ones(2, 2, 3, dtype=dtype)
        torch.library.opcheck(torch.ops.hdas.mixed_node.default,
                              (xs, w, prims, extras, 1, True, batch_stats, rm, rv, 1e-5))
        out = torch.ops.hdas.mixed_node(xs, w, prims, extras, 1, True, batch_stats, rm, rv, 1e-5)
        detached = lambda ts: [t.detach() for t in ts]  # noqa: E731  (double backward is not supported)
        torch.library.opcheck(torch.ops.hdas.mixed_node_backward.default,
                              (torch.randn_like(out[0]).detach(), detached(xs), w.detach(), prims, detached(extras), 1, True,
                               batch_stats, out[1].detach(), out[2].detach()))


@pytest.mark.parametrize("batch_stats", [True, False])
def test_eager_path_equals_registered_autograd(batch_stats):
    """ops.mixed_node's eager autograd.Function and the op's registered autograd (what
    torch.compile and direct torch.ops calls use) give the same outputs and gradients, and both
    refuse double backward."""
    prims = [NONE, MAX, AVG, SKIP, EXTRA, ADD]
    xs, w, extras = make(3, prims, (2, 3, 6, 5))
    rm = None if batch_stats else torch.randn(3, 2, 3, dtype=torch.float64)
    rv = None if batch_stats else torch.rand(3, 2, 3, dtype=torch.float64) + 0.5
    tensors = xs + extras + [w]
    for t in tensors:
        t.requires_grad_()
    fast = ops.mixed_node(xs, w, prims, extras, 1, True, batch_stats, rm, rv)
    registered = torch.ops.hdas.mixed_node(xs, w, prims, extras, 1, True, batch_stats, rm, rv, 1e-5)
    assert type(fast[0].grad_fn).__name__ != type(registered[0].grad_fn).__name__
    for a, b in zip(fast, registered):
        torch.testing.assert_close(a, b)
    g = torch.randn_like(fast[0])
    for a, b in zip(grads(fast[0], tensors, g), grads(registered[0], tensors, g)):
        torch.testing.assert_close(a, b)
    for call in (ops.mixed_node, torch.ops.hdas.mixed_node):
        out = call(xs, w, prims, extras, 1, True, batch_stats, rm, rv, 1e-5)[0]
        first = torch.autograd.grad(out, w, g, create_graph=True)[0]
        with pytest.raises(RuntimeError, match="differentiate twice|double backward"):
            first.sum().backward()


@pytest.mark.parametrize("registered", [False, True])
def test_add_extras_pass_grad_out_and_ignore_their_weight(registered):
    """ADD tensors are summed unweighted; their gradient is grad_out itself, their weight column
    gets none, the backward op returns the EXTRA gradients only, and the autograd graph keeps no
    reference to an ADD tensor (a folded conv output is freed after the forward)."""
    import weakref
    prims = [MAX, ADD, EXTRA, ADD]
    xs, w, extras = make(2, prims, (2, 3, 5, 5))
    tensors = [t.requires_grad_() for t in xs + extras + [w]]
    call = torch.ops.hdas.mixed_node if registered else ops.mixed_node
    out = call(xs, w, prims, extras, 1, True, True, None, None, 1e-5)[0]
    without = ref.mixed_node(xs, w, [MAX, NONE, EXTRA, NONE], [extras[1], extras[4]], 1)
    # extras: edge 0 -> [ADD, EXTRA, ADD] = extras[0:3], edge 1 -> extras[3:6]; 'none' adds x*0
    torch.testing.assert_close(out, without + extras[0] + extras[2] + extras[3] + extras[5])
    g = torch.randn_like(out)
    got = grads(out, tensors, g)
    expect = grads(ref.mixed_node(xs, w, prims, extras, 1), tensors, g)
    torch.testing.assert_close(got, expect)
    for i in (0, 2, 3, 5):
        assert torch.equal(got[2 + i], g)
    assert got[-1][:, [1, 3]].abs().max() == 0
    _, mean, invstd, _ = call(xs, w, prims, extras, 1, True, True, None, None, 1e-5)
    gx, gw, ge = torch.ops.hdas.mixed_node_backward(g, xs, w.detach(), prims, [e.detach() for e in extras], 1, True,
                                                    True, mean, invstd)
    assert len(ge) == 2
    torch.testing.assert_close(ge[0], w[0, 2].detach() * g)
    y = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    z = y * 2
    alive = weakref.ref(z)
    out = call([xs[0]], w[:1, :2], [MAX, ADD], [z], 1, True, True, None, None, 1e-5)[0]
    del z
    assert alive() is None
    out.backward(g)
    torch.testing.assert_close(y.grad, 2 * g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_error_within_eager_error(dtype):
    """xformers' rule: the fused error against a float64 reference stays within a small multiple of
    eager PyTorch's error in the same dtype."""
    prims = [NONE, MAX, AVG, SKIP, EXTRA, ADD]
    xs, w, extras = make(3, prims, (8, 4, 12, 12))
    leaves64 = [t.requires_grad_() for t in xs + extras + [w]]
    low = [t.detach().to(dtype).requires_grad_() for t in leaves64]
    exact = reference(leaves64[:3], leaves64[-1], prims, leaves64[3:-1], 1, True, True)
    eager = reference(low[:3], low[-1], prims, low[3:-1], 1, True, True)
    fused = ops.mixed_node(low[:3], low[-1], prims, low[3:-1], 1)[0]
    assert fused.dtype == dtype
    g = torch.randn_like(exact)
    g_exact = grads(exact, leaves64, g)
    g_eager = grads(eager, low, g.to(dtype))
    g_fused = grads(fused, low, g.to(dtype))
    for name, a, b, c in [("out", fused, eager, exact)] + [(f"grad{i}", *t) for i, t in enumerate(zip(g_fused, g_eager, g_exact))]:
        err_fused = (a.double() - c).abs().max().item()
        err_eager = (b.double() - c).abs().max().item()
        scale = c.abs().max().item()
        assert err_fused <= 3 * err_eager + 1e-6 * scale + 1e-12, f"{name}: fused {err_fused} vs eager {err_eager}"


def test_nan_and_inf_propagate_like_reference():
    prims = [NONE, MAX, AVG, SKIP]
    xs, w, _ = make(1, prims, (2, 2, 5, 5))
    xs[0][0, 0, 2, 2] = float("nan")
    xs[0][1, 1, 0, 0] = float("inf")
    out = ops.mixed_node(xs, w, prims, pool_bn=False)[0]
    expect = reference(xs, w, prims, [], 1, False, True)
    assert torch.equal(out.isnan(), expect.isnan())
    torch.testing.assert_close(out, expect, equal_nan=True)


def test_max_pool_ties_route_gradient_like_pytorch():
    """Ties (e.g. post-ReLU zeros) must send the gradient where max_pool2d sends it."""
    x = torch.zeros(2, 2, 6, 6, dtype=torch.float64)
    x[:, :, ::3, ::2] = 1.0
    relu = torch.randn(2, 3, 32, 32, dtype=torch.float64).relu().round()  # many ties, 0 and 1
    for x in (x, relu, relu[:, :, :2, :2], relu[:, :, :5, :9], relu[:, :, :2, :7]):
        x = x.detach().contiguous().requires_grad_()
        w = torch.ones(1, 1, dtype=torch.float64, requires_grad=True)
        for stride in (1, 2):
            out = ops.mixed_node([x], w, [MAX], [], stride, pool_bn=False)[0]
            expect = reference([x], w, [MAX], [], stride, False, True)
            torch.testing.assert_close(out, expect)
            g = torch.randn_like(out)
            torch.testing.assert_close(grads(out, [x], g), grads(expect, [x], g))


@pytest.mark.parametrize(
    "kwargs,err,words",
    [
        (dict(inputs=[]), ValueError, "inputs must be a non-empty list"),
        (dict(inputs=[torch.randn(2, 3, 4)]), ValueError, "4-D tensor"),
        (dict(inputs=[torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 4)]), ValueError, "inputs[1] must have the shape"),
        (dict(inputs=[torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4, dtype=torch.float64)]), TypeError, "dtype"),
        (dict(inputs=[torch.randint(0, 3, (2, 3, 4, 4))]), TypeError, "float32, float64"),
        (dict(inputs=[torch.randn(0, 3, 4, 4)]), ValueError, "empty batch"),
        (dict(weights=torch.rand(1, 3)), ValueError, "weights must have shape [num_inputs, num_primitives] = [1, 4]"),
        (dict(stride=3), ValueError, "stride must be 1 or 2"),
        (dict(prims=[MAX, 9, AVG, SKIP]), ValueError, "prims[1] must be a primitive code"),
        (dict(prims=[MAX, AVG, SKIP, NONE], stride=2), ValueError, "skip_connect at stride 2"),
        (dict(prims=[MAX, AVG, EXTRA, NONE]), ValueError, "expected 1 extras"),
        (dict(prims=[MAX, ADD, EXTRA, NONE]), ValueError, "expected 2 extras"),
        (dict(prims=[MAX, 6, AVG, SKIP]), ValueError, "prims[1] must be a primitive code in 0..5"),
        (dict(prims=[MAX, AVG, EXTRA, NONE], extras=[torch.randn(2, 3, 2, 2)]), ValueError, "extras[0] must have the output shape"),
    ],
)
def test_bad_input_errors(kwargs, err, words):
    args = dict(inputs=[torch.randn(2, 3, 4, 4)], weights=torch.rand(1, 4), prims=[MAX, AVG, SKIP, NONE],
                extras=[], stride=1)
    args.update(kwargs)
    if "inputs" in kwargs and "weights" not in kwargs:
        args["weights"] = torch.rand(max(len(args["inputs"]), 1), 4)
    # Python check (before any kernel) and the C++ TORCH_CHECK say the same thing.
    with pytest.raises(err, match=re.escape(words)):
        ops.mixed_node(**args)
    with pytest.raises(err, match=re.escape(words)):
        torch.ops.hdas.mixed_node(args["inputs"], args["weights"], args["prims"], args["extras"], args["stride"],
                                  True, True, None, None, 1e-5)


def test_eval_mode_requires_running_stats():
    with pytest.raises(ValueError, match="running_mean is required"):
        torch.ops.hdas.mixed_node([torch.randn(2, 3, 4, 4)], torch.rand(1, 1), [MAX], [], 1, True, False, None, None, 1e-5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ops.mixed_node([torch.randn(1, 3, 1, 1)], torch.rand(1, 1), [MAX])


def test_backward_bad_input_errors():
    xs, w, _ = make(1, [MAX, AVG], shape=(2, 3, 4, 5))
    _, mean, invstd, _ = torch.ops.hdas.mixed_node(xs, w, [MAX, AVG], [], 1, True, True, None, None, 1e-5)
    back = lambda g, m=mean, s=invstd: torch.ops.hdas.mixed_node_backward(  # noqa: E731
        g, xs, w, [MAX, AVG], [], 1, True, True, m, s)
    with pytest.raises(ValueError, match=re.escape("grad_out must have the output shape [2, 3, 4, 5], got [2, 3, 5, 4]")):
        back(torch.randn(2, 3, 5, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="grad_out must have dtype Double"):
        back(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=re.escape("save_invstd must have shape [num_inputs, num_pools, C] = [1, 2, 3]")):
        back(torch.randn(2, 3, 4, 5, dtype=torch.float64), s=invstd[:, :1])


@pytest.mark.cuda
def test_cuda_backward_rejects_other_devices():
    xs, w, _ = make(1, [MAX, AVG], shape=(2, 3, 4, 5), device="cuda")
    _, mean, invstd, _ = torch.ops.hdas.mixed_node(xs, w, [MAX, AVG], [], 1, True, True, None, None, 1e-5)
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda")
    for args, name in (((g.cpu(), mean, invstd), "grad_out"), ((g, mean.cpu(), invstd), "save_mean"),
                       ((g, mean, invstd.cpu()), "save_invstd")):
        with pytest.raises(ValueError, match=f"{name} must be on cuda"):
            torch.ops.hdas.mixed_node_backward(args[0], xs, w, [MAX, AVG], [], 1, True, True, *args[1:])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_cuda_matches_cpu(dtype, channels_last, batch_stats):
    """Forward outputs, statistics and every gradient against the CPU op and the float64 reference,
    all fed the same values rounded to dtype (device_compare says how a dtype is judged); the
    emulated CUDA tests run the same comparison without a GPU."""
    for stride in (1, 2):
        prims = [NONE, MAX, AVG, EXTRA, ADD] + ([SKIP] if stride == 1 else [])
        case = mixed_node_case(3, prims, (4, 5, 9, 8), stride, "batch" if batch_stats else "running", channels_last,
                               dtype, seed=stride)
        check_mixed_node("cuda", case, f"stride={stride}")


@pytest.mark.cuda
def test_cuda_device_checks_come_before_the_device_guard():
    """A CPU first input with CUDA weights (the dispatcher picks the CUDA kernel) gets the op's
    ValueError, not c10's "Expected a cuda device" from a guard built before the checks."""
    xs, w, _ = make(1, [MAX, AVG], shape=(2, 3, 4, 5))
    with pytest.raises(ValueError, match="weights must be on cpu"):
        torch.ops.hdas.mixed_node(xs, w.cuda(), [MAX, AVG], [], 1, True, True, None, None, 1e-5)
    # Running statistics are not read in training, so not checked: the backend names the device.
    rm = torch.zeros(1, 2, 3, dtype=torch.float64, device="cuda")
    with pytest.raises(ValueError, match="must be on a cuda device, got cpu"):
        torch.ops.hdas.mixed_node(xs, w, [MAX, AVG], [], 1, True, True, rm, rm, 1e-5)
    _, mean, invstd, _ = torch.ops.hdas.mixed_node(xs, w, [MAX, AVG], [], 1, True, True, None, None, 1e-5)
    with pytest.raises(ValueError, match="grad_out must be on cpu"):
        torch.ops.hdas.mixed_node_backward(torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda"), xs, w,
                                           [MAX, AVG], [], 1, True, True, mean, invstd)
    states = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    with pytest.raises(ValueError, match="weights must be on cpu"):
        torch.ops.hdas.pair_concat(states, torch.rand(1, device="cuda"), [0, 2])


@pytest.mark.cuda
def test_cuda_gradcheck_and_opcheck():
    prims = [NONE, MAX, AVG, SKIP, ADD, EXTRA]
    xs, w, extras = make(2, prims, (2, 2, 5, 4), device="cuda")
    args = [t.requires_grad_() for t in xs + extras + [w]]
    f = lambda *a: ops.mixed_node(list(a[:2]), a[-1], prims, list(a[2:-1]))[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, args)
    torch.library.opcheck(torch.ops.hdas.mixed_node.default, (xs, w, prims, extras, 1, True, True, None, None, 1e-5))
