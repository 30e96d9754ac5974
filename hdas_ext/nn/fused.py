"""Drop-in fused modules. Each holds exactly the submodules of its eager twin in
hdas_ext.reference (same state_dict keys and shapes) and computes the same function with the
fused ops; pool BatchNorms keep their buffers and are updated as PyTorch updates them. Each public
entry checks the arguments it was given, in its own words, and calls the op unchecked."""
import torch
from torch import nn

from .. import ops
from .._native import native_available
from ..batchnorm import batch_norm_rules, update_running_stats
from ..lean import check_leanable, lean_apply
from ..ops.mixed_node import mixed_node_unchecked
from ..primitives import DARTS_PRIMITIVES
from .conv_fused import conv_plan, conv_sums
from .checks import check_call, check_weights, check_x, op_channels, state_tensor
from .operations import make_op
from .plan import OpPlan, is_pool, plans_by_name


def _call_mixed_node(inputs, weights, codes, extras, stride, bns, training, groups=1):
    """The op hdas::mixed_node with the pool BNs `bns` (edge-major, one per pool code and edge),
    their running statistics updated exactly as nn.BatchNorm2d would update them."""
    if not bns:
        return mixed_node_unchecked(inputs, weights, codes, extras, stride, pool_bn=False, groups=groups)[0]
    bn0 = bns[0]
    batch_stats, update = batch_norm_rules(bn0, training)
    E, C = len(inputs), inputs[0].shape[1] // groups
    Q = len(bns) // E
    rm = rv = None
    if not batch_stats:
        rm = torch.stack([b.running_mean for b in bns]).view(E, Q, C)
        rv = torch.stack([b.running_var for b in bns]).view(E, Q, C)
    out, mean, _, var = mixed_node_unchecked(inputs, weights, codes, extras, stride, pool_bn=True,
                                             batch_stats=batch_stats, running_mean=rm, running_var=rv, eps=bn0.eps,
                                             groups=groups)
    if update:
        update_running_stats(bns, mean.view(E * Q, C), var.view(E * Q, C))
    return out


def fused_edge_sum(edges, inputs, weights):
    """sum_j edges[j](inputs[j], weights[j]) over FusedMixedOps (the edges into one cell node), in
    one fused call per group of edges that share stride and primitive codes: a DARTS normal-cell
    node is one call, a reduction-cell node two (its stride-2 and stride-1 edges).
    weights: [len(edges), P]."""
    for j, edge in enumerate(edges):
        if not isinstance(edge, FusedMixedOp):
            raise TypeError(f"fused_edge_sum: edges[{j}] must be a FusedMixedOp (hdas_ext.fuse_mixed_ops(model) "
                            f"swaps DARTS MixedOps for them), got {type(edge).__name__}")
        if edge._partial:
            raise TypeError(f"fused_edge_sum: edges[{j}] is a partial-channel op ({type(edge).__name__}); "
                            f"call it on its own")
    inputs = list(inputs)
    if len(inputs) != len(edges):
        raise ValueError(f"fused_edge_sum: expected one input per edge ({len(edges)}), got {len(inputs)}")
    return _edge_sum(edges, inputs, _checked_edges("fused_edge_sum", edges, inputs, weights))


def _checked_edges(who, edges, inputs, weights, rows="num_edges"):
    """Each input against its edge (channels, dtype, device), and the weights [len(edges), P], in
    the inputs' dtype."""
    P = len(edges[0].primitives) if edges else 0
    if isinstance(weights, torch.Tensor) and tuple(weights.shape) != (len(edges), P):
        raise ValueError(f"{who}: weights must have shape [{rows}, num_primitives] = [{len(edges)}, {P}], "
                         f"got {list(weights.shape)}")
    for j, (edge, x) in enumerate(zip(edges, inputs)):
        check_x(who, x, edge, name=f"inputs[{j}]")
    return check_weights(who, weights, (len(edges), P), inputs[0]) if edges else weights


def _edge_sum(edges, inputs, weights, convs=None):
    """fused_edge_sum on checked edges and weights. convs: each edge's sum of its fused convolution
    candidates (nn.conv_fused.conv_sums), when the caller computed them (else computed here)."""
    groups = {}
    for j, edge in enumerate(edges):
        bn = edge._pool_bns()[0] if edge._bn else None
        key = (edge.stride, tuple(edge.codes), len(edge._bn), bn and (bn.eps, bn.momentum, bn.track_running_stats),
               edge.training, edge.recompute, edge._conv)
        groups.setdefault(key, []).append(j)
    for idx in groups.values():  # before the parametric ops run on them
        ops.check_inputs([inputs[j] for j in idx])
    P = weights.shape[1]
    # The weights as 0-d views, for the ops that fold theirs: one unbind for the whole node.
    rows = weights.flatten().unbind(0) if any(edge._folded or edge.recompute for edge in edges) else None
    out = None
    for idx in groups.values():
        group, xs = [edges[j] for j in idx], [inputs[j] for j in idx]
        # A slice when the group is a run of edges (always in DARTS cells): no gather in the graph.
        w = weights[idx[0]:idx[-1] + 1] if idx[-1] - idx[0] + 1 == len(idx) else weights[idx]
        conv = [convs[j] for j in idx] if convs else [conv_sums([edges[j]], inputs[j], weights, [j], edges[j].recompute)[0]
                                                      if edges[j]._conv else None for j in idx]
        extras = _extras(group, xs, rows and [rows[j * P:(j + 1) * P] for j in idx], convs=conv)
        w = w[:, group[0].kernel_columns()] if group[0]._conv else w
        bns = [bn for edge in group for bn in edge._pool_bns()]
        y = _call_mixed_node(xs, w, group[0].kernel_codes(), extras, group[0].stride, bns, group[0].training)
        out = y if out is None else out + y
    return out


