"""fuse_mixed_ops: the DARTS-family MixedOps in any model fused in place, each recognised by what it
computes and proven equal on a probe first (hdas_ext.dropin.inspection)."""
import warnings
from collections import Counter, namedtuple
from dataclasses import dataclass, field

import torch
from torch import nn

from ..lean import NotLeanable
from ..nn import FusedMixedOp
from .adopt import adopt_in_place
from .cells import EdgeMix, edge_lists, mixing_methods, rewritten_class
from .inspection import NOT_A_SUM, NOT_LEAN, LeftAlone, inspect_module

Fused = namedtuple("Fused", "path kind k method", defaults=("forward",))

CLASH = "it has an attribute of its own that the fused op would overwrite"
NO_SWAP = "its class cannot be changed in place"
CELL_MIX = "its methods mix op lists in code that cannot be rewritten"


@dataclass
class FuseReport:
    """What fuse_mixed_ops did: `fused` (path, class name, k: partial-channel groups, 1 for plain
    MixedOps, the method fused: forward, or e.g. forward_darts) and `left_alone` (path, class
    name, reason, detail) for modules that hold a list of ops and take (x, weights) or mix it in
    another forward* method but were not fused, and op lists a cell mixes that were not."""
    fused: list = field(default_factory=list)
    left_alone: list = field(default_factory=list)

    def reasons(self):
        """How many modules were left alone for each reason."""
        return Counter(entry.reason for entry in self.left_alone)

    def summary(self):
        parts = []
        for reason, count in self.reasons().items():
            e = next(e for e in self.left_alone if e.reason == reason)
            parts.append(f"{count} x {reason} (e.g. {e.path} ({e.kind}): {e.detail})")
        return (f"fused {len(self.fused)} MixedOp(s); left {len(self.left_alone)} MixedOp-like module(s) "
                f"as they are: " + "; ".join(parts))


