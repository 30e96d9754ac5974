"""One small loader per public DARTS-family codebase, for benchmarks/public_dropin.py.

A loader takes the path of a local checkout (nothing of it is copied here) and the sizes, imports the
codebase's own search network from its folder, and returns its Variants: how to build the network
with its own constructor, read its architecture tensors, compute its logits and its training loss,
and drive the state changes its own search scripts make (phases, by calling its own methods).
Each codebase imports its modules by bare names (operations, genotypes, model_search, models, src),
so public_dropin.py loads each in a process of its own."""
import copy
import importlib
import math
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Variant:
    """One search network of a codebase. phases: (what, change(model) -> None or a forward(model, x)
    to use in that phase[, train]); the first phase's change is made before fusing, the others
    after; train=False: the phase is one forward without gradients, in training mode."""
    name: str
    build: Callable
    arch: Callable  # model -> its architecture tensors (registered or not)
    sites: Callable  # model -> how many edges mix candidate ops, as the code is written
    phases: list = field(default_factory=lambda: [("training", _keep)])
    logits: Callable = lambda m, x: m(x)
    loss: Callable = lambda m, logits, y: F.cross_entropy(logits, y)
    methods: dict = field(default_factory=dict)  # name -> model -> value compared fused vs unfused


def _keep(model):
    return None


# ---- running their code on CPU, unedited --------------------------------------------------------

def cpu_only():
    """Their .cuda() calls become no-ops (for the life of the calling process)."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self


class _Anything:
    """Any attribute of a stubbed package: callable (a no-op), and a base class their code may
    derive from."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return None


class _Stub(types.ModuleType):
    """Stands in for a package their imports name but this environment lacks."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


STUBBED = []


def stub_missing(*names):
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = _Stub(name)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, sys.modules[name])
            STUBBED.append(name)


def _import(folder, *modules):
    sys.path.insert(0, folder)
    found = [importlib.import_module(m) for m in modules]
    return found[0] if len(found) == 1 else found


def new_summary(model, arch):
    """What `new()` gave: its class, its architecture tensors' shapes and their sum."""
    tensors = arch(model)
    return type(model).__name__, [tuple(a.shape) for a in tensors], round(float(sum(a.sum() for a in tensors)), 9)


def cells_ops(m):
    return sum(len(c._ops) for c in m.cells)


# ---- the codebases ----------------------------------------------------------------------------

def darts(path, cfg):
    ms = _import(os.path.join(path, "cnn"), "model_search")
    arch = lambda m: m.arch_parameters()  # noqa: E731
    return [Variant("DARTS cells (cnn/model_search.py)", lambda: ms.Network(cfg.C, 10, cfg.layers, nn.CrossEntropyLoss()),
                    arch, cells_ops, methods={"genotype()": lambda m: m.genotype(),
                                              "new()": lambda m: new_summary(m.new(), arch)})]


def ptdarts(path, cfg):
    search_cnn = _import(path, "models.search_cnn")
    build = lambda: search_cnn.SearchCNNController(3, cfg.C, 10, cfg.layers, nn.CrossEntropyLoss(), device_ids=[0])  # noqa: E731
    return [Variant("pt.darts SearchCNNController (models/search_cnn.py)", build, lambda m: list(m.alphas()),
                    lambda m: sum(len(row) for cell in m.net.cells for row in cell.dag),
                    methods={"genotype()": lambda m: m.genotype()})]


def pcdarts(path, cfg):
    ms = _import(path, "model_search")
    arch = lambda m: m.arch_parameters()  # noqa: E731
    return [Variant("PC-DARTS k=4, edge normalisation (model_search.py)",
                    lambda: ms.Network(cfg.C, 10, cfg.layers, nn.CrossEntropyLoss()), arch, cells_ops,
                    methods={"genotype()": lambda m: m.genotype(), "new()": lambda m: new_summary(m.new(), arch)})]


def pdarts(path, cfg):
    ms, gt = _import(path, "model_search", "genotypes")
    n_ops = len(gt.PRIMITIVES)

    def set_p(p):
        def change(m):
            m.p = p
            m.update_p()
        return change

    def stage(name, switches, p, p_later):
        def build():
            import numpy as np
            np.random.seed(0)  # its alphas come from numpy
            return ms.Network(cfg.C, 10, cfg.layers, nn.CrossEntropyLoss(), switches_normal=copy.deepcopy(switches),
                              switches_reduce=copy.deepcopy(switches), p=p)
        dropouts = lambda m: [op[1].p for c in m.cells for e in c.cell_ops for op in e.m_ops  # noqa: E731
                              if isinstance(op, nn.Sequential) and len(op) > 1 and isinstance(op[1], nn.Dropout)]
        return Variant(name, build, lambda m: m.arch_parameters(), lambda m: sum(len(c.cell_ops) for c in m.cells),
                       [(f"p={p:g}", set_p(p)), (f"model.p={p_later:.3g}; update_p()", set_p(p_later))],
                       methods={"update_p(): skip dropout rates": dropouts})

    all_on = [[True] * n_ops for _ in range(14)]
    # a later stage keeps 5 of the 8 ops on every edge (as after stage 1); which 5 is arbitrary here
    five = [[k not in {i % n_ops, (i + 3) % n_ops, (i + 5) % n_ops} for k in range(n_ops)] for i in range(14)]
    return [stage("P-DARTS stage 1 (8 ops, skip dropout 0.1)", all_on, 0.1, 0.1 * math.exp(-0.4)),
            stage("P-DARTS stage 2 (5 ops, skip dropout 0.4)", five, 0.4, 0.4 * math.exp(-0.4))]


