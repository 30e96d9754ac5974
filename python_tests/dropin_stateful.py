"""Stand-ins of DARTS-family MixedOps whose forward depends on more than (x, weights), written here
from the published descriptions of the methods: an extra argument that picks one op once an edge
is decided (progressive edge decisions), an auxiliary skip scaled by a module-level schedule
(auxiliary-skip methods), a mask buffer, branches on the weights (hard Gumbel weights, ops skipped
when their weight is exactly zero after a projection). Nothing here imports hdas_ext."""
import torch

from dropin_standins import Cell, FactorizedReduce, Identity, MixedOp


class ExtraArgMixedOp(MixedOp):
    """Once its edge is decided the cell calls it with the chosen op's index and no weights."""

    def forward(self, x, weights, selected=None):
        if selected is None:
            return sum(w * op(x) for w, op in zip(weights, self._ops))
        return self._ops[selected](x)


class Schedule:
    """A module-level schedule object, as training scripts keep one: its rate moves during the search."""

    def __init__(self):
        self.rate = 0.0


SCHEDULE = Schedule()


class AuxSkipMixedOp(MixedOp):
    """Adds an auxiliary skip connection scaled by the schedule's current rate."""

    def __init__(self, C, stride):
        super().__init__(C, stride)
        self.aux = Identity() if stride == 1 else FactorizedReduce(C, C)
        self.use_aux = True

    def forward(self, x, weights):
        out = sum(w * op(x) for w, op in zip(weights, self._ops))
        if self.use_aux:
            out = out + self.aux(x) * self.aux_rate()
        return out

    def aux_rate(self):
        return SCHEDULE.rate


class MaskedMixedOp(MixedOp):
    """Scales each op by a mask entry (a buffer the search updates in place)."""

    def __init__(self, C, stride):
        super().__init__(C, stride)
        self.register_buffer("mask", torch.ones(len(self._ops)))

    def forward(self, x, weights):
        return sum(w * m * op(x) for w, m, op in zip(weights, self.mask, self._ops))


class MaskSkipMixedOp(MaskedMixedOp):
    """Runs only the ops its mask keeps."""

    def forward(self, x, weights):
        return sum(w * op(x) for w, m, op in zip(weights, self.mask, self._ops) if m)


class FewNonZeroMixedOp(MixedOp):
    """Runs only the ops with a non-zero weight when few are non-zero (hard one-hot weights), all
    of them otherwise."""

    def forward(self, x, weights):
        if int((weights != 0).sum()) <= 2:
            return sum(weights[k] * self._ops[k](x) for k in range(len(self._ops)) if weights[k] != 0)
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class SkipZeroMixedOp(MixedOp):
    """Skips the ops whose weight is exactly zero (a projection sets weights to zero)."""

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops) if w != 0)


class ContinueZeroMixedOp(MixedOp):
    """The same skip written as a loop with `continue`, on `not w`."""

    def forward(self, x, weights):
        out = 0
        for w, op in zip(weights, self._ops):
            if not w:
                continue
            out = out + w * op(x)
        return out


class PositiveOnlyMixedOp(MixedOp):
    """Skips the ops whose weight is not positive."""

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops) if w > 0)


class ThresholdMixedOp(MixedOp):
    """Skips the ops whose weight is below a threshold: chosen by the values (never fused)."""

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops) if w > 1e-3)


class CountingMixedOp(MixedOp):
    """Counts its calls in an attribute (a side effect the fused op would not have: the module is
    not fused, the sum in its forward is)."""

    def __init__(self, C, stride):
        super().__init__(C, stride)
        self.calls = 0

    def forward(self, x, weights):
        self.calls += 1
        return sum(w * op(x) for w, op in zip(weights, self._ops))


def set_rate(rate):
    SCHEDULE.rate = rate


class DecidingCell(Cell):
    """A search cell whose edges get decided: a decided edge (selected[e], an op index) is called as
    op(x, None, index)."""

    def forward(self, s0, s1, weights, edge_weights=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            terms = []
            for j, h in enumerate(states):
                edge, chosen = self._ops[offset + j], self.selected[offset + j]
                terms.append(edge(h, weights[offset + j]) if chosen is None else edge(h, None, chosen))
            offset += len(states)
            states.append(sum(terms))
        return torch.cat(states[-self.multiplier:], dim=1)