def _extras(edges, inputs, rows, active=None, convs=None):
    """The parametric ops' outputs, edge-major. ADD ones come out weighted (rows[edge][k] folded
    into their last BatchNorm). Ops with a leading ReLU share one relu(x) per edge (one output kept
    for the backward, not one per op). Lean edges (recompute=True) weight every extra and keep none
    of the ops' internals. active (one edge): the ops that run. convs (nn.conv_fused): per edge, the
    weighted sum of its fused convolution candidates, last, one tensor instead of one per op."""
    skip = [{k for k, _ in edge._conv} if convs else set() for edge in edges]
    picked = [[k for k in edge._extra if (active is None or k in active) and k not in s] for edge, s in zip(edges, skip)]
    tail = [[c] if c is not None else [] for c in convs] if convs else [[] for _ in edges]
    if edges[0].recompute:
        done = iter(lean_apply([edge._ops[k] for edge, ks in zip(edges, picked) for k in ks],
                               [x for x, ks in zip(inputs, picked) for _ in ks],
                               [row[k] for row, ks in zip(rows, picked) for k in ks]) if any(picked) else [])
        return [y for ks, t in zip(picked, tail) for y in [next(done) for _ in ks] + t]
    out = []
    for edge, x, row, ks, s, t in zip(edges, inputs, rows or [None] * len(edges), picked, skip, tail):
        plan = edge._plan
        shared = [k for k in edge._shares_relu if (active is None or k in active) and k not in s]
        r = edge._ops[shared[0]].get_submodule(plan[shared[0]].relu)(x) if shared else None
        for k in ks:
            op = edge._ops[k]
            if edge.codes[k] != ops.ADD:
                out.append(op(x))
            else:
                out.append(edge._scaled_op(k, x, r, row[k]))
        out += t
    return out


