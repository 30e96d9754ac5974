"""fuse_mixed_ops: the DARTS-family MixedOps in any model fused in place, each recognised by what it
computes and proven equal on a probe first."""
import inspect
import warnings
from collections import Counter, namedtuple
from dataclasses import dataclass, field

import torch
from torch import nn

from ..lean import NotLeanable
from ..lean.trace import structure_key
from ..nn import FusedMixedOp, FusedPartialMixedOp
from ..nn.conv_fused import conv_plan
from .adopt import adopted_class
from .probe import float64_copy, probe_device, probe_weights, probe_x, prove, same_eval_output
from .select import admit_weights
from .recognise import binds, classify, kernel_plan, op_lists, probe_channels, takes_x_and_weights, unfolded
from .cells import EdgeMix, edge_lists, mixing_methods, rewritten_class

Fused = namedtuple("Fused", "path kind k method", defaults=("forward",))
LeftAlone = namedtuple("LeftAlone", "path kind reason detail")

NOT_A_SUM = "its forward is not sum_k weights[k] * ops[k](x), nor that on partial channels"
META = "its tensors are on the meta device (nothing to run the probe on)"
NO_COPY = "it cannot be deep-copied for the probe"
CLASH = "it has an attribute of its own that the fused op would overwrite"
NO_SWAP = "its class cannot be changed in place"
PROBE_FAILED = "the probe itself failed on it"
NOT_LEAN = "the lean mode (recompute=True) cannot recompute its ops"
OTHER_METHOD = "it has no forward, and none of its forward* methods taking (x, weights) is the mix"
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
    as a MixedOp is."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_mixed_ops: model must be a torch.nn.Module, got {type(model).__name__}")
    for name, flag in (("report", report), ("recompute", recompute)):
        if not isinstance(flag, bool):
            raise TypeError(f"fuse_mixed_ops: {name} must be True or False, got {flag!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the probes' tensors are tiny: more threads only contend
    try:
        with torch.inference_mode(False), torch.enable_grad():  # the proof differentiates
            if not isinstance(model, FusedMixedOp) and _inspect(model) is not None:
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
        found = _inspect(module, proven, refused, recompute) if path else None  # the model: not a MixedOp
        if found is None:  # not a MixedOp: a cell that mixes op lists in its own code?
            _fuse_cell(module, path, result, proven, refused, recompute)
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
        found = _inspect(edge, proven, refused, recompute)
        if found is not None and _record(result, edge, f"{path}.{name}" if path else name, by, found, recompute):
            vars(ops)["_hdas_mix"] = edge  # not registered: the model's modules and state dict stay
            fused = True
    if fused and type(module) is own:
        try:
            module.__class__ = rewritten_class(own)
        except TypeError as e:
            result.left_alone.append(LeftAlone(path, kind, NO_SWAP, f"{type(e).__name__}: {e}"))
    return True


def adopt_in_place(module, own, list_name, plan, stride, k, guard=None, recompute=False, method="forward", convs=True):
    """module, now FusedMixedOp[own] (FusedPartialMixedOp[own] when k > 1) running `plan` in its
    `method` (its sep/dil convs through hdas::conv_candidates with convs), in the lean mode with
    recompute, its calls admitted by `guard` armed on it (None: a copy for the proof, run through
    _fused)."""
    module.__class__ = adopted_class(FusedPartialMixedOp if k > 1 else FusedMixedOp, own, method)
    module._ops_name = list_name
    labels = vars(module).get("primitives")
    module._set_plan(plan, stride, labels if isinstance(labels, (list, tuple)) and len(labels) == len(plan) else None)
    vars(module).pop("_conv", None), vars(module).pop("_conv_halves", None)  # a copy adopted before with convs
    if convs:
        module._set_convs()
    if k > 1:
        module.k = k
    module._set_recompute(recompute)  # also on a copy adopted before for another k: the path installed is the one proven
    if guard is not None:
        module._guard = guard.armed(module)
        if module._guard is None:
            raise ValueError("its forward's state cannot be read again from it")
    return module


def _inspect(module, proven=None, refused=None, recompute=False):
    """None if module is not MixedOp-like (no list of ops, or no forward(x, weights)); else
    (list name, plan, stride, guard, k, method) to fuse it with, or a LeftAlone saying why not. proven:
    structure key -> (list name, plan, stride, channels, k, guard, the guard armed on the module
    proven) of modules proven in full, filled here; one of the same structure and the same state
    is checked on the eval forward only. refused: structure key -> LeftAlone, modules whose proof
    failed: one of the same structure is left alone at once."""
    try:
        return _inspect_unguarded(module, proven, refused, recompute)
    except NotLeanable as e:
        return LeftAlone("", "", NOT_LEAN, str(e))
    except Exception as e:  # whatever a module holds, it is left alone rather than crash the call
        return LeftAlone("", "", PROBE_FAILED, f"{type(e).__name__}: {e}")


def _inspect_unguarded(module, proven, refused, recompute):
    lists = op_lists(module)
    if not lists:
        return None
    if type(module).forward is nn.Module.forward:
        return _mixes_in_other_methods(module, lists, proven, refused, recompute)
    if not takes_x_and_weights(module):
        return None
    return _inspect_method(module, lists, proven, refused, recompute, "forward")


def _inspect_method(module, lists, proven, refused, recompute, method):
    device = probe_device(module)
    if device.type == "meta":
        return LeftAlone("", "", META, "")
    if not any(_first_is_an_op(ops, device) for _, ops in lists):
        return None  # before copying the whole module: its lists hold no ops
    own, key = type(module), structure_key(module)
    key = key if key is None or method == "forward" else (method, key)
    if proven is not None and key in proven:
        list_name, (plan, convs), stride, C_op, k, guard, reference = proven[key]
        armed = guard.armed(module)
        active = admit_weights(guard.selection, probe_weights(len(plan), device)[0])
        view = _view(module, list_name, plan, stride, k, convs)
        if armed is not None and armed.same_values(reference) and active is not False and \
                same_eval_output(module, view, C_op, len(plan), k, active, method):
            return list_name, plan, stride, guard, k, method, convs
    if refused is not None and key in refused:
        return refused[key]
    try:
        probe = float64_copy(module)
    except Exception as e:
        return LeftAlone("", "", NO_COPY, f"{type(e).__name__}: {e}")
    if method != "forward":  # the proof calls probe(x, weights): its forward is the method
        own = probe.__class__ = _as_forward(own, method)
    found = _classify_ops(probe)
    if found is None:
        return None
    list_name, plan, stride, C_op = found
    # (plan, whether its sep/dil convs run through hdas::conv_candidates), tried in turn
    candidates = [(plan, True)] + ([(unfolded(plan), True)] if unfolded(plan) != plan else [])
    if conv_plan(getattr(probe, list_name), [p.code for p in plan], stride)[0]:
        candidates.append((plan, False))
    try:
        i, k, guard, why = prove(probe, [_fuser(own, list_name, *c, stride, recompute) for c in candidates], C_op,
                                 len(plan), device, list_name, stride)
    except NotLeanable as e:
        i, left = None, LeftAlone("", "", NOT_LEAN, str(e))
    else:
        left = LeftAlone("", "", NOT_A_SUM, why)
    if i is not None:
        reference = guard.armed(module)
        if proven is not None and key is not None and reference is not None:
            proven[key] = (list_name, candidates[i], stride, C_op, k, guard, reference)
        return list_name, candidates[i][0], stride, guard, k, method, candidates[i][1]
    if refused is not None and key is not None:
        refused[key] = left
    return left


def _mixes_in_other_methods(module, lists, proven, refused, recompute):
    """For a module holding ops without a forward: the first of its forward* methods taking (x,
    weights) proven to be the mix (AutoDL's forward_darts), as _inspect gives it; a LeftAlone
    naming its forward* methods if none is; None if it has none or its lists hold no ops."""
    own = type(module)
    names = sorted(n for n in dir(own) if n.startswith("forward") and n != "forward" and callable(getattr(own, n)))
    if not names or not any(_first_is_an_op(ops, probe_device(module)) for _, ops in lists):
        return None
    why = []
    for name in names:
        if not binds(getattr(module, name), 2):
            continue
        found = _inspect_method(module, lists, proven, refused, recompute, name)
        if not isinstance(found, LeftAlone):
            return found
        why.append(f"{name}: {found.reason}")
    signatures = ", ".join(f"{n}{inspect.signature(getattr(module, n))}" for n in names)
    return LeftAlone("", "", OTHER_METHOD, signatures + ("" if not why else " (" + "; ".join(why) + ")"))


_FORWARDS = {}


def _as_forward(own, method):
    """own with `method` as its forward, for a probe copy."""
    if (own, method) not in _FORWARDS:
        _FORWARDS[own, method] = type(f"{own.__name__}.{method}", (own,), {"forward": getattr(own, method),
                                                                            "__module__": own.__module__})
    return _FORWARDS[own, method]


def _first_is_an_op(modules, device):
    """Whether a float64 copy of modules[0] is an op on a probe input."""
    first = float64_copy(modules[0])
    return not isinstance(classify(first, probe_x(probe_channels([first]), device)), str)


def _view(module, list_name, plan, stride, k, convs):
    """A fused module running `plan` on module's own ops (shared, not copied)."""
    cls = adopted_class(FusedPartialMixedOp if k > 1 else FusedMixedOp, type(module))
    view = cls.__new__(cls)
    nn.Module.__init__(view)
    view._ops = getattr(module, list_name)
    view._set_plan(plan, stride)
    if convs:
        view._set_convs()
    if k > 1:
        view.k = k
    return view


def _fuser(own, list_name, plan, convs, stride, recompute):
    return lambda m, k: adopt_in_place(m, own, list_name, plan, stride, k, None, recompute, convs=convs)


def _classify_ops(probe):
    """(list name, plan, stride, channels) for the first of probe's ModuleLists whose every entry is
    an op of one stride on a probe input; None if none is."""
    for name, modules in op_lists(probe):
        C = probe_channels(modules)
        x = probe_x(C, probe_device(probe))
        found = [classify(op, x) for op in modules]
        if any(isinstance(f, str) for f in found) or len({s for s, _ in found}) != 1:
            continue
        return name, kernel_plan(modules, [p for _, p in found]), found[0][0], C
    return None


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
