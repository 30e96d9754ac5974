"""Safe parsing of genotype strings (published namedtuple reprs or JSON) and JSON output.

Never uses ``eval``: the text is parsed with :mod:`ast` and only literal nodes are accepted
(str/int constants, lists, tuples, ``range(...)`` and calls of Genotype/StageGenotype/StageCellsGenotype).
"""
import ast
import json
import os

from .library import get, names
from .types import GENOTYPE_TYPES, TYPE_NAMES, StageGenotype, cell_nodes, flatten_nodes, validate


_MAX_RANGE = 1024  # far beyond any cell or stage; keeps range(2, 10**9) from filling memory


class _Range(list):
    """A concat written as range(...); only a marker so error messages can say so."""


def _where(node):
    return f"line {node.lineno}, column {node.col_offset + 1}"


def _literal(node):
    """Convert an AST node made only of allowed literals into Python values."""
    if isinstance(node, ast.Constant) and (isinstance(node.value, str) or
                                           (isinstance(node.value, int) and not isinstance(node.value, bool))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name == "range":
            if node.keywords or not 1 <= len(node.args) <= 3:
                raise ValueError(f"{_where(node)}: range() takes 1 to 3 positional int arguments")
            args = [_literal(a) for a in node.args]
            if not all(type(a) is int for a in args):
                raise ValueError(f"{_where(node)}: range() arguments must be ints, got {args}")
            if len(args) == 3 and args[2] == 0:
                raise ValueError(f"{_where(node)}: range() step must not be zero")
            span = range(*args)
            if len(span) > _MAX_RANGE:  # measured before it is expanded
                raise ValueError(f"{_where(node)}: range() spans {len(span)} states; a concat lists at most "
                                 f"{_MAX_RANGE}")
            return _Range(span)
        if name in TYPE_NAMES:
            return _build_call(name, node)
        raise ValueError(f"{_where(node)}: call of {name!r} not allowed; expected "
                         f"{', '.join(TYPE_NAMES)} or range")
    raise ValueError(f"{_where(node)}: unexpected {type(node).__name__} expression "
                     f"{ast.unparse(node)!r}; only str/int literals, "
                     "lists, tuples, range() and genotype calls are allowed")


def _build_call(name, node):
    fields = TYPE_NAMES[name]._fields
    if len(node.args) > len(fields):
        raise ValueError(f"{_where(node)}: {name} takes {len(fields)} fields, got {len(node.args)} positional")
    values = {}
    for field, arg in zip(fields, node.args):
        values[field] = (_literal(arg), arg)
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError(f"{_where(kw.value)}: ** arguments are not allowed")
        if kw.arg not in fields:
            raise ValueError(f"{_where(kw.value)}: {name} has no field {kw.arg!r}; fields are {', '.join(fields)}")
        if kw.arg in values:
            raise ValueError(f"{_where(kw.value)}: field {kw.arg!r} given twice")
        values[kw.arg] = (_literal(kw.value), kw.value)
    missing = [f for f in fields if f not in values]
    if missing:
        raise ValueError(f"{_where(node)}: {name} is missing field(s) {', '.join(missing)}")
    try:
        return build(name, {f: v for f, (v, _) in values.items()})
    except ValueError as e:
        # point at the field the message names (messages start with the field, e.g. "DAG2[3]: ...")
        msg = str(e)
        named = [f for f in values if msg.startswith(f) and not msg[len(f):len(f) + 1].isalnum()
                 and msg[len(f):len(f) + 1] != "_"]
        at = values[max(named, key=len)][1] if named else node
        raise ValueError(f"{_where(at)}: {e}") from None


def _pairs(value, field):
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{field}: expected a list of (op, input) pairs, got {value!r}")
    out = []
    for p in value:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
                and type(p[1]) is int):
            raise ValueError(f"{field}: expected an (op: str, input: int) pair, got {p!r}")
        out.append((p[0], p[1]))
    return out


def _is_nested(value):
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(n, (list, tuple)) and len(n) > 0 and all(isinstance(p, (list, tuple)) for p in n)
        for n in value)


def _concat(value, field):
    if not isinstance(value, (list, tuple)) or not all(type(s) is int for s in value):
        raise ValueError(f"{field}: expected a list of ints or range(a, b), got {value!r}")
    return list(value)


def build(type_name, fields):
    """Build and validate a genotype from plain values. Gene fields may be flat or nested
    (H-DAS nested cells are flattened for Genotype/StageCellsGenotype; flat stage DAGs are grouped in pairs
    for StageGenotype); concats may be ranges, tuples or lists."""
    cls = TYPE_NAMES[type_name]
    values = []
    for field in cls._fields:
        v = fields[field]
        if field.endswith("_concat"):
            values.append(_concat(v, field))
        elif cls is StageGenotype:
            nodes = v if _is_nested(v) else cell_nodes(_pairs(v, field))
            values.append([_pairs(n, f"{field}[{j}]") for j, n in enumerate(nodes)])
        else:
            flat = flatten_nodes(v, field) if _is_nested(v) else v
            values.append(_pairs(flat, field))
    return validate(cls(*values))


