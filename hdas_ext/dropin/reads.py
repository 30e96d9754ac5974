"""What a MixedOp's own forward depends on besides its ops and its (x, weights), seen by running it
once on a probe: every attribute and global its Python code reads outside the ops (opcode tracing
of the frames of the module's own code, each read expressed from `self` or a module global so
that it can be read again at a call), what it changes, and which tensors it turns into Python
values (a torch function mode following what each tensor was computed from: x, the weights or
neither). Reads it cannot express, writes, and Python values taken from x make the module unsafe
to fuse; values taken from the weights mean its ops depend on the weights (hdas_ext.dropin.select)."""
import dis
import os
import sys
import sysconfig
import types
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

_OURS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(__file__) + os.sep, "<frozen")
_SITE = tuple(sysconfig.get_paths()[k] + os.sep for k in ("purelib", "platlib"))
_STDLIB = tuple(sysconfig.get_paths()[k] + os.sep for k in ("stdlib", "platstdlib"))
_LOCALS = ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_FAST_BORROW")
_ATTRS = ("LOAD_ATTR", "LOAD_METHOD")
_DYNAMIC = frozenset(("getattr", "hasattr", "setattr", "delattr", "vars", "globals", "locals", "eval", "exec",
                      "compile", "__import__"))
_TO_PYTHON = frozenset(("__bool__", "item", "__int__", "__float__", "__index__", "__complex__", "tolist", "numpy",
                        "__array__", "equal", "allclose", "is_nonzero"))
