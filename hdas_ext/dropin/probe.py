"""The proof fuse_mixed_ops asks before it fuses a module: on float64 copies (the module itself and
the global RNG untouched), the fused copy gives the module's own forward(x, weights): outputs,
gradients of x, weights and every parameter, and the buffers after, in training mode (weights with
an exact zero and a negative entry, and the weight patterns its forward chooses its ops by) and eval
mode (softmax weights), each forward drawing the same random numbers, every call admitted by the
guard that records what the forward read (hdas_ext.dropin.guards). A module of the same structure
and state as one proven so is checked on its eval forward."""
import copy

import torch

from ..lean import NotLeanable
from .guards import Guard
from .reads import called_ops, observe
from .recognise import seeded
from .select import choose

MAX_K = 8  # partial-channel groups tried
SIZE = 8   # probe planes are SIZE x SIZE


def float64_copy(module):
    return copy.deepcopy(module).to(torch.float64)


def probe_device(module):
    t = next(iter(module.state_dict(keep_vars=True).values()), None)
    return torch.device("cpu") if t is None else t.device


def probe_x(C, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, C, SIZE, SIZE, generator=g, dtype=torch.float64).to(device)


def probe_weights(P, device):
    g = torch.Generator().manual_seed(1)
    soft = torch.softmax(torch.randn(P, generator=g, dtype=torch.float64), 0)
    sparse = soft.clone()
    sparse[-1] = 0.0   # pruned or sparse methods: exact zeros
    sparse[0] = -0.25  # a negative weight tells a weight folded into a BN from one applied after a ReLU
    return soft.to(device), sparse.to(device)


