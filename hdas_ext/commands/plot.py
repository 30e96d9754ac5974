"""`hdas plot NAME_OR_FILE`: draw a genotype (library name, file with a repr/JSON genotype, or the
genotype text itself) with graphviz (the package's 'viz' extra)."""
import os
import sys

from .. import genotypes

FORMATS = ("png", "svg", "pdf")  # what hdas_ext.viz.render writes


def register(subparsers):
    p = subparsers.add_parser("plot", help="draw a genotype's cells or stage DAGs with graphviz",
                              description="Draw a genotype. NAME_OR_FILE is a library name "
                                          f"({', '.join(genotypes.names())}), a file holding a genotype "
                                          "(published repr or JSON), or the genotype text itself.")
    p.add_argument("genotype", metavar="NAME_OR_FILE")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: from --output's extension, else png)")
    p.add_argument("--output", default=None, help="output path (default: <name>.<format> in the current directory)")
    p.add_argument("--part", default=None,
                   help="draw one field only, e.g. normal, reduce2 or DAG1 (default: all)")
    p.set_defaults(func=run)


def load(spec):
    """A genotype and a short name from a library name, a file path or genotype text."""
    text = spec.strip()
    if os.path.isfile(spec):
        name = os.path.splitext(os.path.basename(spec))[0]
    else:
        name = "genotype" if "(" in text or text.startswith("{") else text
    return genotypes.resolve(spec), name


def run(args):
    g, name = load(args.genotype)
    fmt = args.format
    if args.output and not fmt:
        fmt = os.path.splitext(args.output)[1].lstrip(".").lower() or "png"
    fmt = fmt or "png"
    if fmt not in FORMATS:
        raise ValueError(f"--output extension must be one of {FORMATS}, got {fmt!r}")
    out = args.output or f"{name}{'_' + args.part if args.part else ''}.{fmt}"
    ext = os.path.splitext(out)[1].lstrip(".").lower()
    if args.format and ext and ext != fmt:
        raise ValueError(f"--format {fmt} does not match --output {out!r}; give one of them, or both alike")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output: folder {folder!r} does not exist")
    if args.part and (args.part not in g._fields or args.part.endswith("_concat")):
        fields = [f for f in g._fields if not f.endswith("_concat")]
        raise ValueError(f"--part must be one of {fields}, got {args.part!r}")
    from .. import viz  # graphviz is optional: only this command needs it

    if args.part:
        gene, concat = getattr(g, args.part), getattr(g, args.part + "_concat")
        draw = viz.stage_graph if isinstance(g, genotypes.StageGenotype) else viz.cell_graph
        graph = draw(gene, concat, caption=f"{name} {args.part}")
    else:
        graph = viz.genotype_graph(g, caption=name)
    try:
        path = viz.render(graph, out, fmt)
    except RuntimeError as e:  # no `dot` binary: the .dot source is written, as documented
        print(f"hdas plot: note: {e}", file=sys.stderr)
        print(os.path.splitext(out)[0] + ".dot")
        return 0
    print(path)
    return 0
