"""Random-sampling baseline: architectures drawn uniformly from the searched space, trained with
the same recipe, and the relative improvement RI = 100 (Acc_searched - Acc_random) / Acc_random
the H-DAS paper reports (0.44 for Hs-DAS, 0.32 for DARTS)."""
import dataclasses
import json
import os
import random
import statistics

from .. import genotypes as G
from ..primitives import HDAS_PRIMITIVES, STAGE_PRIMITIVES
from ..runtime import distributed_session
from .config import validate
from .loop import train

CELL_OPS = tuple(p for p in HDAS_PRIMITIVES if p != "none")
STAGE_OPS = tuple(p for p in STAGE_PRIMITIVES if p != "none")
SPACES = ("cell", "stage", "distribution")


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
        recent = list(range(max(0, j + 2 - window), j + 2))
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
    """RI = 100 (Acc_searched - Acc_random) / Acc_random (accuracies in percent)."""
    if acc_random <= 0:
        raise ValueError(f"acc_random must be > 0, got {acc_random}")
    return 100.0 * (acc_searched - acc_random) / acc_random


def run_random_baseline(cfg, space="stage", samples=8, sample_seed=0, cells_per_stage=None,
                        window=3, searched_acc=None, metric="best", n_min=4):
    """Train `samples` random architectures (and the searched one, cfg.cell/cfg.stages, unless
    searched_acc is given) with cfg's recipe, each in cfg.output/<name>; rerunning continues
    unfinished runs. Returns (and writes to cfg.output/random_baseline.json) a summary.
    space 'stage': stage DAGs of cells_per_stage cells (default: the searched genotype's), output the
    last two cells; 'distribution': the distribution search's stages, cells_per_stage = N_max (the
    searched genotype's unpruned DAGs) and a length drawn in n_min..N_max."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if searched_acc is not None and not 0 < searched_acc <= 100:
        raise ValueError(f"searched_acc must be a top-1 accuracy in percent, in (0, 100], got {searched_acc!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2 (a cell picks 2 distinct inputs), got {window!r}")
    if metric not in ("best", "last"):
        raise ValueError(f"metric must be 'best' or 'last', got {metric!r}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    cfg = validate(cfg)
    cell = cfg.cell
    stage_space = space in ("stage", "distribution")
    if stage_space and cfg.stages is None and searched_acc is None:
        raise ValueError(f"space {space!r} compares stage DAGs: give the searched one (stages=, --stages) "
                         "or its accuracy (searched_acc=, --searched-acc)")
    if stage_space and cells_per_stage is None:
        if cfg.stages is None:
            cells_per_stage = (6, 6, 6)
        else:
            cells_per_stage = tuple(len(d) for d, _ in G.stages(cfg.stages))
    rng = random.Random(sample_seed)
    if space == "cell":
        archs = [dict(cell=G.to_json(sample_genotype(rng, stage_specific=isinstance(cell, G.StageCellsGenotype))))
                 for _ in range(samples)]
    else:
        if window > min(cells_per_stage) + 1:
            raise ValueError(f"window must be in [2, N+1] = [2, {min(cells_per_stage) + 1}] for cells_per_stage "
                             f"{cells_per_stage}, got {window}")
        if space == "distribution" and not 1 <= n_min <= min(cells_per_stage):
            raise ValueError(f"n_min must be in [1, {min(cells_per_stage)}] (N_max = cells_per_stage "
                             f"{cells_per_stage}), got {n_min!r}")
        lengths = n_min if space == "distribution" else None
        archs = [dict(stages=G.to_json(sample_genotype2(rng, cells_per_stage, window, lengths)))
                 for _ in range(samples)]

    with distributed_session(cfg.device) as ctx:
        def run(name, **arch):
            sub = dataclasses.replace(cfg, output=os.path.join(cfg.output, name), resume="auto", **arch)
            s = train(sub)
            acc = s["best_top1"] if metric == "best" else s["last_top1"]
            return dict(name=name, acc=acc, params=s["params"], **arch)

        searched = dict(name="searched", acc=searched_acc) if searched_acc is not None else run("searched")
        randoms = []
        for i, arch in enumerate(archs):
            randoms.append(run(f"random_{i:03d}", **arch))
            _write(cfg, ctx, space, metric, searched, randoms)
        return _write(cfg, ctx, space, metric, searched, randoms)


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