def _why(e):
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _check(name, got, want):
    """Raises unless got equals want to float64 rounding (differences in summation order only)."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise AssertionError(f"{name}: shape {list(getattr(got, 'shape', []))} against {list(want.shape)}")
    if not torch.allclose(got.double(), want.double(), rtol=1e-9, atol=1e-10, equal_nan=True):
        diff = (got.double() - want.double()).abs().max().item()
        raise AssertionError(f"{name}: differs by up to {diff:.3g}")


def same_eval_output(module, view, C_op, P, k, active, method="forward"):
    """Whether `view` (a fused module sharing module's ops, running `active`) gives module's
    output (its `method`: forward, module(x, w)) in eval mode on a probe in module's own dtype,
    both left in the modes they were in."""
    run = module if method == "forward" else getattr(module, method)
    state = next(iter(module.state_dict(keep_vars=True).values()), None)
    dtype, device = (torch.float32, torch.device("cpu")) if state is None else (state.dtype, state.device)
    x, w = probe_x(k * C_op, device).to(dtype), probe_weights(P, device)[0].to(dtype)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        view.eval()
        with torch.no_grad():
            got, want = seeded(lambda: view._fused(x, w, active), device, 0), seeded(lambda: run(x, w), device, 0)
        # torch.testing.assert_close's float tolerances (low precision: the fused op accumulates in
        # float32, an eager sum in the dtype itself)
        rtol, atol = {torch.float64: (1e-7, 1e-7), torch.float32: (1.3e-6, 1e-5)}.get(dtype, (2e-2, 2e-2))
        return got.shape == want.shape and torch.allclose(got, want, rtol=rtol, atol=atol)
    except Exception:  # the module's own forward failed on the probe
        return False
    finally:
        for m, mode in modes:
            m.training = mode


def prove(module, fusers, C_op, P, device, list_name, stride):
    """(i, k, guard, None) when fusers[i](copy, k) matches `module` (a float64 copy that may change)
    in every check, else (None, None, None, why not). fusers: ways to fuse a copy, tried in turn. k:
    the channel groups in 1..MAX_K for which the fused copy gives the module's output in eval mode
    on x with k*C_op channels (k = 1: sum_k weights[k] * ops[k](x); k > 1: partial channels). guard:
    what the module's forward read and how its weights choose its ops (hdas_ext.dropin.guards), not
    yet armed."""
    ops = getattr(module, list_name)
    soft, sparse = probe_weights(P, device)
    saved = copy.deepcopy(module.state_dict())
    first, k, why = _find_k(module, ops, fusers, C_op, P, device, soft)
    if k is None:
        return None, None, None, why
    seen, x = [], probe_x(k * C_op, device, seed=2)

    def watched(w, training=True):
        module.train(training)
        with torch.no_grad():
            seen.append(observe(module, ops, lambda: seeded(lambda: module(x, w), device, 0), x, w))
        return seen[-1]
    try:
        watched(soft, training=False)
        selection, checks, why = choose(watched, P, soft, device)
    except Exception as e:
        selection, why = None, f"its forward fails on the probe in training mode: {_why(e)}"
    why = why or next((b for obs in seen for b in obs.blind), None)
    if why is not None:
        return None, None, None, why
    guard = Guard(k * C_op, P, k > 1 and stride == 2, selection, {e: None for obs in seen for e in obs.reads})
    cases = [(True, n, w) for n, w in (checks or [("sparse weights", sparse)])]
    cases.append((False, "soft weights", soft))
    for i in range(first, len(fusers)):
        module.load_state_dict(saved)  # as before the watched runs and the last candidate's steps
        fused = fusers[i](copy.deepcopy(module), k)
        fused._guard = guard.armed(fused)
        if fused._guard is None:
            return None, None, None, "its forward reads state that a copy of it lacks"
        failed = _verify(module, fused, x, cases, device)
        if failed is None:
            return i, k, guard, None
        why = why or failed
    return None, None, None, why


def _find_k(module, ops, fusers, C_op, P, device, soft):
    """(index of the first fuser whose copy gives module's eval output, k, None), else (None,
    None, why not)."""
    fused, why = [None] * len(fusers), None
    module.eval()
    for k in range(1, MAX_K + 1):
        x = probe_x(k * C_op, device)
        try:
            with torch.no_grad():
                called, out = called_ops(ops, lambda: seeded(lambda: module(x, soft), device, 0))
        except Exception as e:  # the module's own forward may fail on a wrong k
            why = why or _why(e)
            continue
        active = None if sorted(called) == list(range(P)) else tuple(sorted(set(called)))
        for i, fuse in enumerate(fusers):
            try:
                fused[i] = fuse(fused[i] if fused[i] is not None else copy.deepcopy(module), k).eval()
                with torch.no_grad():
                    _check("output", seeded(lambda: fused[i]._fused(x, soft, active), device, 0), out)
                return i, k, None
            except NotLeanable:
                raise  # the lean mode cannot run these ops: a reason of its own, whatever k
            except Exception as e:
                why = why or _why(e)
    return None, None, why


def _verify(module, fused, x, cases, device):
    for training, name, w in cases:
        module.train(training)
        fused.train(training)
        mode = "training" if training else "eval"
        try:
            if fused._guard.admit(fused, (x, w), {}) is False:
                raise AssertionError("the guard refuses the probe's own call")
            _same_step(module, fused, x, w, device)
            got = dict(fused.named_buffers())
            for buffer, want in module.named_buffers():
                _check(f"buffer {buffer}", got.get(buffer), want)
        except Exception as e:
            return f"{mode} mode, {name}: {_why(e)}"
    return None

def _step(module, x, w, device):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    params = [p for p in module.parameters() if p.requires_grad]
    out = seeded(lambda: module(x, w), device, 3)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype).to(device)
    return out.detach(), torch.autograd.grad(out, [x, w, *params], g, allow_unused=True)


def _same_step(eager, fused, x, w, device):
    with torch.enable_grad():
        want, want_grads = _step(eager, x, w, device)
        got, got_grads = _step(fused, x, w, device)
    _check("output", got, want)
    names = ["x", "weights"] + [n for n, p in eager.named_parameters() if p.requires_grad]
    for name, a, b in zip(names, got_grads, want_grads):
        if (a is None) != (b is None):
            raise AssertionError(f"gradient of {name}: {'none' if a is None else 'one'} fused, "
                                 f"{'none' if b is None else 'one'} in the module's own forward")
        if a is not None:
            _check(f"gradient of {name}", a, b)