# Objects whose attributes are their type's (methods): never state of their own.
_VALUES = (torch.Tensor, bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset, type(None),
           torch.dtype, torch.device, range, slice, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
X, W = 1, 2  # what a tensor was computed from


@dataclass
class Observation:
    """One run of a module's forward. reads: {expression: value}, an expression being ("self",
    *attribute names) or ("global", module name, name, *attribute names); blind: why a read or a
    write cannot be followed; called: the indices of the ops run, in order; weight_values: the
    Python values taken from tensors computed from the weights, in order."""
    reads: dict = field(default_factory=dict)
    blind: list = field(default_factory=list)
    called: list = field(default_factory=list)
    weight_values: list = field(default_factory=list)


def observe(module, ops, run, x, weights):
    """run() (calling module(x, weights)) watched: an Observation."""
    obs = _Watcher(module, ops, x, weights)
    hooks = [op.register_forward_pre_hook(obs.enter) for op in ops] + \
            [op.register_forward_hook(obs.leave, always_call=True) for op in ops]
    previous = sys.gettrace()
    try:
        with obs.mode:
            sys.settrace(obs.call)
            try:
                run()
            finally:
                sys.settrace(previous)
    finally:
        for h in hooks:
            h.remove()
    return obs.result


def called_ops(ops, run):
    """(indices of the ops run, in order; run()'s result)."""
    index, called = {id(op): k for k, op in enumerate(ops)}, []
    hooks = [op.register_forward_pre_hook(lambda op, args: called.append(index[id(op)])) for op in ops]
    try:
        return called, run()
    finally:
        for h in hooks:
            h.remove()


class _Watcher:
    def __init__(self, module, ops, x, weights):
        self.result, self.depth, self.keep = Observation(), 0, []
        self.paths = {id(m): ("self", *p.split(".")) if p else ("self",) for p, m in module.named_modules()}
        self.index = {id(op): k for k, op in enumerate(ops)}
        self.known = dict(self.paths)  # id of an object read -> its expression
        self.mode = _Provenance(self, x, weights)

    def enter(self, op, args):
        if self.depth == 0:
            self.result.called.append(self.index[id(op)])
        self.depth += 1

    def leave(self, op, args, out):
        self.depth -= 1

    def call(self, frame, event, arg):
        if self.depth or _library(frame.f_code.co_filename):
            return None
        frame.f_trace_opcodes = True
        return self.opcode

    def opcode(self, frame, event, arg):
        if event != "opcode" or self.depth:
            return self.opcode
        step = _instructions(frame.f_code).get(frame.f_lasti)
        if step is not None:
            try:
                step(self, frame)
            except Exception:  # the instruction itself will raise; nothing was read
                pass
        return self.opcode

    def blind(self, why):
        if why not in self.result.blind:
            self.result.blind.append(why)

    def express(self, obj, steps, frame):
        """The expression of obj (the value of `steps` in frame), or None."""
        found = self.known.get(id(obj))
        if found is None and steps and steps[0][0] == "global" and all(s[0] == "attr" for s in steps[1:]):
            found = ("global", frame.f_globals.get("__name__"), steps[0][1], *(s[1] for s in steps[1:]))
        return found

    def read(self, expression, value):
        if expression[:2] == ("self", "training"):
            return  # the fused op runs both modes as proven
        self.result.reads.setdefault(expression, value)
        if not isinstance(value, (bool, int, float, str, type(None))):
            self.known.setdefault(id(value), expression)
            self.keep.append(value)


def _library(filename):
    """Whether a file is torch's, the drop-in's or the standard library's (not the module's code)."""
    return filename.startswith(_OURS) or (filename.startswith(_STDLIB) and not filename.startswith(_SITE))


def _evaluate(frame, steps):
    kind, name = steps[0][0], steps[0][1]
    if kind == "local":
        value = frame.f_locals[name]
    elif kind == "global":
        value = frame.f_globals[name] if name in frame.f_globals else frame.f_builtins[name]
    else:
        value = name
    for step in steps[1:]:
        if step[0] == "attr":
            value = getattr(value, step[1])
        else:
            value = value[step[2] if step[1] else frame.f_locals[step[2]]]
    return value


def _global(name):
    def step(watcher, frame):
        if name in _DYNAMIC:
            watcher.blind(f"it calls {name}() (attributes read by name at run time)")
        value = frame.f_globals[name] if name in frame.f_globals else frame.f_builtins[name]
        watcher.read(("global", frame.f_globals.get("__name__"), name), value)
    return step


def _attribute(steps, name):
    def step(watcher, frame):
        if steps is None:
            if not hasattr(torch.Tensor, name) and not hasattr(nn.Module, name):
                watcher.blind(f"it reads .{name} of an object it cannot follow")
            return
        obj = _evaluate(frame, steps)
        if isinstance(obj, _VALUES):
            return  # a method or attribute of its type (the value itself is read where it came from)
        where = watcher.express(obj, steps, frame)
        if where is None:
            if not isinstance(obj, (types.ModuleType, type)):
                watcher.blind(f"it reads .{name} of a {type(obj).__name__} it cannot follow")
            return
        watcher.read((*where, name), getattr(obj, name))
    return step


def _write(steps, name):
    def step(watcher, frame):
        obj = None if steps is None else _evaluate(frame, steps)
        if not isinstance(obj, torch.Tensor):
            watcher.blind(f"it sets .{name} (state the fused op would not change)")
    return step


def _global_write(name):
    def step(watcher, frame):
        watcher.blind(f"it sets the global {name}")
    return step


_TABLES = {}


def _instructions(code):
    """{offset: step} for the instructions of `code` that read or write state."""
    table = _TABLES.get(code)
    if table is None:
        ins = list(dis.get_instructions(code))
        table = {}
        for i, I in enumerate(ins):
            if I.opname == "LOAD_GLOBAL":
                table[I.offset] = _global(I.argval)
            elif I.opname in _ATTRS:
                table[I.offset] = _attribute(None if I.is_jump_target else _expression(ins, i - 1), I.argval)
            elif I.opname in ("STORE_ATTR", "DELETE_ATTR"):
                table[I.offset] = _write(None if I.is_jump_target else _expression(ins, i - 1), I.argval)
            elif I.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                table[I.offset] = _global_write(I.argval)
        _TABLES[code] = table
    return table


def _expression(ins, j):
    """The steps computing the value instruction j pushes (locals, globals, constants, attributes
    and subscripts by a local or a constant), or None."""
    if j < 0:
        return None
    I = ins[j]
    if I.opname in _LOCALS:
        return (("local", I.argval),)
    if I.opname == "LOAD_GLOBAL":
        return (("global", I.argval),)
    if I.opname == "LOAD_CONST":
        return (("const", I.argval),)
    if I.is_jump_target:
        return None
    if I.opname in ("COPY", "DUP_TOP") and (I.arg or 1) == 1:
        return _expression(ins, j - 1)
    if I.opname in _ATTRS:
        base = _expression(ins, j - 1)
        return base and base + (("attr", I.argval),)
    if I.opname == "BINARY_SUBSCR" and j >= 2 and not ins[j - 1].is_jump_target:
        index = ins[j - 1]
        if index.opname in _LOCALS or index.opname == "LOAD_CONST":
            base = _expression(ins, j - 2)
            return base and base + (("item", index.opname == "LOAD_CONST", index.argval),)
    return None


class _Provenance(TorchFunctionMode):
    """Follows what each tensor was computed from (X: the input, W: the weights), and notes the
    Python values the module's own code takes from tensors."""

    def __init__(self, watcher, x, weights):
        super().__init__()
        self.watcher, self.flags, self.keep = watcher, {id(x): X, id(weights): W}, [x, weights]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flags = 0
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor):
                flags |= self.flags.get(id(t), 0)
        if getattr(func, "__name__", None) in _TO_PYTHON:
            if not self.watcher.depth and flags & X:
                self.watcher.blind("it takes Python values from x (its result depends on x's values)")
            elif not self.watcher.depth and flags & W:
                self.watcher.result.weight_values.append(out)
        elif flags:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.flags[id(t)] = self.flags.get(id(t), 0) | flags
                    self.keep.append(t)
        return out
