"""The weight folding for op modules of other code: w * op(x) computed as op(x) with w folded into
the BatchNorm whose output is op's output, and op's leading ReLU answered by a relu(x) shared with
the other ops."""
from functools import partial

import torch

from ..nn.operations import scaled_batch_norm


def _scaled_forward(bn, scale, x):
    return scaled_batch_norm(bn, x, scale)


def _shared(r, x):
    return r


@torch.compiler.disable  # replacing forwards mid-call is not traceable: torch.compile runs it eagerly
def run_folded(op, plan, x, r, scale):
    """scale * op(x) for an op module of other code, scale folded into its BatchNorm plan.bn (whose
    output the probe showed is op's output); r: relu(x) to answer its leading ReLU plan.relu with,
    or None. The two modules' forwards are replaced for this call only."""
    bn = op.get_submodule(plan.bn)
    relu = op.get_submodule(plan.relu) if r is not None else None
    bn.forward = partial(_scaled_forward, bn, scale)
    if relu is not None:
        relu.forward = partial(_shared, r)
    try:
        return op(x)
    finally:
        del bn.forward
        if relu is not None:
            del relu.forward
