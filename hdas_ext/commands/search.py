"""`hdas search cells|hc|hs|distribution`: run an architecture search (hdas_ext.search); one option
per SearchConfig field. Defaults are the paper's settings; the dataset defaults to the embedded
'digits' (offline). Multi-process: `torchrun --nproc_per_node N -m hdas_ext.cli search ...` (DDP)."""
from ..runtime import is_main_process
from ..search.config import SearchConfig
from .options import add_config_options, config_values


def register(subparsers):
    p = subparsers.add_parser(
        "search", help="architecture search: DARTS cells, Hc-DAS, Hs-DAS stages, cell distribution",
        description="Bi-level differentiable architecture search. Spaces: 'cells' (DARTS, 8 cells, "
                    "shared normal/reduce cells), 'hc' (Hc-DAS stage-specific cells), 'hs' (Hs-DAS "
                    "connections between fixed cells), 'distribution' (Hs-DAS with searched stage "
                    "lengths N_min..N_max). An option that does not apply to the space is refused. Writes "
                    "config.json, log.jsonl, checkpoint.pt, genotype_{best,last}.json, tb/ and genotype.png "
                    "to --output.")
    add_config_options(p, SearchConfig)
    p.set_defaults(func=run)


def run(args):
    from ..search import run_search

    result = run_search(SearchConfig(**config_values(args, SearchConfig)))
    if not is_main_process():
        return 0
    print(f"final genotype (last epoch) = {result['last']!r}")
    print(f"best genotype (epoch {result['best_epoch']}, arch-half top-1 {result['best_acc']:.2f}%) = {result['best']!r}")
    if result["analysis"]:
        a = result["analysis"]
        print(f"derived stages: average depth {a['avg_depth']:.2f} cells, dead cells {a['num_dead_cells']}")
    return 0
