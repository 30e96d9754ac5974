"""The guard of an adopted MixedOp: the fused forward runs only for a call and a state the proof
covered (positional (x, weights) of the proven kinds; every attribute and global the module's own
forward read during the proof as it was then; a weight pattern the proof covered), and says which
ops run (hdas_ext.dropin.select). Any other call runs the module's own forward."""
import builtins
import copy
import sys
import types

import torch
from torch import nn

from .select import admit_weights

EQ, TENSOR, TYPE, IS, FUNC = range(5)
_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_MAX_SNAPSHOT = 1 << 16  # elements of a tensor kept to recognise it after a copy


def _plain(v, budget=1000):
    if isinstance(v, _PLAIN):
        return True
    if isinstance(v, (tuple, list, set, frozenset)) and len(v) <= budget:
        return all(_plain(e, budget) for e in v)
    if isinstance(v, dict) and len(v) <= budget:
        return all(_plain(k, budget) and _plain(e, budget) for k, e in v.items())
    return False


def resolve(module, expression):
    """The value of a read's expression (see hdas_ext.dropin.reads) for `module` now."""
    if expression[0] == "self":
        value, names = module, expression[1:]
    else:
        name = expression[2]
        g = sys.modules[expression[1]].__dict__
        value, names = g[name] if name in g else vars(builtins)[name], expression[3:]
    for name in names:
        value = getattr(value, name)
    return value


def _entry(expression, value):
    """(expression, kind, expected) for a value read."""
    if isinstance(value, torch.Tensor):
        snapshot = value.detach().clone() if value.numel() <= _MAX_SNAPSHOT else None
        return [expression, TENSOR, (value, value._version, snapshot)]
    if _plain(value):
        return [expression, EQ, copy.deepcopy(value)]
    if isinstance(value, types.MethodType):
        return [expression, FUNC, value.__func__]
    if isinstance(value, nn.Module) or (expression[0] == "self" and not isinstance(value, (type, types.ModuleType,
                                                                                        types.FunctionType))):
        return [expression, TYPE, type(value)]
    return [expression, IS, value]


class Guard:
    """Admits a call of an adopted module to the fused forward, or not. channels: x's channels;
    P: the number of ops; even: partial channels at stride 2 (H and W even); selection: how the
    weights choose the ops (hdas_ext.dropin.select); reads: the expressions the module's forward
    read in the proof, armed with the module's values (arm)."""

    def __init__(self, channels, P, even, selection, reads):
        self.channels, self.P, self.even, self.selection = channels, P, even, selection
        self.reads = tuple(reads)
        self.entries = None

    def armed(self, module):
        """A guard like this one expecting the module's current values, or None if one cannot be read."""
        guard = Guard(self.channels, self.P, self.even, self.selection, self.reads)
        try:
            guard.entries = [_entry(e, resolve(module, e)) for e in self.reads]
        except Exception:
            return None
        return guard

    def same_values(self, other):
        """Whether two armed guards expect equal plain values and tensor contents."""
        for (_, kind, a), (_, _, b) in zip(self.entries, other.entries):
            if kind == EQ and a != b:
                return False
            if kind == TENSOR and (a[2] is None or b[2] is None or a[2].shape != b[2].shape
                                   or not torch.equal(a[2].cpu().to(b[2].dtype), b[2].cpu())):
                return False
        return True

    def admit(self, module, args, kwargs):
        """False: run the module's own forward. Else the ops to run: None for all, or a tuple of
        their indices."""
        if kwargs or len(args) != 2 or self.entries is None:
            return False
        x, w = args
        if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
            return False
        shape = x.shape
        if len(shape) != 4 or shape[1] != self.channels or not shape[0] or w.shape != (self.P,) or \
                not x.is_floating_point() or not w.is_floating_point() or w.device != x.device:
            return False
        if self.even and (shape[2] % 2 or shape[3] % 2):
            return False
        ref = module._state_tensor()
        if ref is not None and (ref.device != x.device or
                                (ref.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type))):
            return False
        return self._state_holds(module) and admit_weights(self.selection, w)

    def _state_holds(self, module):
        for entry in self.entries:
            expression, kind, expected = entry
            try:
                value = resolve(module, expression)
            except Exception:
                return False
            if kind == EQ:
                if value is not expected and value != expected:
                    return False
            elif kind == TENSOR:
                if not self._same_tensor(entry, value):
                    return False
            elif expected is None:  # after a copy: the code and classes are those now
                entry[2] = value.__func__ if kind == FUNC else type(value) if kind == TYPE else value
            elif (value.__func__ if kind == FUNC else type(value) if kind == TYPE else value) is not expected:
                return False
        return True

    @staticmethod
    def _same_tensor(entry, value):
        ref, version, snapshot = entry[2]
        if value is ref and value._version == version:
            return True
        if snapshot is None or not isinstance(value, torch.Tensor) or value.shape != snapshot.shape or \
                not torch.equal(value.detach(), snapshot.to(value.device, value.dtype)):
            return False
        entry[2] = (value, value._version, snapshot)  # the same values (a copy, a replica, model.half()): recognised
        return True

    def __getstate__(self):
        """Copies and pickles keep the plain values and tensor contents; the code, classes and
        tensors are taken as they are at the first call after."""
        state = dict(vars(self))
        if self.entries is not None:
            state["entries"] = [[e, k, None if k in (IS, FUNC, TYPE) else (None, -1, v[2]) if k == TENSOR else v]
                                for e, k, v in self.entries]
        return state
