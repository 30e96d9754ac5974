"""What each op of a MixedOp-like module computes, told by running it on a probe input (never by
its class or attribute names): the zero op, the identity, 3x3 max/avg pools (bare, or followed by
an affine-free BatchNorm in any wrapper), and anything else, which runs as a module. Each op is a
float64 copy that may be changed freely."""
import inspect
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..nn.checks import op_channels
from ..nn.plan import OpPlan


def op_lists(module):
    """(attribute name, ModuleList) of the module's direct children that may hold its ops: modules
    callable as op(x)."""
    return [(name, child) for name, child in module.named_children()
            if isinstance(child, nn.ModuleList) and len(child) > 0 and all(_takes(m, 1) for m in child)]


def takes_x_and_weights(module):
    """Whether module.forward can be called as forward(x, weights)."""
    return _takes(module, 2)


def _takes(module, n):
    return not isinstance(module, (nn.ModuleList, nn.ModuleDict)) and binds(module.forward, n)


def binds(function, n):
    """Whether function can be called with n positional arguments."""
    try:
        inspect.signature(function).bind(*[None] * n)
    except (TypeError, ValueError):
        return False
    return True


def probe_channels(modules):
    """The channel count the ops expect (the first conv's input or BatchNorm's width), else 4."""
    return op_channels(modules) or 4


def _record(calls, path, module, args, output):
    calls.append((path, module, args[0] if args else None, output))


def trace(op, x):
    """op(x) and the calls of its submodules in the order they finished: (path, module, input, output)."""
    calls = []
    handles = [m.register_forward_hook(partial(_record, calls, path)) for path, m in op.named_modules() if path]
    try:
        out = op(x)
    finally:
        for h in handles:
            h.remove()
    return out, calls


def seeded(fn, device, seed):
    """fn() with the global RNG seeded, and left as it was."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: it formats a stack per call
        if cuda:
            torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()].manual_seed(seed)
        return fn()


def _pool(code, x, stride):
    if code == ops.CODES["max_pool_3x3"]:
        return F.max_pool2d(x, 3, stride, 1)
    return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)


def _same(a, b):
    return isinstance(a, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def _only(calls, kind):
    """The one call of a module of exactly type `kind` among calls, or None (none or several)."""
    hits = [c for c in calls if type(c[1]) is kind]
    paths = {c[0] for c in hits}
    return hits[0] if len(hits) == 1 and len(paths) == 1 else None


def classify(op, x):
    """An OpPlan for op on the probe x [N, C, H, W] (op a float64 copy), or a string saying why op
    is not an op of a MixedOp (it fails on x, or changes its channels or shape in another way)."""
    op.eval()
    try:
        with torch.no_grad():
            out, calls = trace(op, x)
            op.train()
            train_a, train_calls = seeded(lambda: trace(op, x), x.device, 1)
            train_b = seeded(lambda: op(x), x.device, 2)
    except Exception as e:  # any failure: this is not an op of x
        return f"op {type(op).__name__} fails on x: {type(e).__name__}"
    N, C, H, W = x.shape
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or tuple(out.shape[:2]) != (N, C):
        return f"op {type(op).__name__} does not map [N, C, H, W] to [N, C, H', W']"
    stride = {H: 1, (H - 1) // 2 + 1: 2}.get(out.shape[2])
    if stride is None or out.shape[3] != (W - 1) // stride + 1:
        return f"op {type(op).__name__} has an output size other than stride 1 or 2 gives"
    label = type(op).__name__
    random = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in op.modules()) or not _same(train_a, train_b)
    if not any(True for _ in op.parameters()) and not random:
        found = _parameter_free(op, x, stride, out, calls, train_a)
        if found is not None:
            return stride, found
    plan = _module_plan(x, out, calls, label)
    return stride, plan if plan == _module_plan(x, train_a, train_calls, label) else OpPlan(ops.EXTRA, label, None, None)


def _parameter_free(op, x, stride, out, calls, train_out):
    """Plan of a parameter-free deterministic op that is a primitive the kernel computes, else None."""
    buffers = {id(b) for b in op.buffers() if b.is_floating_point()}
    if not buffers:
        if not out.any() and not train_out.any():
            return OpPlan(ops.CODES["none"], "none", None, None)
        if stride == 1 and torch.equal(out, x) and torch.equal(train_out, x):
            return OpPlan(ops.CODES["skip_connect"], "skip_connect", None, None)
    for name in ("max_pool_3x3", "avg_pool_3x3"):
        code = ops.CODES[name]
        pooled = _pool(code, x, stride)
        if not buffers and _same(out, pooled) and _same(train_out, pooled):
            return OpPlan(code, name, None, None)
        bn = _only(calls, nn.BatchNorm2d)
        if bn is None or bn[3] is not out or bn[1].affine or \
                buffers != {id(b) for b in bn[1].buffers() if b.is_floating_point()}:
            continue
        path, m = bn[0], bn[1]
        if _same(train_out, F.batch_norm(pooled, None, None, training=True, eps=m.eps)) and \
                _eval_pool_bn(op, m, x, pooled):
            return OpPlan(code, name, path, None)
    return None


def _eval_pool_bn(op, bn, x, pooled):
    """In eval mode, op normalises with bn's running statistics (set to random values for the check)."""
    if bn.running_mean is None:
        return True  # no buffers: batch statistics in both modes, checked already
    g = torch.Generator(device="cpu").manual_seed(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        op.eval()
        out = op(x)
    return _same(out, F.batch_norm(pooled, bn.running_mean, bn.running_var, training=False, eps=bn.eps))


def _module_plan(x, out, calls, label):
    """An op that runs as a module. Its weight folds into its BatchNorm2d whose output the probe
    shows is the op's output (that BN running once); its first step, a ReLU of x itself, may take a
    relu(x) shared with the other ops."""
    bn = [c for c in calls if type(c[1]) is nn.BatchNorm2d and c[3] is out]
    if len(bn) != 1 or sum(1 for c in calls if c[1] is bn[0][1]) != 1:
        return OpPlan(ops.EXTRA, label, None, None)
    first = calls[0]
    relu = first[0] if (type(first[1]) is nn.ReLU and not first[1].inplace and first[2] is x
                        and sum(1 for c in calls if c[1] is first[1]) == 1) else None
    return OpPlan(ops.ADD, label, bn[0][0], relu)


def kernel_plan(modules, plans):
    """The op plans adjusted to one kernel call: the kernel applies a BN to every pool or to none,
    with one eps and momentum, so pools with BNs of their own in any other case run as modules."""
    pools = [k for k, p in enumerate(plans) if p.code in (ops.CODES["max_pool_3x3"], ops.CODES["avg_pool_3x3"])]
    with_bn = [k for k in pools if plans[k].bn is not None]
    bns = [modules[k].get_submodule(plans[k].bn) for k in with_bn]
    settings = {(b.eps, b.momentum, b.track_running_stats, b.running_mean is None) for b in bns}
    if with_bn and (len(with_bn) != len(pools) or len(settings) > 1):
        return [OpPlan(ops.EXTRA, p.label, None, None) if k in with_bn else p for k, p in enumerate(plans)]
    return plans


def unfolded(plans):
    """The same plans with nothing folded or shared: every module op weighted by the kernel."""
    return [OpPlan(ops.EXTRA, p.label, None, None) if p.code == ops.ADD else p for p in plans]
