"""The fused ops run on the CUDA emulator's checked build for benchmarks/gpu_model.py: each op's
forward and backward as bench_bars and a DARTS edge run them, the emulator's per-launch traffic
counts, and for the ATen ops an op runs between its own kernels (conv_candidates' GEMMs, copies,
per-channel steps) a model from torch's profiler: each reads its tensor inputs once and writes its
output once, one row per ATen op name."""
import json
import math
import os
import sys
from pathlib import Path

import torch
from bench_bars import PAIRS, PRIMS

from hdas_ext.ops import codes

ROOT = Path(__file__).resolve().parent.parent
LIB = Path(os.environ.get("HDAS_EMU_LIB", ROOT / "build" / "emu" / "checked" / "libhdas_emu.so"))


def load_emulator():
    if not hasattr(torch.ops.hdas_emu, "traffic"):
        if not LIB.exists():
            sys.exit(f"{LIB} is missing: build it with python csrc/emu/build.py --checked")
        torch.ops.load_library(str(LIB))
    mode = torch.ops.hdas_emu.emulator_mode()
    if not mode.startswith("checked build"):
        sys.exit(f"{LIB} is not the checked build ({mode})")


def counted(fn):
    torch.ops.hdas_emu.traffic(True)
    fn()
    return [json.loads(line) for line in torch.ops.hdas_emu.traffic(False).splitlines()]


def run_mixed(N, C, H, W, stride, cl, dtype):
    """The launches of mixed_node's forward and backward as bench_bars runs it (one input, the
    parameter-free primitives, pool BN with batch statistics)."""
    prims = [p for p in PRIMS if not (stride == 2 and p == 3)]  # no skip_connect at stride 2
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(N, C, H, W, generator=gen).to(dtype).contiguous(memory_format=fmt)
    w = torch.rand(1, len(prims), generator=gen).to(dtype)
    ops = torch.ops.hdas_emu
    res = {}
    fwd = counted(lambda: res.update(out=ops.mixed_node([x], w, prims, [], stride, True, True, None, None, 1e-5, 1)))
    out, mean, invstd, _ = res["out"]
    g = torch.randn(out.shape, generator=gen).to(dtype).contiguous(memory_format=fmt)
    bwd = counted(lambda: ops.mixed_node_backward(g, [x], w, prims, [], stride, True, True, mean, invstd, 1))
    elt = x.element_size()
    n_in, n_out = x.numel() * elt, out.numel() * elt
    return dict(fwd=fwd, bwd=bwd, compulsory=dict(fwd=n_in + n_out, bwd=2 * n_in + n_out),
                sums=dict(values=C * (len(prims) + 1), acc=4 if dtype != torch.float64 else 8))


# ATen ops inside an op (conv_candidates' CUDA path runs its GEMMs and element-wise steps through
# ATen): recorded by torch's profiler with their input shapes, each modelled as one launch that reads
# every tensor input once and writes its output once (no reuse across launches, as above the L2).
ATEN_VIEWS = {"view", "reshape", "_reshape_alias", "as_strided", "expand", "transpose", "t", "mT", "select", "slice",
              "unsqueeze", "squeeze", "permute", "alias", "detach", "empty", "empty_like", "empty_strided",
              "resolve_conj", "resolve_neg", "_unsafe_view", "to", "contiguous", "lift_fresh", "unbind", "split",
              "narrow", "zeros", "zeros_like", "relu", "_to_copy", "clone", "matmul", "result_type", "item",
              "_local_scalar_dense", "stack", "cat"}
ATEN_SIZE = {"float": 4, "double": 8, "c10::BFloat16": 2, "c10::Half": 2, "bool": 1, "long int": 8, "int": 4,
             "unsigned char": 1, "signed char": 1, "short int": 2}
ATEN_COMPARE = {"gt", "lt", "ge", "le", "eq", "ne"}


def aten_bytes(e):
    """(bytes read, bytes written) of one profiled ATen op, or None for one that moves no data."""
    name = e.name.removeprefix("aten::")
    # scalars (0-d tensors, wrapped numbers) are a kernel's arguments on a GPU: no traffic
    tensors = [(s, ATEN_SIZE[d]) for s, d in zip(e.input_shapes, e.input_dtypes) if d in ATEN_SIZE and math.prod(s) > 1]
    size = lambda s, b: math.prod(s) * b  # noqa: E731
    if name in ATEN_VIEWS or not tensors:
        return None
    if name in ("bmm", "mm"):
        a, b, m = tensors[0][0], tensors[1][0], tensors[0][1]
        out = a[:-1] + b[-1:]
        return size(a, m) + size(b, m), size(out, m)
    if name in ("sum", "mean", "amax", "amin", "var", "std"):
        return size(*tensors[0]), 0  # per-channel results: not counted
    if name in ("fill_", "zero_"):
        return 0, size(*tensors[0])
    if name == "copy_":
        return size(*tensors[1]), size(*tensors[0])
    if name.endswith("_"):
        return sum(size(*t) for t in tensors), size(*tensors[0])
    shape = list(torch.broadcast_shapes(*[tuple(t[0]) for t in tensors]))
    widest = max(tensors, key=lambda t: (math.prod(t[0]), t[1]))[1]  # the result's type follows the largest input
    return sum(size(*t) for t in tensors), size(shape, 1 if name in ATEN_COMPARE else widest)