def fairdarts(path, cfg):
    stub_missing("matplotlib", "matplotlib.pyplot")  # fairdarts/utils.py imports it for plotting only
    ms, sl = _import(os.path.join(path, "fairdarts"), "model_search", "separate_loss")

    def loss(m, logits, y):  # train_search.py: the L2 zero-one loss on the sigmoid weights
        aux = torch.cat([torch.sigmoid(m.alphas_normal), torch.sigmoid(m.alphas_reduce)], dim=0)
        return m._criterion(logits, y, aux)[0]
    build = lambda: ms.Network(cfg.C, 10, cfg.layers, sl.ConvSeparateLoss(weight=10.0),  # noqa: E731
                               parse_method="threshold_sparse", op_threshold=0.85)
    arch = lambda m: m.arch_parameters()  # noqa: E731
    return [Variant("FairDARTS sigmoid weights (fairdarts/model_search.py)", build, arch, cells_ops, loss=loss,
                    methods={"genotype()": lambda m: m.genotype(), "new()": lambda m: new_summary(m.new(), arch)})]


def sgas(path, cfg):
    ms, gt = _import(os.path.join(path, "cnn"), "model_search", "genotypes")

    def build():
        m = ms.Network(cfg.C, 10, cfg.layers, nn.CrossEntropyLoss())
        for kind in ("normal", "reduce"):  # as train_search.py sets them before the first epoch
            n = len(getattr(m, "alphas_" + kind))
            setattr(m, kind + "_selected_idxs", torch.tensor(n * [-1], dtype=torch.int))
            setattr(m, kind + "_candidate_flags", torch.tensor(n * [True], dtype=torch.bool))
        return m

    def decide(edge, op):
        """train_search.py's edge_decision once it has picked `edge` and `op`: mark it, freeze its
        alpha, let the model's check_edges prune the node's other edges."""
        def change(m):
            for kind, reduction in (("normal", False), ("reduce", True)):
                idxs, flags = getattr(m, kind + "_selected_idxs"), getattr(m, kind + "_candidate_flags")
                idxs[edge] = gt.PRIMITIVES.index(op)
                flags[edge] = False
                getattr(m, "alphas_" + kind)[edge].requires_grad = False
                flags, idxs = m.check_edges(flags, idxs, reduction=reduction)
                setattr(m, kind + "_selected_idxs", idxs)
                setattr(m, kind + "_candidate_flags", flags)
        return change
    arch = lambda m: m.arch_parameters()  # noqa: E731
    return [Variant("SGAS (cnn/model_search.py)", build, arch, cells_ops,
                    [("all edges mixed", _keep), ("edge 2 decided: sep_conv_3x3", decide(2, "sep_conv_3x3")),
                     ("edge 3 decided: skip_connect; check_edges prunes edge 4", decide(3, "skip_connect"))],
                    methods={"get_genotype(force=True)": lambda m: m.get_genotype(force=True),
                             "new()": lambda m: new_summary(m.new(), arch)})]


def dartsminus(path, cfg):
    stub_missing("yaml")  # src/utils.py and src/search/args.py import it to write a config file
    save = tempfile.mkdtemp(prefix="dartsminus-")
    # src/search/args.py parses the command line when imported: the flags of scripts/run_darts_minus.sh,
    # on the DARTS space (s5), on CPU
    sys.argv = ["train_search.py", "--auxiliary_skip", "--decay", "linear", "--skip_beta", "1", "--space", "s5",
                "--disable_cuda", "--save", save]
    ms, sargs, spaces = _import(path, "src.search.model_search", "src.search.args", "src.spaces")
    sched = sargs.beta_decay_scheduler

    def epoch(e):
        return lambda m: sched.step(e)  # one scheduler for the process, as in train_search.py
    arch = lambda m: m.arch_parameters()  # noqa: E731
    build = lambda: ms.Network(cfg.C, 10, cfg.layers, nn.CrossEntropyLoss(), spaces.spaces_dict["s5"], args=sargs.args)  # noqa: E731
    return [Variant("DARTS- auxiliary skip, linear decay (src/search/model_search.py)", build, arch, cells_ops,
                    [("decay rate 0 (beta_decay_scheduler.step(50))", epoch(50)),
                     ("decay rate 0.5 (beta_decay_scheduler.step(25))", epoch(25))],
                    methods={"genotype()": lambda m: m.genotype(), "new()": lambda m: new_summary(m.new(), arch)})]