class FusedMixedOp(nn.Module):
    """DARTS' search-time MixedOp, sum_k weights[k] * op_k(x), with the parameter-free ops, the
    pool BNs and the weighted sum fused. weights: one entry per primitive, already normalised
    (softmax, Gumbel-softmax, sigmoid: the caller chooses).

    recompute=True (lean mode): the forward keeps, of the parametric ops, only the input x (which
    the kernel keeps anyway) and their BatchNorms' per-channel statistics; the backward rebuilds
    them one op at a time. Same outputs, gradients and running statistics (hdas_ext.lean)."""
    _ops_name = "_ops"  # the op list's attribute: another name when fuse_mixed_ops adopted a module
    _partial = False
    recompute = False
    _conv = ()  # (op index, kind) of the ops run through hdas::conv_candidates (nn.conv_fused)
    _conv_halves = {}  # their (depthwise, pointwise, BatchNorm) paths per half

    def __init__(self, C, stride, primitives=DARTS_PRIMITIVES, affine=False, pool_bn=True, recompute=False,
                 fuse_convs=True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        modules = nn.ModuleList(make_op(p, C, stride, affine, pool_bn) for p in primitives)
        self._ops = modules
        self._set_plan(plans_by_name(modules, primitives, stride, fused_bn=pool_bn and not affine), stride)
        self._set_recompute(recompute)
        if fuse_convs:
            self._set_convs()

    @property
    def _ops(self):
        return self._modules[self._ops_name]

    def _set_plan(self, plan, stride, labels=None):
        """What the kernel does with each op (an OpPlan each, see folding.py): pools are computed by
        the kernel when bare or when it applies their (affine-free) BN itself; other ops run as
        modules whose outputs the kernel mixes, weighted by their own last BN when the weight
        folds there (ADD), else by the kernel (EXTRA)."""
        self._plan, self.stride = tuple(OpPlan(*p) for p in plan), stride
        self.primitives = tuple(p.label for p in self._plan) if labels is None else tuple(labels)
        self.codes = [p.code for p in self._plan]
        self._extra = [k for k, c in enumerate(self.codes) if c in (ops.EXTRA, ops.ADD)]
        self._folded = [k for k, c in enumerate(self.codes) if c == ops.ADD]
        self._shares_relu = [k for k in self._folded if self._plan[k].relu is not None]
        self._bn = [k for k, p in enumerate(self._plan) if is_pool(p.code) and p.bn is not None]
        self._channels, self._state = op_channels(self._ops), state_tensor(self._ops)

    def _set_convs(self):
        """Runs its sep_conv/dil_conv ops through hdas::conv_candidates (nn.conv_fused)."""
        self._conv, self._conv_halves = conv_plan(self._ops, self.codes, self.stride)

    def _set_recompute(self, recompute):
        """Lean mode on or off; NotLeanable if an op cannot be recomputed."""
        if recompute:
            for k in self._extra:
                check_leanable(self._ops[k], f"{self.primitives[k]} op")
        self.recompute = bool(recompute)

    def kernel_codes(self, fuse_convs=True):
        """The codes the kernel runs: lean edges weight every extra themselves (ADD); the fused
        convolution candidates (fuse_convs and any) are one ADD tensor, last."""
        codes = [ops.ADD if c == ops.EXTRA else c for c in self.codes] if self.recompute else self.codes
        if not (fuse_convs and self._conv):
            return codes
        fused = {k for k, _ in self._conv}
        return [c for k, c in enumerate(codes) if k not in fused] + [ops.ADD]

    def kernel_columns(self):
        """The weight columns of kernel_codes() (the ADD column's weight is never read)."""
        fused = {k for k, _ in self._conv}
        return [k for k in range(len(self.codes)) if k not in fused] + [self._conv[0][0]]

    def _state_tensor(self):
        """A parameter or buffer of the ops (their dtype and device), or None."""
        if self._state is None:
            return None
        path, name = self._state
        m = self._ops
        for step in path:  # by name at each call: DataParallel replicas find their own
            m = m._modules[step]
        t = m._parameters.get(name)
        return m._buffers.get(name) if t is None else t

    def _pool_bns(self):
        """The BatchNorms the kernel applies to the pools, in op order (found by their paths each
        call, so that DataParallel replicas use their own)."""
        return [self._ops[k].get_submodule(self._plan[k].bn) for k in self._bn]

    @classmethod
    def adopt(cls, modules, primitives, stride, fused_bn, recompute=False):
        """Wraps existing op modules of this package's primitives (sharing their parameters and
        buffers). fuse_mixed_ops adopts any module by what its ops compute instead."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._ops = modules
        self._set_plan(plans_by_name(modules, primitives, stride, fused_bn), stride)
        self._set_recompute(recompute)
        return self

    def _scaled_op(self, k, x, r, scale):
        """scale * op k (x) for an op whose plan folds the weight (ADD), r = relu(x) shared by the
        ops. This package's ops take the scale and r themselves; the drop-in's adopted classes
        (hdas_ext.dropin) fold the weight into ops of other code."""
        return self._ops[k](r, scale=scale, activated=True)

    def extra_repr(self):
        lean = ", recompute=True" if self.recompute else ""
        return f"primitives={list(self.primitives)}, stride={self.stride}{lean}, native={native_available()}"

    def __prepare_scriptable__(self):
        raise TypeError(f"torch.jit.script: {type(self).__name__} cannot be scripted (the fused op's autograd "
                        f"is registered in Python); use torch.compile, or hdas_ext.reference's eager twins")

    def forward(self, x, weights):
        weights = check_call(self, x, weights)  # before the parametric ops run on x
        return self._fused(x, weights)

    def _fused(self, x, weights, active=None):
        """The fused op on checked arguments (see _mix)."""
        return self._mix(x, weights, 1, active)

    def _mix(self, x, weights, groups=1, active=None, conv=None):
        """The op on x; groups > 1: the parametric ops run on the first C/groups channels (a view)
        and the op places their mix and the other channels (see hdas_ext.ops.mixed_node).
        active: the indices of the ops that run (the others run not at all: no statistics, no
        gradients), None for all; the convolution candidates then run as modules.
        conv: the sum of the fused convolution candidates when the caller computed it."""
        if torch.jit.is_tracing():
            raise RuntimeError(f"torch.jit.trace: {type(self).__name__} cannot be traced (the fused op's autograd is "
                               f"registered in Python); use torch.compile, or trace the model before fuse_mixed_ops")
        rows = weights.unbind(0) if self._folded or self.recompute or active is not None else None
        part = x[:, :x.shape[1] // groups] if groups > 1 else x
        bns = self._pool_bns()
        if active is not None:
            codes = [self.kernel_codes(False)[k] for k in active]
            bns = [bn for k, bn in zip(self._bn, bns) if k in active]
            weights = torch.stack([rows[k] for k in active])
            return _call_mixed_node([x], weights.unsqueeze(0), codes, _extras([self], [part], rows and [rows], active),
                                    self.stride, bns, self.training, groups)
        w = weights.unsqueeze(0)
        if not self._conv:
            return _call_mixed_node([x], w, self.kernel_codes(), _extras([self], [part], rows and [rows]),
                                    self.stride, bns, self.training, groups)
        if conv is None:
            conv = conv_sums([self], part, w, [0], self.recompute)[0]
        return _call_mixed_node([x], w[:, self.kernel_columns()], self.kernel_codes(),
                                _extras([self], [part], rows and [rows], convs=[conv]), self.stride, bns, self.training, groups)
