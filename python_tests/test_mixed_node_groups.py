"""hdas::mixed_node with groups = k > 1 (PC-DARTS' partial channels) against the reference formula:
the mix on the first C/k channels, the others passed (max-pooled 2x2 at stride 2), the result
channel-shuffled in k groups."""
import itertools

import pytest
import torch

import hdas_ext
from hdas_ext import ops
from hdas_ext.ops import reference as ref

NONE, MAX, AVG, SKIP, EXTRA, ADD = ref.NONE, ref.MAX_POOL, ref.AVG_POOL, ref.SKIP, ref.EXTRA, ref.ADD
pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
MODES = {"batch": (True, True), "running": (True, False), "no_bn": (False, True)}


def make(shape, groups, stride, prims, dtype=torch.float64, channels_last=False, seed=0):
    """Fresh random leaves: x [N, C, H, W], weights [1, P], extras [N, C/groups, Ho, Wo], running
    statistics [1, Q, C/groups]."""
    gen = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    N, C, H, W = shape
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=dtype).contiguous(memory_format=fmt)  # noqa: E731
    K, Q = sum(c in (EXTRA, ADD) for c in prims), sum(c in (MAX, AVG) for c in prims)
    x = rnd(N, C, H, W).requires_grad_()
    w = torch.rand(1, len(prims), generator=gen, dtype=dtype).requires_grad_()
    extras = [rnd(N, C // groups, Ho, Wo).requires_grad_() for _ in range(K)]
    rm = torch.randn(1, Q, C // groups, generator=gen, dtype=dtype)
    rv = torch.rand(1, Q, C // groups, generator=gen, dtype=dtype) + 0.5
    return x, w, extras, rm, rv


def prims_for(stride):
    return [NONE, MAX, ADD, AVG, EXTRA] + ([SKIP] if stride == 1 else [])


@pytest.mark.parametrize("groups,stride", [(2, 1), (4, 1), (2, 2), (4, 2)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("mode", list(MODES))
def test_forward_backward_statistics_equal_the_reference(groups, stride, channels_last, mode):
    pool_bn, batch_stats = MODES[mode]
    prims = prims_for(stride)
    x, w, extras, rm, rv = make((3, 4 * groups, 6, 4), groups, stride, prims, channels_last=channels_last,
                                seed=groups + 10 * stride)
    run_rm, run_rv = (None, None) if batch_stats else (rm, rv)
    out, mean, invstd, var = ops.mixed_node([x], w, prims, extras, stride, pool_bn, batch_stats, run_rm, run_rv,
                                            groups=groups)
    expect = ref.mixed_node([x], w, prims, extras, stride, pool_bn, batch_stats, rm.clone(), rv.clone(),
                            groups=groups)
    torch.testing.assert_close(out, expect)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if pool_bn and batch_stats:
        _, want_mean, want_invstd, want_var = ref.mixed_node_with_stats([x.detach()], w, prims, extras, stride, True,
                                                                        True, None, None, 1e-5, groups)
        for a, b in zip((mean, invstd, var), (want_mean, want_invstd, want_var)):
            torch.testing.assert_close(a, b)
    g = torch.randn_like(out)
    leaves = [x, w, *extras]
    torch.testing.assert_close(torch.autograd.grad(out, leaves, g), torch.autograd.grad(expect, leaves, g))


def test_float32_within_eagers_own_error():
    """float32: the op's error against the float64 truth is within a small multiple of eager's."""
    prims = prims_for(2)
    x, w, extras, _, _ = make((4, 12, 8, 6), 3, 2, prims, seed=7)
    g = torch.randn(4, 12, 4, 3, dtype=torch.float64)

    def run(f, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in [x, w, *extras]]
        out = f([leaves[0]], leaves[1], prims, leaves[2:], 2, True, True, groups=3)
        out = out[0] if isinstance(out, tuple) else out
        return [out.detach(), *torch.autograd.grad(out, leaves, g.to(dtype))]

    truth = run(ref.mixed_node, torch.float64)
    eager, fused = run(ref.mixed_node, torch.float32), run(ops.mixed_node, torch.float32)
    for t, e, f in zip(truth, eager, fused):
        err_e, err_f = (e.double() - t).abs().max().item(), (f.double() - t).abs().max().item()
        assert err_f <= 4 * err_e + 1e-6 * t.abs().max().item(), (err_f, err_e)


@pytest.mark.parametrize("groups,stride,mode", [(2, 2, "batch"), (3, 1, "running"), (2, 1, "no_bn")])
def test_gradcheck(groups, stride, mode):
    pool_bn, batch_stats = MODES[mode]
    prims = prims_for(stride)
    x, w, extras, rm, rv = make((2, 2 * groups, 4, 4), groups, stride, prims, seed=3)

    def f(x, w, *extras):
        return ops.mixed_node([x], w, prims, list(extras), stride, pool_bn, batch_stats,
                              None if batch_stats else rm, None if batch_stats else rv, groups=groups)[0]

    assert torch.autograd.gradcheck(f, (x, w, *extras))


@pytest.mark.parametrize("batch_stats", [True, False])
def test_opcheck(batch_stats):
    prims = prims_for(2)
    for dtype, channels_last in [(torch.float32, False), (torch.float64, True)]:
        x, w, extras, rm, rv = make((2, 8, 6, 4), 4, 2, prims, dtype, channels_last)
        rm, rv = (None, None) if batch_stats else (rm, rv)
        args = ([x], w, prims, extras, 2, True, batch_stats, rm, rv, 1e-5, 4)
        torch.library.opcheck(torch.ops.hdas.mixed_node.default, args)
        out, mean, invstd, _ = torch.ops.hdas.mixed_node(*args)
        torch.library.opcheck(torch.ops.hdas.mixed_node_backward.default,
                              (torch.randn_like(out), [x.detach()], w.detach(), prims, [e.detach() for e in extras],
                               2, True, batch_stats, mean.detach(), invstd.detach(), 4))


def test_eager_path_equals_registered_autograd():
    prims = prims_for(1)
    x, w, extras, _, _ = make((2, 6, 5, 5), 3, 1, prims, seed=5)
    leaves = [x, w, *extras]
    a = ops.mixed_node([x], w, prims, extras, groups=3)[0]
    b = torch.ops.hdas.mixed_node([x], w, prims, extras, 1, True, True, None, None, 1e-5, 3)[0]
    torch.testing.assert_close(a, b)
    g = torch.randn_like(a)
    torch.testing.assert_close(torch.autograd.grad(a, leaves, g), torch.autograd.grad(b, leaves, g))


BAD = [  # (inputs' shape, number of inputs, stride, groups, message)
    ((2, 6, 4, 4), 1, 1, 4, r"inputs\[0\]'s channels \(6\) must be divisible by groups = 4"),
    ((2, 8, 5, 4), 1, 2, 2, r"groups > 1 at stride 2 needs an even height and width .* got 5x4"),
    ((2, 8, 4, 7), 1, 2, 2, r"groups > 1 at stride 2 needs an even height and width .* got 4x7"),
    ((2, 8, 4, 4), 2, 1, 2, r"groups > 1 \(partial channels\) takes one input, got 2"),
    ((2, 8, 4, 4), 1, 1, 0, r"groups must be an int >= 1, got 0"),
    ((2, 8, 4, 4), 1, 1, -2, r"groups must be an int >= 1, got -2"),
]


@pytest.mark.parametrize("shape,E,stride,groups,message", BAD)
@pytest.mark.parametrize("entry", ["python", "native"])
def test_bad_groups_are_named_before_any_kernel(shape, E, stride, groups, message, entry):
    prims = [MAX, AVG]
    xs = [torch.randn(shape) for _ in range(E)]
    w = torch.rand(E, 2)
    with pytest.raises(ValueError, match=message):
        if entry == "python":
            ops.mixed_node(xs, w, prims, [], stride, groups=groups)
        else:
            torch.ops.hdas.mixed_node(xs, w, prims, [], stride, True, True, None, None, 1e-5, groups)


def test_extras_of_the_mixed_channels_only():
    x, w = torch.randn(2, 8, 4, 4), torch.rand(1, 2)
    with pytest.raises(ValueError, match=r"extras\[0\] must have the mixed channels' shape \[2, 4, 4, 4\]"):
        ops.mixed_node([x], w, [MAX, EXTRA], [torch.randn(2, 8, 4, 4)], groups=2)
    with pytest.raises(ValueError, match=r"extras\[0\] must have the mixed channels' shape \[2, 4, 4, 4\]"):
        torch.ops.hdas.mixed_node([x], w, [MAX, EXTRA], [torch.randn(2, 8, 4, 4)], 1, True, True, None, None, 1e-5, 2)


def test_passed_channels_route_ties_and_nan_as_max_pool2d():
    """The passed channels' 2x2 pool: ties (zeros after ReLU) and NaN take PyTorch's own routes."""
    for stride, (groups, C) in itertools.product((1, 2), [(2, 4), (4, 8)]):
        x = torch.randn(2, C, 6, 6, dtype=torch.float64).relu().round().requires_grad_()
        with torch.no_grad():
            x[0, C - 1, 1, 1] = float("nan")
        w = torch.rand(1, 2, dtype=torch.float64, requires_grad=True)
        out = ops.mixed_node([x], w, [MAX, AVG], [], stride, pool_bn=False, groups=groups)[0]
        expect = ref.mixed_node([x], w, [MAX, AVG], [], stride, pool_bn=False, groups=groups)
        torch.testing.assert_close(out, expect, equal_nan=True)
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, [x, w], g), torch.autograd.grad(expect, [x, w], g)):
            torch.testing.assert_close(a, b, equal_nan=True)
