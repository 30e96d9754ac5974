"""Mixing shapes fuse_mixed_ops does not fuse are reported, each with its reason: a MixedOp without
forward that mixes in other methods (as AutoDL-Projects' NASNet search cells call theirs), and a
cell whose own forward mixes a ModuleDict of op lists (NAS-Bench-201's search cells). Stand-ins
written here from those descriptions."""
import warnings

import torch
from torch import nn

import dropin_standins as S
from hdas_ext import fuse_mixed_ops
from hdas_ext.dropin.fuse import CELL_MIX, OTHER_METHOD

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

    def forward(self, x, weightss):
        states = [x]
        for i in range(1, self.nodes):
            states.append(sum(sum(op(states[j]) * w for op, w in zip(self.links[f"{i}<-{j}"], weightss[k]))
                              for k, j in enumerate(range(i))))
        return states[-1]


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.edge = MethodsMixedOp(4)
        self.cell = DictCell(4)


def test_mixing_elsewhere_is_reported_with_its_reason(single_thread):
    torch.manual_seed(0)
    net = Holder().double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = fuse_mixed_ops(net, report=True)
    assert report.fused == []
    found = {e.path: e for e in report.left_alone}
    assert set(found) == {"edge", "cell"}
    assert found["edge"].reason == OTHER_METHOD
    assert found["edge"].detail == "forward_hard(x, weights, index), forward_soft(x, weights)"
    assert found["cell"].reason == CELL_MIX and found["cell"].detail.startswith("links: 3 edges of 4 ops")
    assert len(caught) == 1 and "2 MixedOp-like" in str(caught[0].message)
    assert type(net.edge) is MethodsMixedOp and type(net.cell) is DictCell  # left as they were
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


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
