"""Cells that mix their edges' ops in their own code (NAS-Bench-201's search cells:
`sum(layer(x) * w for layer, w in zip(self.edges[key], weights))`): each such sum in the cell's
methods is found in their source and rewritten to run the edge's fused op, whose forward is that
same sum over one op list (EdgeMix), proven as any MixedOp is. The rewritten methods fall back to
the original expression for a list with no fused op, and the fused op to the sum itself for a call
its guard refuses."""
import ast
import builtins
import copy
import functools
import linecache
import types

from torch import nn

from .recognise import op_lists

# A term's operands and the lists mixed must be reads (names, attributes, subscripts, constants,
# f-strings and arithmetic of reads, no calls): evaluated once instead of once per op, or again on
# the fallback, they give the same.
_READS = (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Tuple, ast.Slice, ast.Load, ast.JoinedStr,
          ast.FormattedValue, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)


class EdgeMix(nn.Module):
    """The sum a cell computes over one edge's op list, as a MixedOp: forward(x, weights) is
    sum(op(x) * w for op, w in zip(ops, weights)). It holds the cell's list itself (not copied)."""

    def __init__(self, ops):
        super().__init__()
        self._ops = ops

    def forward(self, x, weights):
        return sum(op(x) * w for op, w in zip(self._ops, weights))


def mix(ops, weights, x, original):
    """What a rewritten cell runs for each matched sum: the list's fused op on (x, weights), or
    original() (the sum as written) for a list that has none, or whose fused op holds another
    list (a replica or shallow copy) or another number of ops."""
    fused = vars(ops).get("_hdas_mix") if isinstance(ops, nn.ModuleList) else None
    if fused is None or fused._ops is not ops or len(ops) != len(fused._plan):
        return original()
    fused.training = ops.training  # it is outside the model's modules: model.train()/eval() set its list only
    return fused(x, weights)


def _is_read(node):
    return all(isinstance(n, _READS) for n in ast.walk(node))


def _term(elt, op, w):
    """x when elt is op(x) * w or w * op(x) (x a read that names neither op nor w), else None."""
    if not (isinstance(elt, ast.BinOp) and isinstance(elt.op, ast.Mult)):
        return None
    for call, weight in ((elt.left, elt.right), (elt.right, elt.left)):
        if isinstance(weight, ast.Name) and weight.id == w and isinstance(call, ast.Call) and \
                isinstance(call.func, ast.Name) and call.func.id == op and len(call.args) == 1 and \
                not call.keywords and _is_read(call.args[0]) and \
                not {n.id for n in ast.walk(call.args[0]) if isinstance(n, ast.Name)} & {op, w}:
            return call.args[0]
    return None