def aten_launches(events, inside):
    """The profiled ATen ops under the op named `inside` that move data, one modelled launch per op
    name (in order of first appearance, their counts in the name)."""
    def under(e):
        while e is not None:
            if e.name == inside:
                return True
            e = e.cpu_parent
        return False
    by_name = {}
    for e in events:
        moved = aten_bytes(e) if e.name.startswith("aten::") and under(e) else None
        if moved is None:
            continue
        parent = e.cpu_parent  # an op inside another data-moving op (e.g. add_ inside a fused op) counts once
        if parent is not None and parent.name.startswith("aten::") and aten_bytes(parent) is not None:
            continue
        n, (rd, wr) = by_name.get(e.name, (0, (0, 0)))
        by_name[e.name] = (n + 1, (rd + moved[0], wr + moved[1]))
    return [modelled_launch(f"{name} x{n}", rd, wr, n) for name, (n, (rd, wr)) in by_name.items()]


def modelled_launch(kernel, read, written, launches=1):
    """A launch the emulator did not see, in its counts' form: every byte read and written once, in
    whole 128-byte requests of 32-byte sectors."""
    return {"kernel": kernel, "grid": [0, 0, 0], "block": [0, 0, 0], "sites": [], "allocs": [],
            "ld": {"requests": read / 128, "sectors": read / 32, "bytes": read, "distinct_sectors": read / 32},
            "st": {"requests": written / 128, "sectors": written / 32, "bytes": written,
                   "distinct_sectors": written / 32},
            "shared": {"requests": 0, "wavefronts": 0, "ideal": 0}, "modelled": True, "launches": launches}


def counted_with_aten(fn, inside):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        launches = counted(fn)
    return launches + aten_launches(prof.events(), inside)


# a DARTS edge's convolution candidates
DARTS_CONVS = [codes.CONV_KINDS[name] for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")]


def run_conv(N, C, H, W, stride, cl, dtype):
    """conv_candidates as a DARTS search edge runs it: its four convolution candidates on one input,
    BatchNorms without affine parameters on batch statistics, the pointwise outputs saved."""
    gen = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=gen).to(dtype)  # noqa: E731
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = rnd(N, C, H, W).contiguous(memory_format=fmt)
    shapes = [codes.CONV_SHAPES[kind] for kind in DARTS_CONVS]  # (k, dilation, halves)
    dw1 = [rnd(C, 1, k, k) / k for k, _, _ in shapes]
    pw1 = [rnd(C, C, 1, 1) / math.sqrt(C) for _ in shapes]
    dw2 = [rnd(C, 1, k, k) / k for k, _, halves in shapes if halves == 2]
    pw2 = [rnd(C, C, 1, 1) / math.sqrt(C) for _, _, halves in shapes if halves == 2]
    w = torch.rand(len(shapes), generator=gen).to(dtype)
    args = [x, DARTS_CONVS, [0] * len(shapes), w, dw1, pw1, dw2, pw2, [], []]
    ops = torch.ops.hdas_emu
    res = {}
    fwd = counted_with_aten(lambda: res.update(out=ops.conv_candidates(*args, stride, True, None, None, 1e-5)),
                            "hdas_emu::conv_candidates")
    out, saved, mean, invstd, _ = res["out"]
    g = [rnd(*o.shape).contiguous(memory_format=fmt) for o in out]
    bwd = counted_with_aten(lambda: ops.conv_candidates_backward(g, *args, stride, True, saved, mean, invstd,
                                                                 [True] * 4), "hdas_emu::conv_candidates_backward")
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    params = nbytes(dw1 + pw1 + dw2 + pw2)
    return dict(fwd=fwd, bwd=bwd, sums=None,
                compulsory=dict(fwd=nbytes([x] + out + saved) + params,
                                bwd=nbytes(g + [x] + saved + [x]) + 2 * params))


def run_pair(N, C, H, W, stride, cl, dtype):
    """pair_concat as bench_bars runs it: 4 states, 3 pairs."""
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    states = [torch.randn(N, C, H, W, generator=gen).to(dtype).contiguous(memory_format=fmt) for _ in range(4)]
    w = torch.rand(len(PAIRS), generator=gen).to(dtype)
    flat = [i for p in PAIRS for i in p]
    ops = torch.ops.hdas_emu
    res = {}
    fwd = counted(lambda: res.update(out=ops.pair_concat(states, w, flat)))
    g = torch.randn(res["out"].shape, generator=gen).to(dtype).contiguous(memory_format=fmt)
    bwd = counted(lambda: ops.pair_concat_backward(g, states, w, flat))
    n = states[0].numel() * states[0].element_size()
    return dict(fwd=fwd, bwd=bwd, compulsory=dict(fwd=6 * n, bwd=10 * n), sums=None)
