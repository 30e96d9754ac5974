"""What a search reports about a genotype: the stage analysis logged every epoch and the picture
drawn beside the log."""
import functools

from .. import genotypes as G
from ..runtime.optional import note_missing


def genotype_analysis(genotype):
    """Per stage of a StageGenotype: longest chain of cells, expected depth, dead cells; plus the
    averages. Empty for cell genotypes."""
    if not isinstance(genotype, G.StageGenotype):
        return {}
    stages = []
    for dag, concat in G.stages(genotype):
        stages.append(dict(cells=len(dag), depth=G.stage_depth(dag, concat),
                           expected_depth=G.expected_depth(dag, concat), dead_cells=G.dead_cells(dag, concat),
                           live_cells=len(dag) - len(G.dead_cells(dag, concat))))
    return dict(stages=stages,
                avg_depth=sum(s["depth"] for s in stages) / len(stages),
                avg_expected_depth=sum(s["expected_depth"] for s in stages) / len(stages),
                num_dead_cells=sum(len(s["dead_cells"]) for s in stages))


def draw_genotype(genotype, path, caption=None):
    """PATH.png via hdas_ext.viz, returning the file written. Without graphviz's `dot` binary viz
    writes PATH.dot instead (renderable later), which one note names; without the graphviz package
    there is no picture, and one note says so. The search goes on either way."""
    try:
        from .. import viz
        return viz.render(viz.genotype_graph(genotype, caption=caption), path + ".png")
    except ImportError as e:
        note_missing(e.name or "graphviz", "genotype pictures", "search")
        return None
    except RuntimeError as e:
        _note_once(f"[search] genotype picture: {e}")
        return path + ".dot"


@functools.lru_cache(maxsize=None)
def _note_once(line):
    print(line, flush=True)
