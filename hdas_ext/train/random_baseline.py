"""Random-sampling baseline: architectures drawn uniformly from a search space (the `hdas search`
spaces: cells, hc, hs, distribution), trained with the same recipe as the searched one, and the
relative improvement RI = 100 (Acc_searched - Acc_random) / Acc_random the H-DAS paper reports
(0.44 for Hs-DAS, 0.32 for DARTS)."""
import dataclasses
import json
import os
import random
import statistics

from .. import genotypes as G
from ..primitives import HDAS_PRIMITIVES, STAGE_PRIMITIVES
from ..runtime import CHECKPOINT, distributed_session
from ..stage_geometry import check_window, per_stage, window_sources
from ..supernets import SEARCH_SPACES
from .config import validate
from .loop import train

CELL_OPS = tuple(p for p in HDAS_PRIMITIVES if p != "none")
STAGE_OPS = tuple(p for p in STAGE_PRIMITIVES if p != "none")
SPACES = tuple(SEARCH_SPACES)
# The space's own settings and their defaults (cells_per_stage: the searched genotype's, else 6).
SETTINGS = {"cells_per_stage": ("hs", "distribution"), "window": ("hs", "distribution"), "n_min": ("distribution",)}
DEFAULTS = {"window": 3, "n_min": 4}


def sample_cell(rng, nodes=4, ops=CELL_OPS, k=2):
    """A flat DARTS gene: node i picks k distinct inputs among the i+2 earlier states and one
    op (never 'none', which derivation never keeps) for each, all uniformly."""
    gene = []
    for i in range(nodes):
        for src in sorted(rng.sample(range(i + 2), k)):
            gene.append((rng.choice(ops), src))
    return gene


def sample_genotype(rng, nodes=4, stage_specific=False):
    """A random Genotype (normal + reduce) or, stage_specific, a StageCellsGenotype (five cells)."""
    concat = list(range(2, nodes + 2))
    if stage_specific:
        values = []
        for _ in range(5):
            values += [sample_cell(rng, nodes), list(concat)]
        return G.StageCellsGenotype(*values)
    return G.Genotype(sample_cell(rng, nodes), concat, sample_cell(rng, nodes), list(concat))


def sample_stage(rng, n, window=3, ops=STAGE_OPS, k=2):
    """A stage DAG of n cells under the search's sliding window: cell j picks k distinct inputs
    among the min(j+2, window) most recent states, an op for each; output = the last two cells
    (the plain Hs-DAS stage output)."""
    if n < 1:
        raise ValueError(f"a stage needs at least one cell, got {n}")
    dag = []
    for j in range(n):
        recent = window_sources(j, window)
        dag.append([(rng.choice(ops), src) for src in sorted(rng.sample(recent, k))])
    return dag, [n, n + 1]


def sample_genotype2(rng, cells_per_stage=(6, 6, 6), window=3, n_min=None):
    """Three stages under the window. With n_min, each is a stage of the cell-distribution search
    (docs/algorithms.md): a DAG of cells_per_stage[s] = N_max cells and an output pair (states N, N+1)
    drawn uniformly for N in n_min..N_max; the cells after the pair are dead (pruned when built)."""
    values = []
    for n in cells_per_stage:
        dag, concat = sample_stage(rng, n, window)
        if n_min is not None:
            length = rng.randint(n_min, n)
            concat = [length, length + 1]
        values += [dag, concat]
    return G.StageGenotype(*values)


def relative_improvement(acc_searched, acc_random):
    """RI = 100 (Acc_searched - Acc_random) / Acc_random (accuracies in percent); None when the
    random architectures score 0 % (RI is undefined)."""
    if acc_random <= 0:
        return None
    return 100.0 * (acc_searched - acc_random) / acc_random


def _space_settings(space, cfg, cells_per_stage, window, n_min):
    """The space's settings with their defaults; ValueError for one given to a space it does not apply to."""
    given = dict(cells_per_stage=cells_per_stage, window=window, n_min=n_min)
    for name, value in given.items():
        if value is not None and space not in SETTINGS[name]:
            where = " and ".join(SETTINGS[name])
            raise ValueError(f"{name} (--{name.replace('_', '-')}) applies to the {where} space"
                             f"{'s' if ' and ' in where else ''}, not to {space!r}")
    if space not in ("hs", "distribution"):
        return {}
    if cells_per_stage is None:
        cells_per_stage = 6 if cfg.stages is None else [len(d) for d, _ in G.stages(cfg.stages)]
    cells = per_stage("cells_per_stage", cells_per_stage)
    window = check_window(DEFAULTS["window"] if window is None else window, min(cells))
    n_min = DEFAULTS["n_min"] if n_min is None else n_min
    if space == "distribution" and (isinstance(n_min, bool) or not isinstance(n_min, int)
                                    or not 1 <= n_min <= min(cells)):
        raise ValueError(f"n_min must be in [1, {min(cells)}] (N_max = cells_per_stage {cells}), got {n_min!r}")
    return dict(cells=cells, window=window, n_min=n_min if space == "distribution" else None)


