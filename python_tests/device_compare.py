"""The CUDA backend's checks, shared by the real GPU tests and the emulated ones: a device backend of
the fused ops (torch.ops.hdas on CUDA tensors, or torch.ops.hdas_emu, the same CUDA source run by
the emulator on CPU tensors) against the CPU op in the same dtype and against the float64
reference of the same rounded inputs, forward outputs, statistics and every gradient."""
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import hdas_ext
from hdas_ext.reference import functional as ref

NONE, MAX, AVG, SKIP, EXTRA, ADD = ref.NONE, ref.MAX_POOL, ref.AVG_POOL, ref.SKIP, ref.EXTRA, ref.ADD
EMU_LIB = Path(os.environ.get("HDAS_EMU_LIB", Path(__file__).resolve().parent.parent / "build" / "emu" / "libhdas_emu.so"))

# Outside float64 a result is judged by its error against the float64 reference of the same
# (rounded) inputs: at most 3x the larger error of the CPU op and of eager PyTorch in the same dtype
# (xformers' rule: ill-conditioned cases, e.g. pool BN over two nearly equal values, amplify every
# implementation's rounding), plus this fraction of the tensor's scale. float64 results must match
# the CPU op and the reference within float64 tolerances.
SCALE_FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}

def load_emulated():
    """Loads the emulated CUDA backend (csrc/emu/build.py builds it); False when it is absent."""
    if hasattr(torch.ops.hdas_emu, "mixed_node"):
        return True
    if not EMU_LIB.exists():
        return False
    torch.ops.load_library(str(EMU_LIB))
    return True


HAS_EMU = hdas_ext.native_available() and load_emulated()
if not HAS_EMU and os.environ.get("HDAS_REQUIRE_EMU") == "1":
    raise RuntimeError(f"HDAS_REQUIRE_EMU=1 but the emulated CUDA build {EMU_LIB} is absent: run python csrc/emu/build.py")
# The device backends as test parameters: the emulated one (marker cuda_emulated, skipped without
# its build) and a real GPU (marker cuda, skipped without one).
EMU = pytest.param("emu", marks=[pytest.mark.cuda_emulated, pytest.mark.skipif(
    not HAS_EMU, reason="emulated CUDA build absent (python csrc/emu/build.py builds it)")])
CUDA = pytest.param("cuda", marks=pytest.mark.cuda)


@contextlib.contextmanager
def emu_knobs(name, index64=False, device_tables=False, chunk_positions=0):
    """On the emulated backend, runs the block with the launchers' other paths forced on small
    tensors (int64 index math, tables in device memory, reductions in chunks of chunk_positions)."""
    if name != "emu":
        pytest.skip("the test knobs exist in the emulated build only")
    torch.ops.hdas_emu.set_test_knobs(index64, device_tables, chunk_positions)
    try:
        yield
    finally:
        torch.ops.hdas_emu.set_test_knobs(False, False, 0)


def backend(name):
    """(op namespace, device) of a device backend: 'cuda' or 'emu'."""
    return (torch.ops.hdas, "cuda") if name == "cuda" else (torch.ops.hdas_emu, "cpu")


@dataclass
class MixedNodeCase:
    xs: list
    w: torch.Tensor
    prims: list
    extras: list
    stride: int
    mode: str  # "batch" (batch statistics), "running" (eval) or "no_bn"
    grad: torch.Tensor
    rm: torch.Tensor = None
    rv: torch.Tensor = None
    fmt: torch.memory_format = torch.contiguous_format
    groups: int = 1  # > 1: partial channels (extras and statistics have C / groups channels)

    @property
    def dtype(self):
        return self.xs[0].dtype

    def args(self, device):
        to = lambda t: None if t is None else t.to(device)  # noqa: E731  (keeps the memory format)
        return ([to(x) for x in self.xs], to(self.w), self.prims, [to(y) for y in self.extras], self.stride,
                self.mode != "no_bn", self.mode != "running", to(self.rm), to(self.rv))


