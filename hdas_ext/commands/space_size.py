"""`hdas space-size`: exact search-space sizes (hdas_ext.space) as a table or JSON."""
import decimal
import json
import sys

from .. import space


def positive_int(text):
    v = int(text)
    if v < 1:
        raise ValueError(text)
    return v


def register(subparsers):
    d = space.DEFAULTS
    p = subparsers.add_parser(
        "space-size", help="exact search-space sizes of DARTS, Hc-DAS, Hs-DAS and the distribution search",
        description="Exact counts of labelled architectures (no graph isomorphism); formulas in "
                    "hdas_ext/space.py. The 'paper' column shows the order of magnitude the paper "
                    "quotes (default parameters only) and 'agrees' whether the exact count rounds to it.")
    p.add_argument("--nodes", type=positive_int, default=d["nodes"], help="intermediate nodes per cell (default %(default)s)")
    p.add_argument("--cell-ops", type=positive_int, default=d["cell_ops"], help="non-none ops per cell edge (default %(default)s)")
    p.add_argument("--stage-ops", type=positive_int, default=d["stage_ops"], help="non-none ops per stage edge (default %(default)s)")
    p.add_argument("--k", type=positive_int, default=d["k"], help="inputs kept per node/cell (default %(default)s)")
    p.add_argument("--cells-per-stage", type=positive_int, default=d["cells_per_stage"], help="N (default %(default)s)")
    p.add_argument("--stages", type=positive_int, default=d["stages"], help="stages per network (default %(default)s)")
    p.add_argument("--window", type=positive_int, default=d["window"], help="stage window m in [2, N+1] (default %(default)s)")
    p.add_argument("--n-min", type=positive_int, default=d["n_min"], help="distribution search N_min (default %(default)s)")
    p.add_argument("--n-max", type=positive_int, default=d["n_max"], help="distribution search N_max (default %(default)s)")
    p.add_argument("--normal-types", type=int, default=d["normal_types"], help="Hc-DAS normal cell types (default %(default)s)")
    p.add_argument("--reduce-types", type=int, default=d["reduce_types"], help="Hc-DAS reduction cell types (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print exact integers as JSON")
    p.set_defaults(func=run)


def run(args):
    params = {key: getattr(args, key) for key in space.DEFAULTS}
    rows = space.space_table(**params)
    defaults = params == space.DEFAULTS
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if limit and any(v.bit_length() > 3.32 * limit for _, _, v in rows):
        raise ValueError(f"a count has more than {limit} digits, beyond what Python prints as an exact "
                         "integer; choose smaller parameters")
    if args.json:
        print(json.dumps({"parameters": params,
                          "rows": [{"key": k, "description": desc, "count": v,
                                    "paper_order": space.PAPER_ORDERS.get(k) if defaults else None,
                                    "order": space.order_of_magnitude(v)}
                                   for k, desc, v in rows]}, indent=2))
        return 0
    print(format_table(rows, space.PAPER_ORDERS if defaults else {}))
    return 0


def _scientific(v):
    # floats stop at ~1.8e308; Decimal holds any int exactly
    return f"{v:.3e}" if v < 1e300 else format(decimal.Decimal(v), ".3e")


def _agrees(k, v, paper):
    if k not in paper:
        return "-"
    return "yes" if space.order_of_magnitude(v) == paper[k] else "no"


def format_table(rows, paper):
    header = ("space", "size", "paper", "agrees", "exact")
    lines = [(desc, _scientific(v), f"~1e{paper[k]}" if k in paper else "-", _agrees(k, v, paper), str(v))
             for k, desc, v in rows]
    widths = [max(len(r[i]) for r in lines + [header]) for i in range(4)]
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}"
    return "\n".join([fmt(header), fmt(tuple("-" * w for w in widths) + ("-----",))] + [fmt(r) for r in lines])