def _samples(rng, space, cfg, samples, settings):
    if space in ("cells", "hc"):
        stage_specific = space == "hc"
        if isinstance(cfg.cell, G.StageCellsGenotype) != stage_specific:
            raise ValueError(f"space {space!r} samples {'stage-specific cells' if stage_specific else 'DARTS cells'}: "
                             f"cell (--cell) must be a {'StageCellsGenotype' if stage_specific else 'Genotype'}, "
                             f"got a {type(cfg.cell).__name__} (the space of the searched cells: "
                             f"{'cells' if stage_specific else 'hc'})")
        return [dict(cell=G.to_json(sample_genotype(rng, stage_specific=stage_specific))) for _ in range(samples)]
    return [dict(stages=G.to_json(sample_genotype2(rng, settings["cells"], settings["window"], settings["n_min"])))
            for _ in range(samples)]


def run_random_baseline(cfg, space="hs", samples=8, sample_seed=0, cells_per_stage=None, window=None,
                        searched_acc=None, metric="best", n_min=None):
    """Train `samples` random architectures (and the searched one, cfg.cell/cfg.stages, unless
    searched_acc is given) with cfg's recipe, each in cfg.output/<name>; with cfg.resume, unfinished
    runs continue and finished ones are read back. Returns (and writes to
    cfg.output/random_baseline.json after each architecture) a summary.
    space 'cells' / 'hc': DARTS cells / stage-specific cells (cfg.cell's kind); 'hs': stage DAGs of
    cells_per_stage cells (default: the searched genotype's, else 6) under the window (default 3),
    output the last two cells; 'distribution': the distribution search's stages, cells_per_stage
    = N_max (the searched genotype's unpruned DAGs) and a length drawn in n_min..N_max (default 4)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if searched_acc is not None and not 0 < searched_acc <= 100:
        raise ValueError(f"searched_acc must be a top-1 accuracy in percent, in (0, 100], got {searched_acc!r}")
    if metric not in ("best", "last"):
        raise ValueError(f"metric must be 'best' or 'last', got {metric!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    cfg = validate(cfg)
    if space in ("hs", "distribution") and cfg.stages is None and searched_acc is None:
        raise ValueError(f"space {space!r} compares stage DAGs: give the searched one (stages=, --stages) "
                         "or its accuracy (searched_acc=, --searched-acc)")
    settings = _space_settings(space, cfg, cells_per_stage, window, n_min)
    archs = _samples(random.Random(sample_seed), space, cfg, samples, settings)

    with distributed_session(cfg.device) as ctx:
        def run(name, **arch):
            out = os.path.join(cfg.output, name)
            resume = cfg.resume and os.path.isfile(os.path.join(out, CHECKPOINT))
            s = train(dataclasses.replace(cfg, output=out, resume=resume, **arch))
            acc = s["best_top1"] if metric == "best" else s["last_top1"]
            return dict(name=name, acc=acc, params=s["params"], **arch)

        searched = dict(name="searched", acc=searched_acc) if searched_acc is not None else run("searched")
        randoms = []
        for i, arch in enumerate(archs):
            randoms.append(run(f"random_{i:03d}", **arch))
            summary = _write(cfg, ctx, space, metric, searched, randoms)
        return summary


def _write(cfg, ctx, space, metric, searched, randoms):
    accs = [r["acc"] for r in randoms]
    mean = statistics.fmean(accs)
    summary = dict(space=space, metric=metric, searched=searched, random=randoms,
                   random_mean=mean, random_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                   random_best=max(accs), samples=len(accs),
                   RI=relative_improvement(searched["acc"], mean))
    if ctx.main:
        os.makedirs(cfg.output, exist_ok=True)
        with open(os.path.join(cfg.output, "random_baseline.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary
