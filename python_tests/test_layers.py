"""The package's import layers, read from the source (nothing is imported): every import between
hdas_ext's modules, at module level or inside a function, must go to the importer's own layer or a
lower one, and no modules may import each other in a cycle. Also: no Python file over 400 lines."""
import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hdas_ext"

# The layers, lowest first: the documented source of truth. A module belongs to the layer of its
# top-level name (hdas_ext.<name>...) and may import only from its own layer or lower ones. A name
# listed here need not exist yet; a top-level module missing here fails test_every_module_has_a_layer.
LAYERS = (
    ("_C", "_native", "primitives", "stage_geometry", "extras", "batchnorm"),  # _C: the compiled library (not walked: no source)
    ("ops",),
    ("lean",),
    ("nn",),
    ("reference",),
    ("dropin",),
    ("genotypes", "space", "data", "viz"),
    ("networks", "supernets"),
    ("runtime",),
    ("search", "train"),
    ("commands", "cli"),
)
# hdas_ext/__init__.py, the facade, sits above them all: it may import anything, and nothing inside
# may import it.
EXTENSIONS = ("hdas_ext._C",)

# Imports that break the layers today in parts of the tree being restructured in parallel
# (importer, imported). Temporary: the lead empties this after merging; do not add to it.
ALLOWED_FOR_NOW = frozenset()

MAX_LINES = 400
LINE_CHECKED = ("hdas_ext", "python_tests", "benchmarks")


def module_name(path, root):
    """hdas_ext/nn/fused.py -> hdas_ext.nn.fused; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_package(root=ROOT, package=PACKAGE):
    """{module name: (source, is_package)} for every .py file of the package."""
    return {module_name(p, root): (p.read_text(), p.name == "__init__.py")
            for p in sorted((root / package).rglob("*.py"))}


def _resolve(target, known):
    """The deepest known module that `target` (a dotted name) names or lies in."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(name, source, is_package, known, package=PACKAGE):
    """The modules of `package` that module `name` imports: absolute and relative imports anywhere
    in its source, and importlib.import_module with a constant name. `from P import x` counts as an
    import of module P.x when that is a module, else of P; importing a module counts as importing the
    packages above it too (Python runs their __init__ first), except the importer's own."""
    here = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")
                anchor = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        else:
            continue
        for t in targets:
            if t == package or t.startswith(package + "."):
                found |= _executed(_resolve(t, known), name)
    return found


def _executed(target, importer):
    """What importing `target` from `importer` depends on: the module itself and each package above
    it that is not also above the importer (those are already being imported)."""
    above = {importer.rsplit(".", i)[0] for i in range(importer.count(".") + 1)}
    run = {target} - {importer}
    target = target.rpartition(".")[0]
    while target and target not in above:
        run.add(target)
        target = target.rpartition(".")[0]
    return run


def import_graph(sources, package=PACKAGE, extensions=EXTENSIONS):
    """{module: modules of the package it imports}, from read_package's {name: (source, is_package)}."""
    known = set(sources) | set(extensions)
    return {name: imports_of(name, src, is_pkg, known, package) for name, (src, is_pkg) in sources.items()}


def layer_of(module, layers=LAYERS, package=PACKAGE):
    """Index of the module's layer in `layers`; len(layers) for the facade; None if not in the table."""
    if module == package:
        return len(layers)
    top = module.split(".")[1]
    return next((i for i, names in enumerate(layers) if top in names), None)


def unlisted(graph, layers=LAYERS, package=PACKAGE):
    return sorted({m.split(".")[1] for m in graph if m != package and layer_of(m, layers, package) is None})


def upward_imports(graph, layers=LAYERS, package=PACKAGE, allowed=frozenset()):
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    found = []
    for src, dsts in sorted(graph.items()):
        for dst in sorted(dsts):
            a, b = layer_of(src, layers, package), layer_of(dst, layers, package)
            if a is not None and b is not None and b > a and (src, dst) not in allowed:
                found.append((src, dst))
    return found


def find_cycle(graph, allowed=frozenset()):
    """One cycle of imports as [m0, m1, ..., m0], or None."""
    pruned = {src: {d for d in dsts if (src, d) not in allowed} for src, dsts in graph.items()}
    try:
        graphlib.TopologicalSorter(pruned).prepare()
    except graphlib.CycleError as e:
        return list(reversed(e.args[1]))  # graphlib lists it against the edges' direction
    return None


def _layer_name(module):
    i = layer_of(module)
    return "the facade" if i == len(LAYERS) else f"layer {i}: {', '.join(LAYERS[i])}"


def _describe(pairs):
    return "\n".join(f"  {a} ({_layer_name(a)}) imports {b} ({_layer_name(b)})" for a, b in pairs)


GRAPH = import_graph(read_package())


def test_every_module_has_a_layer():
    missing = unlisted(GRAPH)
    assert not missing, (f"hdas_ext.{', hdas_ext.'.join(missing)} not in the layer table: add it to LAYERS in "
                         f"{Path(__file__).name} (and to the layer list of the docs) in the layer it belongs to")


def test_imports_flow_down_the_layers():
    upward = upward_imports(GRAPH, allowed=ALLOWED_FOR_NOW)
    assert not upward, "imports from a lower layer to a higher one:\n" + _describe(upward)


def test_no_import_cycles():
    cycle = find_cycle(GRAPH, allowed=ALLOWED_FOR_NOW)
    assert cycle is None, "modules importing each other in a cycle: " + " -> ".join(cycle)


def test_allowed_for_now_holds_only_what_still_breaks_the_layers():
    for src, dst in ALLOWED_FOR_NOW:
        assert dst in GRAPH.get(src, ()), f"{src} no longer imports {dst}: remove the pair from ALLOWED_FOR_NOW"


def test_no_python_file_over_400_lines():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for d in LINE_CHECKED for p in sorted((ROOT / d).rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"Python files over {MAX_LINES} lines (split them by what they hold):\n  " + "\n  ".join(long)


# The checker itself, on synthetic packages: it must see what the tests above rely on it to see.
TOY_LAYERS = (("low",), ("mid",), ("high",))


def toy(**modules):
    """A synthetic package 'pkg' from {dotted name under pkg with '__' for '.': source}; a name
    ending in '__init' is that package's __init__.py."""
    sources = {"pkg": ("", True)}
    for key, src in modules.items():
        parts = key.split("__")
        for i in range(1, len(parts)):  # parents are packages
            sources.setdefault("pkg." + ".".join(parts[:i]), ("", True))
        if parts[-1] == "init":
            sources["pkg." + ".".join(parts[:-1])] = (src, True)
        else:
            sources["pkg." + ".".join(parts)] = (src, False)
    return import_graph(sources, package="pkg", extensions=())


def test_checker_resolves_every_import_form():
    graph = toy(low__a="", low__b="from . import a\nfrom .a import f\n", mid__c="from ..low import b\n",
                mid__d="def f():\n    import pkg.low.a\n    from pkg.low.b import g\n",
                high="import importlib\nimportlib.import_module('pkg.mid.c')\nimport os, pkg.mid\n")
    assert graph["pkg.low.b"] == {"pkg.low.a"}  # its own package is already being imported
    assert graph["pkg.mid.c"] == {"pkg.low.b", "pkg.low"}  # pkg/low/__init__.py runs first
    assert graph["pkg.mid.d"] == {"pkg.low.a", "pkg.low.b", "pkg.low"}
    assert graph["pkg.high"] == {"pkg.mid.c", "pkg.mid"}


def test_checker_catches_an_upward_import():
    graph = toy(low="def f():\n    from .high import g\n", high="from .low import f\n")
    assert upward_imports(graph, TOY_LAYERS, "pkg") == [("pkg.low", "pkg.high")]
    assert upward_imports(graph, TOY_LAYERS, "pkg", allowed={("pkg.low", "pkg.high")}) == []
    # The facade imports everything; importing it back from inside is upward.
    assert upward_imports(toy(low="import pkg\n"), TOY_LAYERS, "pkg") == [("pkg.low", "pkg")]


def test_checker_catches_a_cycle():
    graph = toy(mid__a="from .b import x\n", mid__b="from . import c\n", mid__c="from pkg.mid import a\n")
    assert upward_imports(graph, TOY_LAYERS, "pkg") == []  # one layer: only the cycle check sees it
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"pkg.mid.a", "pkg.mid.b", "pkg.mid.c"}
    assert all(cycle[i + 1] in graph[cycle[i]] for i in range(len(cycle) - 1)), cycle  # in import order
    assert find_cycle(graph, allowed={("pkg.mid.b", "pkg.mid.c")}) is None
    assert find_cycle(toy(mid__a="from .b import x\n", mid__b="")) is None
    # Through a package's __init__: a.x imports b.y, which runs b/__init__.py, which imports b.z -> a.x.
    graph = toy(a__x="from ..b.y import f\n", b__init="from .z import g\n", b__y="", b__z="from ..a import x\n")
    assert set(find_cycle(graph)) == {"pkg.a.x", "pkg.b", "pkg.b.z"}


def test_checker_catches_an_unlisted_module():
    assert unlisted(toy(low="", extra__x=""), TOY_LAYERS, "pkg") == ["extra"]
    assert unlisted(toy(low=""), TOY_LAYERS + (("absent",),), "pkg") == []  # listed but absent is fine
