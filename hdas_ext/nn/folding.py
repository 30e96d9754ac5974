"""How a fused MixedOp runs each of its op modules (an OpPlan per op), and the weight folding for
op modules of other code: w * op(x) computed as op(x) with w folded into the BatchNorm whose output
is op's output, and op's leading ReLU answered by a relu(x) shared with the other ops."""
from collections import namedtuple
from functools import partial

import torch

from .. import ops
from .operations import FactorizedReduce, scaled_batch_norm, takes_scale

# code: kernel code (ops.CODES, EXTRA or ADD); label: a name for repr and reports; bn: path (in the
# op) of the BN the kernel applies (pools) or the weight is folded into (ADD); relu: path of a
# leading ReLU whose output may be shared (ADD), else None.
OpPlan = namedtuple("OpPlan", "code label bn relu")


def is_pool(code):
    return code in (ops.CODES["max_pool_3x3"], ops.CODES["avg_pool_3x3"])


def plans_by_name(modules, primitives, stride, fused_bn):
    """Plans for ops of this package's primitives (built by make_op), from their names."""
    plans = []
    for name, m in zip(primitives, modules):
        if name in ("max_pool_3x3", "avg_pool_3x3"):
            wrapped = not hasattr(m, "kernel_size")  # Sequential(pool, BatchNorm2d)
            if not wrapped or fused_bn:
                plans.append(OpPlan(ops.CODES[name], name, "1" if wrapped else None, None))
            else:
                plans.append(OpPlan(ops.EXTRA, name, None, None))
        elif name == "none" or (name == "skip_connect" and stride == 1):
            plans.append(OpPlan(ops.CODES[name], name, None, None))
        elif takes_scale(m):
            plans.append(OpPlan(ops.ADD, name, None, "relu" if isinstance(m, FactorizedReduce) else "op.0"))
        else:
            plans.append(OpPlan(ops.EXTRA, name, None, None))
    return plans


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
