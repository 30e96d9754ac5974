"""Memory-lean execution of op modules: a forward that keeps none of their internals, and a
backward that recomputes them (the `recompute=True` mode of the fused modules and supernets).

`lean_apply(modules, inputs, scales)` returns `[scales[k] * modules[k](inputs[k]) for k]`. Its
forward keeps only the inputs (states: every op reading one state shares it, and the graph keeps
the states anyway), the 0-d scales and, per BatchNorm, its per-channel statistics; the backward
rebuilds one op at a time from its input and differentiates it. An input may be a tuple of
states, concatenated along the channels inside (a cell's output feeding the next cells'
preprocessing keeps nothing beyond the states it is made of). The result is that of the modules:

- BatchNorm running statistics are updated once, in the forward, as nn.BatchNorm2d updates them;
  the recomputation normalises with the forward's batch statistics (kept, not recomputed) and
  differentiates through them as a training-mode batch norm does; a BatchNorm that used its
  running statistics uses the values it read in the forward.
- Dropout is replayed from the random state the forward ran it with.
- The parameters differentiated are the tensors the forward read (a torch.func.functional_call
  that substituted them has returned by the time the backward runs).
- Autocast is replayed with the forward's settings.
- Parameter gradients that the backward does not ask for (an architecture step's
  autograd.grad(loss, alphas)) are not computed.

What is kept is chosen by cost (benchmarks/lean_options.py measures the options; docs/memory.md
has the figures): every intermediate of a DARTS op (ReLU, depthwise and pointwise conv outputs,
BatchNorm inputs) costs as many bytes as the op's input, and the most expensive one to rebuild
per byte, the first depthwise conv's output, saves less time than its memory is worth;
recomputing one op at a time rather than a whole node keeps the backward's transient to one op's
intermediates at the same arithmetic.

Ops run through a small interpreter of the modules DARTS-family ops are made of (Sequential, ReLU,
Conv2d, BatchNorm2d, pools, Dropout, identity, DARTS' SepConv/DilConv/ReLUConvBN and
FactorizedReduce's two shifted convolutions); ops that begin with a ReLU share one ReLU of their
input per call, as the fused modules do. Module hooks inside the ops do not fire. Under
torch.compile the call runs eagerly (a graph break), with the same result.
"""
from .apply import lean_apply
from .program import NotLeanable, check_leanable

__all__ = ["lean_apply", "check_leanable", "NotLeanable"]
