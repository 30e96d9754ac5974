"""lean_apply: the autograd function that runs op programs keeping only their inputs, scales and
BatchNorm statistics, and recomputes them one op at a time in the backward."""
import torch
import torch.nn.functional as F

from .program import _Forward, _parts, _Replay, _run


# ---- the autograd function -------------------------------------------------------------------------
class _Plan:
    """The static part of one call: programs, parameter slots, which input each op reads."""

    def __init__(self, modules, keys, scaled):
        parts = [_parts(m) for m in modules]
        self.programs = [p for p, _ in parts]
        self.keys, self.scaled = keys, scaled  # keys[k]: tuple of input indices op k reads (concatenated)
        # Ops whose program starts with a ReLU share one relu(input) per distinct input.
        self.shared = [p[0][0] == "relu" for p in self.programs]
        self.slots = [s for _, slots in parts for s in slots]
        self.ranges, start = [], 0
        for _, slots in parts:
            self.ranges.append((start, start + len(slots)))
            start += len(slots)
        self.stochastic = any(kind == "dropout" for p in self.programs for kind, _ in p)
        self.last_use = {key: k for k, key in enumerate(keys)}


def _cat(parts):
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _forward(plan, xs, scales, params):
    """The ops' outputs, and per op what its recomputation needs: records and random state."""
    env = _Forward({(id(m), n): p for (m, n), p in zip(plan.slots, params)})
    device = xs[0].device
    bases, outs, records, rng = {}, [], [], []
    for k, steps in enumerate(plan.programs):
        key = plan.keys[k]
        if key not in bases:
            bases[key] = [_cat([xs[i] for i in key]), None]
        base = bases[key]
        if plan.shared[k]:
            if base[1] is None:
                base[1] = F.relu(base[0])
            x, steps = base[1], steps[1:]
        else:
            x = base[0]
        if plan.last_use[key] == k:
            del bases[key]
        start = len(env.records)
        rng.append(_rng_state(device) if plan.stochastic else None)
        out = _run(steps, x, scales[k] if plan.scaled[k] else None, env)
        outs.append(out.clone() if out is x else out)  # an identity's output must not be its input
        records.append(env.records[start:])
    return outs, records, rng


class _Lean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, n_in, *tensors):
        n_op = len(plan.programs)
        xs, scales, params = tensors[:n_in], tensors[n_in:n_in + n_op], tensors[n_in + n_op:]
        device = xs[0].device
        ctx.autocast = (device.type, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        outs, ctx.records, ctx.rng = _forward(plan, xs, scales, params)
        ctx.plan, ctx.n_in = plan, n_in
        ctx.save_for_backward(*tensors)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("lean mode (recompute=True): double backward (create_graph=True) is not supported")
        plan, n_in, n_op = ctx.plan, ctx.n_in, len(ctx.plan.programs)
        tensors = ctx.saved_tensors
        xs, scales, params = tensors[:n_in], tensors[n_in:n_in + n_op], tensors[n_in + n_op:]
        need = _needed(ctx, n_in + n_op)
        leaves = [p.detach().requires_grad_(n) for p, n in zip(params, need[n_in + n_op:])]
        env_params = {(id(m), n): p for (m, n), p in zip(plan.slots, leaves)}
        g_in, g_sc, g_par = [None] * n_in, [None] * n_op, [None] * len(params)
        bases = {}  # key -> [base leaf, relu leaf or None, gradient of base, gradient of relu]
        device_type, enabled, dtype = ctx.autocast
        device = xs[0].device
        for k, steps in enumerate(plan.programs):
            key = plan.keys[k]
            if grads[k] is not None:
                if key not in bases:
                    base = _cat([xs[i] for i in key]).detach()
                    bases[key] = [base.requires_grad_(any(need[i] for i in key)), None, None, None]
                b = bases[key]
                if plan.shared[k]:
                    if b[1] is None:
                        with torch.no_grad():
                            b[1] = F.relu(b[0]).requires_grad_(b[0].requires_grad)
                    x, steps, slot = b[1], steps[1:], 3
                else:
                    x, slot = b[0], 2
                scale = scales[k].detach().requires_grad_(need[n_in + k]) if plan.scaled[k] else None
                with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled), \
                        torch.random.fork_rng([device] if device.type == "cuda" else [], enabled=plan.stochastic):
                    if plan.stochastic:
                        _set_rng_state(device, ctx.rng[k])
                    y = _run(steps, x, scale, _Replay(env_params, ctx.records[k]))
                a, e = plan.ranges[k]
                wrt = ([x] if x.requires_grad else []) + ([scale] if scale is not None and scale.requires_grad else []) \
                    + [leaves[i] for i in range(a, e) if leaves[i].requires_grad]
                if wrt:
                    got = iter(torch.autograd.grad(y, wrt, grads[k], allow_unused=True))
                    if x.requires_grad:
                        b[slot] = _add(b[slot], next(got))
                    if scale is not None and scale.requires_grad:
                        g_sc[k] = next(got)
                    for i in range(a, e):
                        if leaves[i].requires_grad:
                            g_par[i] = _add(g_par[i], next(got))
                del y
            if plan.last_use[key] == k and key in bases:
                _input_grads(bases.pop(key), key, xs, g_in)
        return (None, None, *g_in, *g_sc, *g_par)


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _input_grads(b, key, xs, g_in):
    """The gradient of one op input, through its shared ReLU, split into the concatenated states."""
    base, relu, g_base, g_relu = b
    if g_relu is not None:
        g_base = _add(g_base, torch.ops.aten.threshold_backward(g_relu, relu.detach(), 0))
    if g_base is None:
        return
    splits = g_base.split([xs[i].shape[1] for i in key], dim=1) if len(key) > 1 else (g_base,)
    for i, g in zip(key, splits):
        g_in[i] = _add(g_in[i], g)


