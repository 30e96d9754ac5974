"""hdas::conv_candidates' CUDA backend (the shipped launcher and kernels) against the CPU op: on the
CUDA emulator everywhere (marker cuda_emulated) and on a real GPU when there is one (marker cuda).
Forward (outputs, saved pointwise outputs, statistics) and backward (every gradient, the lean
recomputation too) over strides, training and eval statistics, affine and not, layouts and dtypes."""
import itertools

import pytest
import torch

import hdas_ext
from device_compare import CUDA, EMU, backend
from test_conv_candidates_op import args, make

pytestmark = pytest.mark.skipif(not hdas_ext.native_available(), reason="native ops not built")
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}


def close(a, b, rel, what):
    a, b = a.detach().cpu().double(), b.detach().double()
    err, scale = (a - b).abs().max().item() if a.numel() else 0.0, b.abs().max().item() if b.numel() else 0.0
    assert err <= rel * scale + rel * 1e-3, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def moved(a, device):
    return [t.detach().to(device) if torch.is_tensor(t) else [u.detach().to(device) for u in t]
            if isinstance(t, list) and t and torch.is_tensor(t[0]) else t for t in a]


def check(name, p, stride, batch_stats, lean=False):
    ns, device = backend(name)
    dtype = p["x"].dtype
    Z, C = len(p["kinds"]) + len(p["dw2"]), p["x"].shape[1]
    g = torch.Generator().manual_seed(7)
    rm, rv = torch.randn(Z, C, generator=g).to(dtype), (torch.rand(Z, C, generator=g) + 0.5).to(dtype)
    stats = [] if batch_stats else [rm, rv]
    cpu_args = moved(args(p), "cpu") + [stride, batch_stats] + (stats or [None, None]) + [1e-5]
    dev_args = moved(args(p), device) + [stride, batch_stats] + ([t.to(device) for t in stats] or [None, None]) + [1e-5]
    want = torch.ops.hdas.conv_candidates(*cpu_args)
    got = ns.conv_candidates(*dev_args)
    rel = TOL[dtype]
    for i, (a, b) in enumerate(zip(got[0], want[0])):
        assert a.dtype == b.dtype and a.is_contiguous(memory_format=torch.channels_last) == \
            b.is_contiguous(memory_format=torch.channels_last)
        close(a, b, rel, f"out[{i}]")
    for i, (a, b) in enumerate(zip(got[1], want[1])):
        close(a, b, rel, f"saved[{i}]")
    for what, a, b in zip(("mean", "invstd", "var"), got[2:], want[2:]):
        close(a, b, rel, what)
    grads = [torch.randn(o.shape, generator=g).to(dtype) for o in want[0]]
    saved_c, saved_d = ([], []) if lean else (want[1], got[1])
    for needs in ([True] * 4, [False, True, False, False], [False, False, False, True]):
        gw = torch.ops.hdas.conv_candidates_backward(grads, *cpu_args[:12], saved_c, want[2], want[3], needs)
        gd = ns.conv_candidates_backward([t.to(device) for t in grads], *dev_args[:12], saved_d, got[2], got[3], needs)
        for i, (a, b) in enumerate(zip(gd, gw)):
            for j, (u, v) in enumerate(zip(a, b) if isinstance(a, (list, tuple)) else [(a, b)]):
                assert u.shape == v.shape, f"grad {i}.{j} needs={needs}: shape {u.shape} vs {v.shape}"
                close(u, v, rel, f"grad {i}.{j} needs={needs}")


@pytest.mark.parametrize("name", [EMU, CUDA])
@pytest.mark.parametrize("stride,batch_stats,affine", list(itertools.product((1, 2), (True, False), (False, True))))
def test_float64_against_cpu(name, stride, batch_stats, affine):
    check(name, make((2, 3, 7, 6), kinds=[0, 1, 2, 3, 4, 2], edges=[0, 0, 1, 1, 2, 2], affine=affine), stride,
          batch_stats)


@pytest.mark.parametrize("name", [EMU, CUDA])
@pytest.mark.parametrize("shape", [(3, 2, 1, 1), (1, 2, 2, 3), (2, 5, 5, 4)])
def test_odd_planes_and_lean(name, shape):
    for stride in (1, 2):
        check(name, make(shape, kinds=[0, 3], edges=[0, 1]), stride, True, lean=True)


@pytest.mark.parametrize("name", [EMU, CUDA])
def test_tiles_and_channel_chunks(name):
    # the fused forward's tiles: 70 channels are two tiles of output channels and five chunks of
    # input channels (the last partial), 9x9 positions two tiles of 64 (the last partial)
    check(name, make((2, 70, 9, 9), kinds=[1, 2], edges=[0, 1], affine=True), 1, True)


@pytest.mark.parametrize("name", [EMU, CUDA])
def test_edge_with_more_branches_than_one_mix_pass(name):
    # an edge's output sums at most 8 branches a pass: 9 on one edge take a second, accumulating one
    check(name, make((2, 3, 5, 4), kinds=[0, 1, 2, 3, 0, 1, 2, 3, 2, 0], edges=[0] * 9 + [1]), 1, True)


@pytest.mark.parametrize("name", [EMU, CUDA])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_dtypes_and_layouts(name, dtype, channels_last):
    check(name, make((2, 4, 6, 5), kinds=[0, 2, 1], edges=[0, 0, 1], affine=True, dtype=dtype,
                     channels_last=channels_last), 2 if channels_last else 1, True)


@pytest.mark.parametrize("name", [EMU, CUDA])
def test_bad_arguments_rejected_by_the_device_launcher(name):
    ns, device = backend(name)
    p = make((2, 3, 5, 5))
    a = moved(args(p), device)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        ns.conv_candidates(*a, 3, True, None, None, 1e-5)
    with pytest.raises(ValueError, match="running_mean is required"):
        ns.conv_candidates(*a, 1, False, None, None, 1e-5)