def mixed_node_case(E, prims, shape, stride=1, mode="batch", channels_last=False, dtype=torch.float64, seed=0,
                    groups=1):
    """Random inputs made in float64 and rounded to dtype once: every side sees the same values.
    shape: the inputs'; with groups > 1 the op mixes shape[1] / groups channels."""
    gen = torch.Generator().manual_seed(seed)
    N, Cx, H, W = shape
    C = Cx // groups
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype).contiguous(memory_format=fmt)  # noqa: E731
    K = sum(c in (EXTRA, ADD) for c in prims)
    Q = sum(c in (MAX, AVG) for c in prims)
    case = MixedNodeCase(xs=[rnd(N, Cx, H, W) for _ in range(E)],
                         w=torch.rand(E, len(prims), generator=gen, dtype=torch.float64).to(dtype),
                         prims=list(prims), extras=[rnd(N, C, Ho, Wo) for _ in range(E * K)], stride=stride,
                         mode=mode, grad=rnd(N, Cx, Ho, Wo), fmt=fmt, groups=groups)
    if mode == "running":
        case.rm = torch.randn(E, Q, C, generator=gen, dtype=torch.float64).to(dtype)
        case.rv = (torch.rand(E, Q, C, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    return case


def run_mixed_node(ops, device, case):
    """Forward and backward op outputs, on the CPU."""
    xs, w, prims, extras, stride, pool_bn, batch_stats, rm, rv = case.args(device)
    out, mean, invstd, var = ops.mixed_node(xs, w, prims, extras, stride, pool_bn, batch_stats, rm, rv, 1e-5,
                                            case.groups)
    gx, gw, ge = ops.mixed_node_backward(case.grad.to(device), xs, w, prims, extras, stride, pool_bn, batch_stats,
                                         mean, invstd, case.groups)
    return dict(out=out.cpu(), stats=[t.cpu() for t in (mean, invstd, var)], grad_inputs=[g.cpu() for g in gx],
                grad_w=gw.cpu(), grad_extras=[g.cpu() for g in ge], layout_ok=out.is_contiguous(memory_format=case.fmt)
                and all(g.is_contiguous(memory_format=case.fmt) for g in list(gx) + list(ge)))


def reference_mixed_node(case, dtype=torch.float64):
    """The reference (eager PyTorch) on the case's inputs in dtype: output and gradients."""
    leaves = [t.to(dtype).requires_grad_() for t in case.xs + case.extras + [case.w]]
    E = len(case.xs)
    xs, extras, w = leaves[:E], leaves[E:-1], leaves[-1]
    rm = None if case.rm is None else case.rm.to(dtype)
    rv = None if case.rv is None else case.rv.to(dtype)
    out = ref.mixed_node(xs, w, case.prims, extras, case.stride, pool_bn=case.mode != "no_bn",
                         training=case.mode != "running", running_mean=rm, running_var=rv, groups=case.groups)
    grads = torch.autograd.grad(out, leaves, case.grad.to(dtype), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    K = sum(c in (EXTRA, ADD) for c in case.prims)
    weighted = [case.prims[p] for p in range(len(case.prims)) if case.prims[p] in (EXTRA, ADD)]
    grad_extras = [g for i, g in enumerate(grads[E:-1]) if weighted[i % K] == EXTRA] if K else []
    return dict(out=out.detach(), grad_inputs=grads[:E], grad_w=grads[-1], grad_extras=grad_extras)


def agree(got, cpu, want, what, eager=None):
    """got (the device's) against the CPU op's result cpu, the float64 reference want and (outside
    float64) eager PyTorch's result in got's dtype."""
    if got.dtype == torch.float64:
        torch.testing.assert_close(got, cpu, msg=lambda m: f"{what} vs CPU op: {m}")
        torch.testing.assert_close(got, want, msg=lambda m: f"{what} vs reference: {m}")
        return
    assert got.dtype == cpu.dtype and got.shape == want.shape, f"{what}: {got.dtype} {got.shape} vs {want.shape}"
    err = (got.double() - want).abs().max().item()
    err_cpu = (cpu.double() - want).abs().max().item()
    err_eager = (eager.double() - want).abs().max().item()
    bound = 3 * max(err_cpu, err_eager) + SCALE_FLOOR[got.dtype] * want.abs().max().item() + 1e-12
    assert err <= bound, (f"{what}: error {err:.3g} against the reference, the CPU op's {err_cpu:.3g}, "
                          f"eager's {err_eager:.3g} (bound {bound:.3g})")


def check_mixed_node(name, case, label=""):
    """Runs the case on backend `name` and checks it against the CPU op and the reference."""
    ops, device = backend(name)
    got = run_mixed_node(ops, device, case)
    cpu = run_mixed_node(torch.ops.hdas, "cpu", case)
    want = reference_mixed_node(case)
    eager = want if case.dtype == torch.float64 else reference_mixed_node(case, case.dtype)
    assert got["layout_ok"], f"{label}: outputs not in the inputs' memory format"
    agree(got["out"], cpu["out"], want["out"], f"{label} out", eager["out"])
    for i, (a, b) in enumerate(zip(got["stats"], cpu["stats"])):  # batch or running statistics, in op math
        tol = {} if a.dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{label} statistics[{i}] vs CPU op: {m}")
    for key in ("grad_inputs", "grad_extras"):
        assert len(got[key]) == len(want[key]), f"{label} {key}: {len(got[key])} tensors, want {len(want[key])}"
        for i, (a, b, c, d) in enumerate(zip(got[key], cpu[key], want[key], eager[key])):
            agree(a, b, c, f"{label} {key}[{i}]", d)
    agree(got["grad_w"], cpu["grad_w"], want["grad_w"], f"{label} grad_w", eager["grad_w"])


@dataclass
class PairConcatCase:
    states: list
    w: torch.Tensor
    pairs: list
    grad: torch.Tensor
    flat: list = field(init=False)

    def __post_init__(self):
        self.flat = [v for p in self.pairs for v in p]


def pair_concat_case(T, pairs, shape, dtype=torch.float64, channels_last=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    N, C, H, W = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64).to(dtype).contiguous(memory_format=fmt)  # noqa: E731
    return PairConcatCase(states=[rnd(N, C, H, W) for _ in range(T)],
                          w=torch.rand(len(pairs), generator=gen, dtype=torch.float64).to(dtype),
                          pairs=list(pairs), grad=rnd(N, 2 * C, H, W))


def run_pair_concat(ops, device, case):
    states, w = [s.to(device) for s in case.states], case.w.to(device)
    out = ops.pair_concat(states, w, case.flat)
    gs, gw = ops.pair_concat_backward(case.grad.to(device), states, w, case.flat)
    return dict(out=out.cpu(), grad_states=[g.cpu() for g in gs], grad_w=gw.cpu())


def reference_pair_concat(case, dtype=torch.float64):
    leaves = [s.to(dtype).requires_grad_() for s in case.states] + [case.w.to(dtype).requires_grad_()]
    out = ref.pair_concat(leaves[:-1], leaves[-1], case.pairs)
    grads = torch.autograd.grad(out, leaves, case.grad.to(dtype), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    return dict(out=out.detach(), grad_states=grads[:-1], grad_w=grads[-1])


def check_pair_concat(name, case, label=""):
    ops, device = backend(name)
    got = run_pair_concat(ops, device, case)
    cpu = run_pair_concat(torch.ops.hdas, "cpu", case)
    want = reference_pair_concat(case)
    dtype = case.states[0].dtype
    eager = want if dtype == torch.float64 else reference_pair_concat(case, dtype)
    agree(got["out"], cpu["out"], want["out"], f"{label} out", eager["out"])
    for i, (a, b, c, d) in enumerate(zip(got["grad_states"], cpu["grad_states"], want["grad_states"],
                                         eager["grad_states"])):
        agree(a, b, c, f"{label} grad_states[{i}]", d)
    agree(got["grad_w"], cpu["grad_w"], want["grad_w"], f"{label} grad_w", eager["grad_w"])