def _match(node):
    """(ops, weights, x) expressions of sum(op(x) * w for op, w in zip(ops, weights)) (a generator
    or a list comprehension, either operand order), else None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sum"
            and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], (ast.GeneratorExp, ast.ListComp))):
        return None
    comp = node.args[0]
    if len(comp.generators) != 1:
        return None
    gen = comp.generators[0]
    it = gen.iter
    if gen.ifs or gen.is_async or not (isinstance(gen.target, ast.Tuple) and len(gen.target.elts) == 2 and
                                       all(isinstance(e, ast.Name) for e in gen.target.elts)):
        return None
    if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip" and
            len(it.args) == 2 and not it.keywords and all(_is_read(a) for a in it.args)):
        return None
    a, b = (e.id for e in gen.target.elts)
    for (op, w), (ops, weights) in (((a, b), it.args), ((b, a), it.args[::-1])):
        x = _term(comp.elt, op, w)
        if x is not None and op != w:
            return ops, weights, x
    return None


class _Rewrite(ast.NodeTransformer):
    def __init__(self):
        self.found = 0

    def visit_Call(self, node):
        self.generic_visit(node)
        found = _match(node)
        if found is None:
            return node
        self.found += 1
        original = ast.Lambda(ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]), node)
        call = ast.Call(ast.Name("__hdas_mix__", ast.Load()), [*found, original], [])
        return ast.copy_location(call, node)


@functools.lru_cache(maxsize=64)
def _parse(filename, text):
    return ast.parse(text, filename)


def _definition(function):
    """The ast of function's def, found in its whole file (a method's source alone may not parse:
    a comment at column 0 in its body), or None."""
    code = function.__code__
    lines = linecache.getlines(code.co_filename, function.__globals__)
    try:
        tree = _parse(code.co_filename, "".join(lines)) if lines else None
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.FunctionDef) and node.name == function.__name__ and \
                (node.decorator_list[0] if node.decorator_list else node).lineno == code.co_firstlineno:
            return node
    return None


def rewrite(function):
    """(the function with each matched sum rewritten to mix(...), how many), or (None, why not),
    or (None, None) if it has no such sum (or no source to find one in)."""
    found = _definition(function)
    if found is None:
        return None, None
    fn = copy.deepcopy(found)
    visitor = _Rewrite()
    visitor.visit(fn)
    if not visitor.found:
        return None, None
    if fn.decorator_list:
        return None, "it is decorated"
    code = function.__code__
    if set(code.co_freevars) - {"__class__"}:
        return None, f"it reads variables of an enclosing function ({', '.join(code.co_freevars)})"
    shadowed = [n for n in ("sum", "zip") if n in function.__globals__ and function.__globals__[n] is not vars(builtins)[n]]
    if shadowed:
        return None, f"its module redefines {', '.join(shadowed)}"
    # A maker binds __hdas_mix__ (and __class__, for super()) as closure variables: the module's
    # globals are used as they are, never written to.
    maker = ast.FunctionDef("__maker__", ast.arguments(posonlyargs=[], args=[ast.arg("__hdas_mix__"), ast.arg("__class__")],
                                                       kwonlyargs=[], kw_defaults=[], defaults=[]),
                            [fn, ast.Return(ast.Name(fn.name, ast.Load()))], [], lineno=1)
    module = ast.fix_missing_locations(ast.Module([maker], []))  # fn keeps its lines: tracebacks point there
    space = {}
    exec(compile(module, code.co_filename, "exec"), function.__globals__, space)
    new = space["__maker__"](mix, _owner(function))
    new.__qualname__, new.__doc__, new.__module__ = function.__qualname__, function.__doc__, function.__module__
    new.__defaults__, new.__kwdefaults__ = function.__defaults__, function.__kwdefaults__
    return new, visitor.found


def _owner(function):
    cells = dict(zip(function.__code__.co_freevars, function.__closure__ or ()))
    return cells["__class__"].cell_contents if "__class__" in cells else None


_CLASSES = {}


def mixing_methods(own):
    """{name: (rewritten function, sums matched)} of own's methods that mix op lists, and {name: why
    not} of those that would but cannot be rewritten. Cached per class."""
    if own not in _CLASSES:
        done, failed, seen = {}, {}, set()
        for cls in own.__mro__:
            if cls in (nn.Module, object) or cls.__module__.startswith("torch."):
                continue
            for name, value in vars(cls).items():
                if name in seen:  # overridden in a subclass
                    continue
                seen.add(name)
                if not isinstance(value, types.FunctionType):
                    continue
                try:
                    new, found = rewrite(value)
                except Exception:  # whatever user code holds, fuse_mixed_ops leaves it alone rather than crash
                    new, found = None, None
                if new is not None:
                    done[name] = (new, found)
                elif found is not None:
                    failed[name] = found
        _CLASSES[own] = done, failed
    return _CLASSES[own]


_REWRITTEN = {}


def rewritten_class(own):
    """own with its mixing methods rewritten (a subclass named as own, picklable as one)."""
    if own not in _REWRITTEN:
        methods = {name: new for name, (new, _) in mixing_methods(own)[0].items()}
        _REWRITTEN[own] = type(own.__name__, (own,), {**methods, "__module__": own.__module__, "_hdas_cell": own,
                                                      "__reduce_ex__": _reduce_ex})
    return _REWRITTEN[own]


def new_rewritten(own):
    cls = rewritten_class(own)
    return cls.__new__(cls)


def _reduce_ex(obj, protocol):
    _, _, *rest = object.__reduce_ex__(obj, max(protocol, 2))
    return (new_rewritten, (obj._hdas_cell,), *rest)


def edge_lists(module):
    """(path, ModuleList) of the lists a cell may mix: its ModuleList children and the ModuleLists
    held in its ModuleDict / ModuleList children, each of modules callable as op(x)."""
    found = list(op_lists(module))
    for name, child in module.named_children():
        if isinstance(child, (nn.ModuleDict, nn.ModuleList)):
            found += [(f"{name}.{key}", lst) for key, lst in op_lists(child)]
    return found