def dartspt(path, cfg):
    proj, spaces = _import(path, "sota.cnn.model_search_darts_proj", "sota.cnn.spaces")
    args = types.SimpleNamespace(learning_rate=0.025, momentum=0.9, weight_decay=3e-4)  # what its constructor reads

    def scoring(m):
        """The forward project_op (sota/cnn/projection.py) scores a candidate with: one op's weight
        on one edge masked to 0; train_search.py's infer runs it in training mode without gradients."""
        def forward(m, x):
            w = m.get_projected_weights("normal")
            mask = torch.ones_like(w[0])
            mask[3] = 0
            w[0] = w[0] * mask
            return m(x, weights_dict={"normal": w})
        return forward

    def project(m):
        for kind in ("normal", "reduce"):
            m.project_op(0, 3, kind)
            m.project_edge(0, [2, 3], kind)
    arch = lambda m: m.arch_parameters()  # noqa: E731
    build = lambda: proj.DartsNetworkProj(cfg.C, 10, cfg.layers, nn.CrossEntropyLoss(), spaces.spaces_dict["s5"], args)  # noqa: E731
    return [Variant("DARTS-PT projection network (sota/cnn/model_search_darts_proj.py)", build, arch, cells_ops,
                    [("soft weights", _keep), ("scoring a candidate: edge 0's op 3 masked to 0 (no_grad)", scoring, False),
                     ("project_op(edge 0 -> op 3), project_edge(node 0 keeps edges 2, 3)", project)],
                    methods={"genotype()": lambda m: m.genotype(), "new()": lambda m: new_summary(m.new(), arch)})]


def autodl(path, cfg):
    models, config_utils, cell_ops = _import(path, "xautodl.models", "xautodl.config_utils",
                                             "xautodl.models.cell_operations")

    def net(**kw):
        return lambda: models.get_cell_based_tiny_net(config_utils.dict2config(
            dict(C=cfg.C, N=cfg.N, num_classes=10, affine=False, track_running_stats=True, **kw), None))
    nasnet = dict(super_type="nasnet-super", steps=4, multiplier=4, stem_multiplier=3, space=cell_ops.SearchSpaceNames["darts"])
    nb201 = dict(max_nodes=4, space=cell_ops.SearchSpaceNames["nas-bench-201"])
    tau = lambda t: lambda m: m.set_tau(t)  # noqa: E731  (the search scripts anneal tau from 10 to 0.1)
    gdas = [("tau 10", tau(10)), ("tau 0.1", tau(0.1))]
    common = dict(arch=lambda m: m.get_alphas(), logits=lambda m, x: m(x)[1],
                  methods={"genotype()": lambda m: m.genotype(), "show_alphas()": lambda m: m.show_alphas()})
    edges = lambda m: sum(c.num_edges for c in m.cells if hasattr(c, "edges"))  # noqa: E731
    return [Variant("AutoDL NASNet DARTS (forward_darts)", net(name="DARTS", **nasnet), sites=edges, **common),
            Variant("AutoDL NASNet GDAS (forward_gdas, hard Gumbel)", net(name="GDAS", **nasnet), sites=edges,
                    phases=gdas, **common),
            Variant("AutoDL NAS-Bench-201 TinyNetworkDarts", net(name="DARTS-V1", **nb201), sites=edges, **common),
            Variant("AutoDL NAS-Bench-201 TinyNetworkGDAS (hard Gumbel)", net(name="GDAS", **nb201), sites=edges,
                    phases=gdas, **common)]


# option name: (label, loader, folder name under a --public directory)
CODEBASES = {
    "darts": ("DARTS", darts, "darts"),
    "ptdarts": ("pt.darts", ptdarts, "pt.darts"),
    "pcdarts": ("PC-DARTS", pcdarts, "PC-DARTS"),
    "pdarts": ("P-DARTS", pdarts, "pdarts"),
    "fairdarts": ("FairDARTS", fairdarts, "FairDARTS"),
    "sgas": ("SGAS", sgas, "sgas"),
    "dartsminus": ("DARTS-", dartsminus, "DARTS-"),
    "dartspt": ("DARTS-PT", dartspt, "darts-pt"),
    "autodl": ("AutoDL-Projects", autodl, "AutoDL-Projects"),
}
