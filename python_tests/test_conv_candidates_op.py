"""hdas::conv_candidates against hdas_ext.ops.conv_reference (eager PyTorch functional ops)."""
import math

import pytest
import torch

import hdas_ext
from hdas_ext.ops import conv_candidates as op  # the function
from hdas_ext.ops.codes import CONV_SHAPES
from hdas_ext.ops.conv_reference import conv_candidates as reference

pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
ALL = [0, 1, 2, 3]  # DARTS' sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5


def make(shape=(2, 3, 7, 6), kinds=ALL, edges=None, affine=False, dtype=torch.float64, channels_last=False, seed=0):
    """x, weights and every parameter of a call, as leaves that require grad."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    N, C, H, W = shape
    x = rnd(*shape).to(dtype).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    p = {"x": x, "kinds": list(kinds), "edges": list(edges or [0] * len(kinds)),
         "weights": torch.rand(len(kinds), generator=g, dtype=torch.float64).to(dtype) + 0.1,
         "dw1": [], "pw1": [], "dw2": [], "pw2": []}
    for kind in kinds:
        k, _, halves = CONV_SHAPES[kind]
        for h in range(halves):
            p[f"dw{h + 1}"].append((rnd(C, 1, k, k) / k).to(dtype))
            p[f"pw{h + 1}"].append((rnd(C, C, 1, 1) / math.sqrt(C)).to(dtype))
    Z = len(kinds) + len(p["dw2"])
    p["bn_weight"] = [(torch.rand(C, generator=g, dtype=torch.float64) + 0.5).to(dtype) for _ in range(Z)] if affine else []
    p["bn_bias"] = [(0.2 * rnd(C)).to(dtype) for _ in range(Z)] if affine else []
    for t in leaves(p):
        t.requires_grad_()
    return p


def cast(p, dtype):
    """A copy of make()'s call in dtype, its tensors new leaves that require grad."""
    leaf = lambda t: t.detach().to(dtype).requires_grad_()  # noqa: E731
    return {k: [leaf(t) for t in v] if isinstance(v, list) and v and torch.is_tensor(v[0])
            else leaf(v) if torch.is_tensor(v) else v for k, v in p.items()}


def leaves(p):
    return [p["x"], p["weights"], *p["dw1"], *p["pw1"], *p["dw2"], *p["pw2"], *p["bn_weight"], *p["bn_bias"]]


def args(p):
    return (p["x"], p["kinds"], p["edges"], p["weights"], p["dw1"], p["pw1"], p["dw2"], p["pw2"], p["bn_weight"],
            p["bn_bias"])


def fused(p, stride=1, batch_stats=True, rm=None, rv=None):
    return op(*args(p), stride=stride, batch_stats=batch_stats, running_mean=rm, running_var=rv)


def eager(p, stride=1, training=True, rm=None, rv=None, momentum=0.1):
    return reference(*args(p), stride=stride, training=training, running_mean=rm, running_var=rv, momentum=momentum)


def close(a, b, rel, floor=1e-300):
    """max |a - b| within rel times max |b| (normwise: elements near zero do not blow it up), plus
    an absolute floor for quantities that are zero up to rounding."""
    err, scale = (a.double() - b.double()).abs().max().item(), b.double().abs().max().item()
    assert err <= rel * scale + floor, f"max error {err:.3g} vs scale {scale:.3g} (rel {err / max(scale, 1e-300):.3g})"


def check_against_reference(p, stride=1, batch_stats=True, seed=1, floor=1e-300):
    """Outputs, every gradient and the statistics of the op equal the reference's to 1e-12 in float64."""
    Z, C = len(p["kinds"]) + len(p["dw2"]), p["x"].shape[1]
    g = torch.Generator().manual_seed(seed)
    rm = torch.randn(Z, C, generator=g, dtype=torch.float64)
    rv = torch.rand(Z, C, generator=g, dtype=torch.float64) + 0.5
    outs, mean, invstd, var = fused(p, stride, batch_stats, None if batch_stats else rm, None if batch_stats else rv)
    buf_m, buf_v = (torch.zeros(Z, C, dtype=torch.float64), torch.zeros(Z, C, dtype=torch.float64)) if batch_stats \
        else (rm.clone(), rv.clone())
    expect = eager(p, stride, batch_stats, buf_m, buf_v, momentum=1.0)
    assert len(outs) == len(expect)
    for a, b in zip(outs, expect):
        close(a, b, 1e-12)
    if batch_stats:  # momentum 1: the reference's buffers hold its batch mean and unbiased variance
        close(mean, buf_m, 1e-12)
        close(var, buf_v, 1e-12)
        count = p["x"].shape[0] * outs[0].shape[2] * outs[0].shape[3]
        close(invstd, (buf_v * (count - 1) / count + 1e-5).rsqrt(), 1e-12)
    else:
        close(mean, rm, 0)
        close(invstd, (rv + 1e-5).rsqrt(), 1e-15)
    grads = [torch.randn_like(o) for o in outs]
    wrt = leaves(p)
    got = torch.autograd.grad(outs, wrt, grads, allow_unused=True)
    want = torch.autograd.grad(expect, wrt, grads, allow_unused=True)
    for i, (a, b) in enumerate(zip(got, want)):
        assert (a is None) == (b is None), i
        if a is not None:
            close(a, b, 1e-12, floor)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("affine", [False, True])
def test_darts_candidates_float64(stride, batch_stats, affine):
    check_against_reference(make((3, 5, 8, 7), affine=affine), stride, batch_stats)


# Widths 37 and 45: the kernels' depthwise rows run in blocks of 4 vectors, then single vectors,
# then scalars (float64: 4-lane vectors; float32 below: 8-lane).
@pytest.mark.parametrize("shape", [(5, 3, 1, 1), (1, 2, 3, 5), (2, 3, 2, 3), (2, 9, 7, 7), (1, 17, 5, 6), (3, 2, 4, 9),
                                   (2, 3, 5, 37)])
@pytest.mark.parametrize("stride", [1, 2])
def test_odd_shapes(shape, stride):
    check_against_reference(make(shape, kinds=[0, 3, 1, 2, 4], seed=sum(shape)), stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_one_channel(stride):
    """C = 1: a BatchNorm right after a 1x1 convolution of one channel cancels the convolution's
    weight, whose gradient is then zero up to rounding (compared with an absolute floor)."""
    check_against_reference(make((3, 1, 4, 9), kinds=[0, 3], seed=5), stride, floor=1e-13)


@pytest.mark.parametrize("channels_last", [False, True])
def test_several_edges_share_the_input(channels_last):
    p = make((2, 4, 6, 6), kinds=[0, 1, 2, 3, 3, 0, 2], edges=[0, 0, 0, 0, 1, 2, 2], channels_last=channels_last)
    check_against_reference(p, 1)
    outs = fused(p)[0]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert len(outs) == 3 and all(o.is_contiguous(memory_format=fmt) for o in outs)


def test_channels_last_matches_nchw():
    p = make((2, 8, 6, 5), channels_last=True)
    q = make((2, 8, 6, 5))
    out_cl, out = fused(p, 2)[0][0], fused(q, 2)[0][0]
    close(out_cl, out, 1e-15)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_gradcheck(stride, batch_stats):
    p = make((2, 2, 5, 4), kinds=[0, 3, 2], edges=[0, 1, 0], affine=True)
    Z = 4
    rm, rv = torch.randn(Z, 2, dtype=torch.float64), torch.rand(Z, 2, dtype=torch.float64) + 0.5
    wrt = leaves(p)

    def f(*ts):
        q = dict(p, x=ts[0], weights=ts[1], dw1=list(ts[2:5]), pw1=list(ts[5:8]), dw2=[ts[8]], pw2=[ts[9]],
                 bn_weight=list(ts[10:14]), bn_bias=list(ts[14:18]))
        return tuple(fused(q, stride, batch_stats, None if batch_stats else rm, None if batch_stats else rv)[0])

    assert torch.autograd.gradcheck(f, wrt)


@pytest.mark.parametrize("batch_stats", [True, False])
def test_opcheck(batch_stats):
    for dtype, cl in [(torch.float32, False), (torch.float64, True)]:
        p = make((2, 3, 6, 5), kinds=[1, 2, 0], edges=[0, 0, 1], affine=True, dtype=dtype, channels_last=cl)
        rm = None if batch_stats else torch.zeros(5, 3, dtype=dtype)
        rv = None if batch_stats else torch.ones(5, 3, dtype=dtype)
        a = (*args(p), 2, batch_stats, rm, rv, 1e-5)
        torch.library.opcheck(torch.ops.hdas.conv_candidates.default, a)
        out, saved, mean, invstd, _ = torch.ops.hdas.conv_candidates(*a)
        d = lambda ts: [t.detach() for t in ts]  # noqa: E731  (double backward is not supported)
        for needs in ([True] * 4, [True, False, False, True], [False, True, False, False]):
            torch.library.opcheck(torch.ops.hdas.conv_candidates_backward.default,
                                  ([torch.randn_like(o) for o in out], p["x"].detach(), p["kinds"], p["edges"],
                                   p["weights"].detach(), d(p["dw1"]), d(p["pw1"]), d(p["dw2"]), d(p["pw2"]),
                                   d(p["bn_weight"]), d(p["bn_bias"]), 2, batch_stats, d(saved), mean.detach(),
                                   invstd.detach(), needs))


def test_registered_autograd_equals_eager_path():
    """torch.ops.hdas.conv_candidates (torch.library's autograd, what torch.compile traces) and the
    eager autograd.Function give the same gradients."""
    p = make((2, 3, 6, 6), kinds=[0, 2, 3, 1], edges=[0, 1, 1, 0], affine=True)
    outs = fused(p)[0]
    reg = torch.ops.hdas.conv_candidates(*args(p), 1, True, None, None, 1e-5)[0]
    grads = [torch.randn_like(o) for o in outs]
    for a, b in zip(torch.autograd.grad(outs, leaves(p), grads), torch.autograd.grad(reg, leaves(p), grads)):
        close(a, b, 1e-14)


def test_lean_backward_recomputes_the_same():
    from hdas_ext.ops.conv_candidates import conv_candidates_unchecked
    p = make((3, 4, 6, 5), kinds=[0, 1, 2, 3], edges=[0, 0, 1, 1], affine=True)
    a = args(p)
    kept = conv_candidates_unchecked(*a, 2, True, None, None, 1e-5)[0]
    lean = conv_candidates_unchecked(*a, 2, True, None, None, 1e-5, lean=True)[0]
    grads = [torch.randn_like(o) for o in kept]
    for a_, b in zip(torch.autograd.grad(lean, leaves(p), grads), torch.autograd.grad(kept, leaves(p), grads)):
        close(a_, b, 1e-14)


def test_architecture_step_gradients_only():
    """autograd.grad w.r.t. the mixing weights alone (an architecture step) gives the reference's,
    and the backward is not asked for the parameters' gradients."""
    p = make((2, 3, 6, 6))
    w = p["weights"].detach().requires_grad_()
    got = torch.autograd.grad(fused(dict(p, weights=w * 1.0))[0][0].square().sum(), w)[0]  # a non-leaf, as softmax(alpha)
    want = torch.autograd.grad(eager(dict(p, weights=w * 1.0))[0].square().sum(), w)[0]
    close(got, want, 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_error_within_eager_error(dtype):
    """The op's error against float64 stays within 2x eager PyTorch's own error in the same dtype
    (float32), and within a small multiple in half precision (the op keeps its intermediates in
    float32, eager rounds each one)."""
    p64 = make((8, 8, 12, 12), kinds=[0, 1, 2, 3], edges=[0, 0, 0, 0], affine=True)
    low = cast(p64, dtype)
    exact, ref_low, got = eager(p64)[0], eager(low)[0], fused(low)[0][0]
    assert got.dtype == dtype
    g = torch.randn_like(exact)
    limit = 2 if dtype == torch.float32 else 3
    pairs = [("out", got, ref_low, exact)] + [
        (f"grad{i}", a, b, c) for i, (a, b, c) in enumerate(zip(torch.autograd.grad(got, leaves(low), g.to(dtype)),
                                                                torch.autograd.grad(ref_low, leaves(low), g.to(dtype)),
                                                                torch.autograd.grad(exact, leaves(p64), g)))]
    for name, a, b, c in pairs:
        err, err_eager = (a.double() - c).abs().max().item(), (b.double() - c).abs().max().item()
        scale = c.abs().max().item()
        assert err <= limit * err_eager + 1e-7 * scale, f"{name}: op {err:.3g} vs eager {err_eager:.3g}"


def test_nan_propagates_like_reference():
    p = make((2, 2, 5, 5), kinds=[2])
    with torch.no_grad():
        p["x"][0, 1, 2, 2] = float("nan")
    out = fused(p)[0][0]
    expect = eager(p)[0]
    assert torch.equal(out.isnan(), expect.isnan())


def _bad_cases():
    def with_(key, value):
        return lambda p: dict(p, **{key: value})

    return [
        ("x 3-D", with_("x", torch.randn(2, 3, 5, dtype=torch.float64)), ValueError, "x must be a 4-D tensor"),
        ("x int", lambda p: dict(p, x=torch.zeros(2, 3, 5, 5, dtype=torch.int64)), TypeError, "float32, float64"),
        ("empty batch", lambda p: dict(p, x=torch.randn(0, 3, 5, 5, dtype=torch.float64)), ValueError, "empty batch"),
        ("no branch", lambda p: dict(p, kinds=[], edges=[]), ValueError, "at least one branch"),
        ("kind", lambda p: dict(p, kinds=[0, 1, 2, 7]), ValueError, "kinds[3] must be a convolution code"),
        ("edges len", lambda p: dict(p, edges=[0, 0]), ValueError, "one edge per branch"),
        ("edge gap", lambda p: dict(p, edges=[0, 2, 2, 2]), ValueError, "edge 1 has none"),
        ("weights", lambda p: dict(p, weights=p["weights"][:3]), ValueError, "weights must have shape [num_branches]"),
        ("dw1 count", lambda p: dict(p, dw1=p["dw1"][:3]), ValueError, "dw1 and pw1 must hold one tensor per branch"),
        ("dw2 count", lambda p: dict(p, dw2=p["dw2"][:1]), ValueError, "one tensor per separable branch"),
        ("dw1 shape", lambda p: dict(p, dw1=[p["dw1"][1]] + p["dw1"][1:]), ValueError, "dw1[0] must have shape [3, 1, 3, 3]"),
        ("pw2 dtype", lambda p: dict(p, pw2=[p["pw2"][0].float(), p["pw2"][1]]), TypeError, "pw2[0] must have dtype"),
        ("bn count", lambda p: dict(p, bn_weight=[None] * 3), ValueError, "bn_weight must be empty"),
        ("bn shape", lambda p: dict(p, bn_bias=[torch.zeros(4, dtype=torch.float64)] + [None] * 5), ValueError,
         "bn_bias[0] must have shape [3]"),
    ]


@pytest.mark.parametrize("name,mutate,err,words", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_arguments(name, mutate, err, words):
    """The Python checks and the native op's own raise the same named error before any kernel runs."""
    p = mutate(make((2, 3, 5, 5)))
    with pytest.raises(err, match=re_escape(words)):
        fused(p)
    with pytest.raises(err, match=re_escape(words)):
        torch.ops.hdas.conv_candidates(*args(p), 1, True, None, None, 1e-5)


def re_escape(words):
    import re
    return re.escape(words)


def test_bad_stride_and_statistics():
    p = make((2, 3, 5, 5))
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        fused(p, stride=3)
    with pytest.raises(ValueError, match="running_mean is required"):
        fused(p, batch_stats=False)
    with pytest.raises(ValueError, match=re_escape("running_var must have shape [num_batchnorms, C] = [6, 3]")):
        fused(p, batch_stats=False, rm=torch.zeros(6, 3), rv=torch.ones(5, 3))
    q = make((1, 3, 1, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fused(q)


def test_backward_bad_arguments():
    p = make((2, 3, 5, 5))
    a = (*[t.detach() if torch.is_tensor(t) else [u.detach() for u in t] if isinstance(t, list) and t and
           torch.is_tensor(t[0]) else t for t in args(p)], 1, True)
    out, saved, mean, invstd, _ = torch.ops.hdas.conv_candidates(*a, None, None, 1e-5)
    g = [torch.randn_like(o) for o in out]
    cases = [
        (([g[0], g[0]], *a, saved, mean, invstd), "grad_out must hold one tensor per edge"),
        (([g[0][:, :2]], *a, saved, mean, invstd), "grad_out[0] must have the output shape"),
        ((g, *a, saved[:2], mean, invstd), "saved must be empty (recompute)"),
        ((g, *a, saved, mean[:2], invstd), "save_mean must have shape"),
    ]
    for c, words in cases:
        with pytest.raises(ValueError, match=re_escape(words)):
            torch.ops.hdas.conv_candidates_backward(*c, [True] * 4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_against_reference(stride, channels_last):
    """float32 on fresh inputs: outputs and every gradient near the reference's (both float32)."""
    p = make((4, 6, 9, 45), kinds=[0, 1, 2, 3, 4], edges=[0, 0, 1, 1, 1], affine=True, dtype=torch.float32,
             channels_last=channels_last, seed=5)
    outs = fused(p, stride)[0]
    expect = eager(p, stride)
    for a, b in zip(outs, expect):
        close(a, b, 1e-5)
        assert a.is_contiguous(memory_format=torch.channels_last) == channels_last
    grads = [torch.randn_like(o) for o in outs]
    for a, b in zip(torch.autograd.grad(outs, leaves(p), grads), torch.autograd.grad(expect, leaves(p), grads)):
        close(a, b, 1e-4)


@pytest.mark.parametrize("kind", [0, 3])
def test_float32_weight_gradients_when_the_batchnorm_cancels_most_of_the_gradient(kind):
    """A gradient at the output that lies almost in what the last BatchNorm's backward projects away
    (a multiple of its output plus a constant, as in a trained network's cells) leaves weight
    gradients thousands of times smaller than its terms. The op's float32 error on them stays within
    2x eager PyTorch's (whose CPU BatchNorm sums over the batch in float64; float32 sums gave 2.2-3.2x)."""
    p64 = make((8, 4, 16, 16), kinds=[kind], affine=False, seed=3)
    with torch.no_grad():
        p64["x"].mul_(0.5).add_(0.7)  # non-negative mean, as the states of a cell after ReLU-conv-BN sums
    p32 = cast(p64, torch.float32)
    exact = eager(p64)[0]
    noise = torch.randn(exact.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g = 1e-3 * (exact.detach() / p64["weights"].detach()[0] + 0.5) + 1e-7 * noise
    truth = torch.autograd.grad(exact, leaves(p64), g)
    ours = torch.autograd.grad(fused(p32)[0][0], leaves(p32), g.float())
    theirs = torch.autograd.grad(eager(p32)[0], leaves(p32), g.float())
    names = ["x", "weights", "dw1", "pw1", "dw2", "pw2"]
    for name, a, b, c in zip(names, ours, theirs, truth):
        err, err_eager = ((a.double() - c).norm() / c.norm()).item(), ((b.double() - c).norm() / c.norm()).item()
        assert err <= 2 * err_eager + 1e-6, f"{name}: op {err:.3g} vs eager {err_eager:.3g}"