def parse(text):
    """Parse a genotype from a published repr string (``Genotype(...)``, ``StageGenotype(...)``,
    ``StageCellsGenotype(...)``, optionally as ``NAME = ...``) or from JSON written by :func:`to_json`.
    Raises ValueError saying where the text is malformed."""
    if not isinstance(text, str):
        raise TypeError(f"parse(text): text must be a str, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("parse(text): empty genotype string")
    if stripped.startswith("{"):
        return from_json(text)
    # Leading blank lines are kept (as newlines) so that reported line numbers are the text's own.
    lead = text[:len(text) - len(text.lstrip())].count("\n")
    try:
        tree = ast.parse("\n" * lead + stripped, mode="exec")
    except SyntaxError as e:
        raise ValueError(f"genotype string is not valid syntax at line {e.lineno}, column {e.offset}: {e.msg}") from None
    if len(tree.body) != 1:
        raise ValueError(f"expected exactly one genotype expression, found {len(tree.body)} statements")
    stmt = tree.body[0]
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        expr = stmt.value
    elif isinstance(stmt, ast.Expr):
        expr = stmt.value
    else:
        raise ValueError(f"{_where(stmt)}: expected a genotype expression or 'NAME = Genotype...(...)'")
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in TYPE_NAMES):
        raise ValueError(f"{_where(expr)}: expected a call of {', '.join(TYPE_NAMES)}")
    return _literal(expr)


def to_json(g, indent=None):
    """JSON text ``{"type": "StageGenotype", "DAG1": [[["skip_connect", 0], ...], ...], ...}``."""
    if type(g).__name__ not in GENOTYPE_TYPES or not isinstance(g, tuple):
        raise TypeError(f"to_json(g): expected a Genotype, StageGenotype or StageCellsGenotype, got {type(g).__name__}")
    validate(g)
    doc = {"type": type(g).__name__}
    doc.update({f: getattr(g, f) for f in g._fields})
    return json.dumps(doc, indent=indent)


def from_json(text):
    """Inverse of :func:`to_json`; errors name the line/column (bad JSON) or field (bad content)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"genotype JSON is malformed at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"genotype JSON must be an object, got {type(doc).__name__}")
    type_name = doc.get("type")
    if type_name not in TYPE_NAMES:
        raise ValueError(f"genotype JSON field 'type' must be one of {', '.join(TYPE_NAMES)}, got {type_name!r}")
    fields = TYPE_NAMES[type_name]._fields
    extra = sorted(set(doc) - set(fields) - {"type"})
    missing = [f for f in fields if f not in doc]
    if extra or missing:
        raise ValueError(f"genotype JSON for {type_name}: missing {missing}, unexpected {extra}")
    return build(type_name, {f: doc[f] for f in fields})


def resolve(value, what="genotype", types=tuple(GENOTYPE_TYPES.values())):
    """A validated genotype from a library name, a repr string (``NAME = Genotype(...)`` too),
    JSON, a file holding either (as a search writes genotype_best.json), or an object of `types`;
    `what` names the argument in errors, which also name the file a genotype was read from."""
    if isinstance(value, str) and _is_path(value):
        return _from_file(value, what, types)
    if isinstance(value, str):
        text = value.strip()
        if text in names() or not (text.startswith("{") or "(" in text):
            try:
                g = get(text)
            except KeyError as e:
                raise ValueError(f"{what}: {e.args[0]}") from None
        else:
            g = parse(text)
    else:
        g = value
    if not isinstance(g, types):
        kinds = " or ".join(t.__name__ for t in types)
        raise TypeError(f"{what} must be a {kinds} (a library name, a genotype string or object), "
                        f"got {type(g).__name__}")
    return validate(g)


def _is_path(text):
    """A file, or text that can only mean one (a path separator or a file extension, no genotype)."""
    t = text.strip()
    if os.path.isfile(t):
        return True
    return not ("(" in t or t.startswith("{")) and ("/" in t or os.sep in t or os.path.splitext(t)[1] != "")


def _from_file(path, what, types):
    path = path.strip()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{what}: cannot read {path!r} ({e})") from None
    if not text.strip():
        raise ValueError(f"{what}: file {path!r} is empty; it must hold a library name, a genotype string or JSON")
    if _is_path(text):
        raise ValueError(f"{what}: file {path!r} holds a path ({text.strip()[:80]!r}), not a genotype")
    try:
        return resolve(text, what, types)
    except (ValueError, TypeError) as e:
        message = str(e)
        if message.startswith(f"{what}: "):  # one name of the argument is enough
            message = message[len(what) + 2:]
        raise type(e)(f"{what}: file {path!r}: {message}") from None
