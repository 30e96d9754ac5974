"""Mixing shapes other than a MixedOp's forward: a MixedOp without forward that mixes in another
method (as AutoDL-Projects' NASNet search cells call forward_darts), and a cell that mixes its op
lists in its own code (NAS-Bench-201's search cells). Stand-ins written here from those
descriptions; each fused copy is compared with the unfused network in float64."""
import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

import dropin_standins as S
from hdas_ext import fuse_mixed_ops
from hdas_ext.dropin.fuse import CELL_MIX

OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")


class MethodsMixedOp(nn.Module):
    def __init__(self, C):
        super().__init__()
        self._ops = nn.ModuleList(S.darts_op(p, C, 1) for p in OPS)

    def forward_soft(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))

    def forward_hard(self, x, weights, index):
        return weights[index] * self._ops[index](x)


class DictCell(nn.Module):
    def __init__(self, C, nodes=3):
        super().__init__()
        self.nodes = nodes
        self.links = nn.ModuleDict({f"{i}<-{j}": nn.ModuleList(S.darts_op(p, C, 1) for p in OPS)
                                    for i in range(1, nodes) for j in range(i)})
        self.index = {key: k for k, key in enumerate(sorted(self.links))}

    def forward(self, x, weightss):
        states = [x]
        for i in range(1, self.nodes):
            states.append(sum(sum(op(states[j]) * w for op, w in zip(self.links[f"{i}<-{j}"],
                                                                      weightss[self.index[f"{i}<-{j}"]]))
                              for j in range(i)))
        return states[-1]

    def forward_hard(self, x, hardwts, index):  # GDAS: one op per edge, nothing to mix
        states = [x]
        for i in range(1, self.nodes):
            k = [self.index[f"{i}<-{j}"] for j in range(i)]
            states.append(sum(hardwts[e][index[e]] * self.links[f"{i}<-{j}"][index[e]](states[j])
                              for e, j in zip(k, range(i))))
        return states[-1]


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.edge = MethodsMixedOp(4)
        self.cell = DictCell(4)

    def forward(self, x, w, ws, hard=False):
        s = self.stem(x)
        if hard:
            index = ws.argmax(-1)
            return self.edge.forward_hard(s, w, int(w.argmax())) + self.cell.forward_hard(s, ws, index)
        return self.edge.forward_soft(s, w) + self.cell(s, ws)


def _fused_calls(net):
    """Counts of the fused ops' runs: the edge's and each list's."""
    counts = []
    fused = [net.edge] + [vars(lst)["_hdas_mix"] for lst in net.cell.links.values()]
    for m in fused:
        original, box = m._fused, [0]
        counts.append(box)

        def spy(*args, _original=original, _box=box):
            _box[0] += 1
            return _original(*args)
        m._fused = spy
    return counts


def _step(net, x, w, ws, hard):
    x, w, ws = (t.clone().requires_grad_() for t in (x, w, ws))
    out = net(x, w, ws, hard)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype))
    return [out, x.grad, w.grad, ws.grad] + [p.grad for p in net.parameters()] + list(net.buffers())


def _same(got, want):
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_other_methods_and_cells_are_fused_and_equal(single_thread):
    torch.manual_seed(0)
    eager = Holder().double()
    net = copy.deepcopy(eager)
    keys = list(eager.state_dict())
    report = fuse_mixed_ops(net, report=True)
    assert report.left_alone == []
    fused = {e.path: e for e in report.fused}
    assert set(fused) == {"edge"} | {f"cell.links.{k}" for k in eager.cell.links}
    assert fused["edge"].method == "forward_soft" and type(net.edge).__name__ == "FusedMixedOp[MethodsMixedOp].forward_soft"
    assert isinstance(net.edge, MethodsMixedOp) and isinstance(net.cell, DictCell) and type(net.cell) is not DictCell
    assert list(net.state_dict()) == keys and len(list(net.modules())) == len(list(eager.modules()))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    w = torch.softmax(torch.randn(4, generator=g, dtype=torch.float64), 0)
    ws = torch.softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), -1)
    counts = _fused_calls(net)
    for hard in (False, True, False):
        _same(_step(net, x, w, ws, hard), _step(eager, x, w, ws, hard))
        for m in (net, eager):
            m.zero_grad()
    assert [c[0] for c in counts] == [2] * 4  # the soft steps ran fused; the hard ones as written
    net.eval(), eager.eval()
    with torch.no_grad():
        _same([net(x, w, ws)], [eager(x, w, ws)])


def test_fused_cells_copy_and_pickle(single_thread):
    torch.manual_seed(0)
    net = Holder().double()
    fuse_mixed_ops(net)
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert type(twin.cell) is type(net.cell) and type(twin.edge) is type(net.edge)
        for lst in twin.cell.links.values():
            assert vars(lst)["_hdas_mix"]._ops is lst  # each copy's fused op holds the copy's list
        x, w = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
        ws = torch.rand(3, 4, dtype=torch.float64)
        counts = _fused_calls(twin)
        _same([twin(x, w, ws)], [net(x, w, ws)])
        assert [c[0] for c in counts] == [1] * 4
    assert fuse_mixed_ops(net) == 0  # fused already


def test_a_list_replaced_later_runs_as_written(single_thread):
    torch.manual_seed(0)
    eager = Holder().double()
    net = copy.deepcopy(eager)
    fuse_mixed_ops(net)
    for m in (net, eager):  # a new list of the same ops: not the list proven
        m.cell.links["1<-0"] = nn.ModuleList(list(m.cell.links["1<-0"]))
    x, w, ws = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.rand(4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    _same(_step(net, x, w, ws, False), _step(eager, x, w, ws, False))


def _closure_cell(C):
    scale = 0.5

    class ClosureCell(DictCell):
        def forward(self, x, weightss):
            return scale * sum(op(x) * w for op, w in zip(self.links["1<-0"], weightss[0]))
    return ClosureCell(C)


def test_cells_that_cannot_be_rewritten_are_reported(single_thread):
    net = nn.Sequential(nn.Conv2d(3, 4, 1), _closure_cell(4)).double()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = fuse_mixed_ops(net, report=True)
    assert report.fused == [] and [(e.path, e.reason) for e in report.left_alone] == [("1", CELL_MIX)]
    assert "reads variables of an enclosing function (scale)" in report.left_alone[0].detail
    assert len(caught) == 1 and type(net[1]).__name__ == "ClosureCell"


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleDict({"a": nn.ModuleList([nn.Linear(4, 2)]), "b": nn.ModuleList([nn.Linear(4, 3)])})

    def forward(self, x):
        return [head(x) for heads in self.heads.values() for head in heads]


def test_modules_with_dicts_of_other_things_are_not_reported():
    net = Heads()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = fuse_mixed_ops(net, report=True)
    assert report.fused == [] and report.left_alone == []