def fuse_mixed_ops(model, *, report=False, recompute=False):
    """Fuses every DARTS-family MixedOp in `model` in place and returns how many it fused (or, with
    report=True, a FuseReport). A MixedOp is any module holding a ModuleList of ops (whatever the
    attribute is called) whose forward(x, weights) computes sum_k weights[k] * ops[k](x), or that
    on the first C/k channels with the rest passed and shuffled as PC-DARTS does. Each op is
    classified by what it computes on a probe (zero, identity, 3x3 pools bare or with an
    affine-free BN, anything else runs as a module), and each MixedOp is fused only after its fused
    form matched its own forward on float64 copies (outputs, gradients, buffers; training and eval;
    zero and negative weights). It then runs fused only for calls and states the proof covered (a
    guard: the call's form, what its forward read, the ops its weights choose), its own forward
    otherwise (see docs/drop-in.md). The module keeps its identity: its class becomes
    FusedMixedOp[its class] (FusedPartialMixedOp[...] for partial channels), so its state dict,
    attributes, methods and hooks stay; hooks on the ops the kernel computes (pools, their BNs) no
    longer fire. Modules left alone are summarised in one warning. recompute=True: the fused
    MixedOps, partial-channel ones included, run in the lean mode (see FusedMixedOp; the proof runs
    them in it, and one whose ops the lean mode cannot recompute is left alone).

    Two more shapes are reached: a module without forward whose forward* method (x, weights) is
    the mix (AutoDL's forward_darts) has that method fused; a cell whose own methods compute
    sum(op(x) * w for op, w in zip(ops, weights)) over its op lists (NAS-Bench-201's cells) has
    those sums rewritten to run each list's fused op (hdas_ext.dropin.cells), each list proven
    as a MixedOp is; so has a MixedOp whose forward adds more to that sum (DARTS-' auxiliary skip),
    the rest of its forward run as written."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_mixed_ops: model must be a torch.nn.Module, got {type(model).__name__}")
    for name, flag in (("report", report), ("recompute", recompute)):
        if not isinstance(flag, bool):
            raise TypeError(f"fuse_mixed_ops: {name} must be True or False, got {flag!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the probes' tensors are tiny: more threads only contend
    try:
        with torch.inference_mode(False), torch.enable_grad():  # the proof differentiates
            if not isinstance(model, FusedMixedOp) and inspect_module(model) is not None:
                raise ValueError("fuse_mixed_ops(model): model is itself a MixedOp; fuse_mixed_ops fuses the "
                                 "MixedOps inside a model (fuse the model that holds it, or build a FusedMixedOp)")
            result = _fuse_all(model, recompute)
    finally:
        torch.set_num_threads(threads)
    if result.left_alone:
        warnings.warn("fuse_mixed_ops: " + result.summary(), stacklevel=2)
    return result if report else len(result.fused)


def _fuse_all(model, recompute=False):
    result, proven, refused = FuseReport(), {}, {}
    for path, module in model.named_modules():
        if isinstance(module, FusedMixedOp):
            continue
        found = inspect_module(module, proven, refused, recompute) if path else None  # the model: not a MixedOp
        if found is None:  # not a MixedOp: a cell that mixes op lists in its own code?
            _fuse_cell(module, path, result, proven, refused, recompute)
            continue
        if isinstance(found, LeftAlone) and found.reason == NOT_A_SUM and \
                _fuse_sum_only(module, path, result, proven, refused, recompute):
            continue
        _record(result, module, path, type(module).__name__, found, recompute)
    return result


def _record(result, module, path, kind, found, recompute):
    """Adopts module as `found` says (or records why not) in result; whether it was fused."""
    if isinstance(found, LeftAlone):
        result.left_alone.append(found._replace(path=path, kind=kind))
        return False
    why = _swap(module, *found, recompute=recompute)
    if why is not None:
        result.left_alone.append(LeftAlone(path, kind, *why))
        return False
    result.fused.append(Fused(path, kind, found[4], found[5]))
    return True


def _fuse_sum_only(module, path, result, proven, refused, recompute):
    """A MixedOp whose forward is its ops' sum plus more (DARTS-' auxiliary skip on a reduction
    edge, a module with parameters and a BatchNorm): the sum in its source fused as a cell's sums
    are, the rest of its forward run as written. Whether it was."""
    if not mixing_methods(vars(type(module)).get("_hdas_cell", type(module)))[0]:
        return False
    trial = FuseReport()
    _fuse_cell(module, path, trial, proven, refused, recompute)
    if not trial.fused:
        return False
    result.fused += trial.fused
    result.left_alone += trial.left_alone
    return True


def _fuse_cell(module, path, result, proven, refused, recompute):
    """Fuses the op lists a cell mixes in its own methods (their sums rewritten); whether module
    is such a cell."""
    own = vars(type(module)).get("_hdas_cell", type(module))
    rewritten, failed = mixing_methods(own)
    if not rewritten and not failed:
        return False
    kind = own.__name__
    if not rewritten:
        result.left_alone.append(LeftAlone(path, kind, CELL_MIX, "; ".join(f"{n}: {why}" for n, why in failed.items())))
        return True
    by = f"ModuleList mixed by {kind}." + "/".join(rewritten)
    fused = False
    for name, ops in edge_lists(module):
        if "_hdas_mix" in vars(ops):
            continue  # fused before
        edge = EdgeMix(ops)
        found = inspect_module(edge, proven, refused, recompute)
        if found is not None and _record(result, edge, f"{path}.{name}" if path else name, by, found, recompute):
            vars(ops)["_hdas_mix"] = edge  # not registered: the model's modules and state dict stay
            fused = True
    if fused and type(module) is own:
        try:
            module.__class__ = rewritten_class(own)
        except TypeError as e:
            result.left_alone.append(LeftAlone(path, kind, NO_SWAP, f"{type(e).__name__}: {e}"))
    return True


# The attributes adopt_in_place sets: a module holding its own under these names is left alone.
_SETS = ("_ops_name", "_plan", "stride", "primitives", "codes", "_extra", "_folded", "_shares_relu", "_bn", "recompute",
         "_channels", "_state", "_guard", "_conv", "_conv_halves")


def _clash(module, list_name, plan, stride, k):
    """The first attribute of module's own that adopting it would overwrite, or None. Its own
    `stride` and `k` may be there with the same value, and `primitives` with one name per op."""
    names = _SETS + (("k",) if k > 1 else ()) + (("_ops",) if list_name != "_ops" else ())
    same = {"stride": stride, "k": k}
    for name in names:
        if name in module._modules or name in module._parameters or name in module._buffers:
            return name
        if any(name in vars(c) for c in type(module).__mro__ if c not in (nn.Module, object)):
            return name
        if name not in vars(module):
            continue
        mine = vars(module)[name]
        if name in same and mine == same[name]:
            continue
        if name == "primitives" and isinstance(mine, (list, tuple)) and len(mine) == len(plan):
            continue
        return name
    return None


def _swap(module, list_name, plan, stride, guard, k, method="forward", convs=True, recompute=False):
    """Adopts module in place; (reason, detail) if it cannot be."""
    name = _clash(module, list_name, plan, stride, k)
    if name is not None:
        return CLASH, repr(name)
    own, saved = type(module), dict(vars(module))
    try:
        adopt_in_place(module, own, list_name, plan, stride, k, guard, recompute, method, convs)
    except Exception as e:  # __class__ assignment refused (e.g. __slots__), or an attribute that refuses
        module.__class__ = own
        vars(module).clear()
        vars(module).update(saved)
        return (NOT_LEAN, str(e)) if isinstance(e, NotLeanable) else (NO_SWAP, f"{type(e).__name__}: {e}")
    return None
