"""How a fused MixedOp runs each of its op modules: an OpPlan per op (for ops of other code, the
drop-in finds the plan by probing them: hdas_ext.dropin)."""
from collections import namedtuple

from .. import ops
from .operations import FactorizedReduce, takes_scale

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