def _needed(ctx, n_fixed):
    """Which inputs' gradients the running backward uses: a weight step needs the parameters', an
    architecture step (autograd.grad w.r.t. the alphas) does not, and computing them anyway would
    cost a weight gradient per convolution. The parameters arrive as views, whose nodes the engine
    can be asked about (not leaves: it refuses those inside autograd.grad)."""
    need = list(ctx.needs_input_grad[2:])
    will = getattr(torch._C, "_will_engine_execute_node", None)
    if will is not None:
        for i, (node, _) in enumerate(ctx.next_functions[n_fixed:], n_fixed):
            if need[i] and node is not None:
                need[i] = will(node)
    return need


def _rng_state(device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device, state):
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


@torch.compiler.disable(reason="lean mode (recompute=True) runs its ops eagerly inside a compiled model, so that its "
                                "backward can recompute them; a full graph needs recompute=False")
def lean_apply(modules, inputs, scales=None):
    """[scales[k] * modules[k](inputs[k]) for k], keeping for the backward only the inputs, the
    scales and per-channel statistics (see the module docstring). inputs[k]: a tensor, or a tuple
    of tensors that the op reads concatenated along the channels. scales: None, or per module a
    0-d tensor or None."""
    modules = list(modules)
    if len(inputs) != len(modules):
        raise ValueError(f"lean_apply: expected one input per module ({len(modules)}), got {len(inputs)}")
    scales = [None] * len(modules) if scales is None else list(scales)
    if len(scales) != len(modules):
        raise ValueError(f"lean_apply: expected one scale per module ({len(modules)}), got {len(scales)}")
    xs, index, keys = [], {}, []
    for x in inputs:
        parts = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        for t in parts:
            if id(t) not in index:
                index[id(t)] = len(xs)
                xs.append(t)
        keys.append(tuple(index[id(t)] for t in parts))
    plan = _Plan(modules, keys, [s is not None for s in scales])
    params = [m._parameters[n] for m, n in plan.slots]
    if not torch.is_grad_enabled():
        return _forward(plan, xs, scales, params)[0]
    params = [p.view_as(p) if p.requires_grad else p for p in params]  # views: see _needed
    filler = xs[0].new_empty(())
    return list(_Lean.apply(plan, len(xs), *xs, *(filler if s is None else s for s in scales), *params))
