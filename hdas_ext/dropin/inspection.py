"""Whether a module is a DARTS-family MixedOp and how to fuse it: its list of ops, the kernel plan,
the method that mixes them, proven equal on a float64 probe copy first; else why it is left alone."""
import inspect
from collections import namedtuple

from torch import nn

from ..lean import NotLeanable
from ..lean.trace import structure_key
from ..nn.conv_fused import conv_plan
from .adopt import adopt_in_place, adopted_class, fused_base, install_plan
from .probe import float64_copy, probe_device, probe_weights, probe_x, prove, same_eval_output
from .recognise import binds, classify, kernel_plan, op_lists, probe_channels, takes_x_and_weights, unfolded
from .select import admit_weights

LeftAlone = namedtuple("LeftAlone", "path kind reason detail")

NOT_A_SUM = "its forward is not sum_k weights[k] * ops[k](x), nor that on partial channels"
META = "its tensors are on the meta device (nothing to run the probe on)"
NO_COPY = "it cannot be deep-copied for the probe"
PROBE_FAILED = "the probe itself failed on it"
NOT_LEAN = "the lean mode (recompute=True) cannot recompute its ops"
OTHER_METHOD = "it has no forward, and none of its forward* methods taking (x, weights) is the mix"


def inspect_module(module, proven=None, refused=None, recompute=False):
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
    cls = adopted_class(fused_base(k), type(module))
    view = cls.__new__(cls)
    nn.Module.__init__(view)
    view._ops = getattr(module, list_name)
    install_plan(view, plan, stride, k, convs)
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
