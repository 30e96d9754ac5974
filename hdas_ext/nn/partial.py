"""PC-DARTS' partial-channel MixedOp, fused: the ops mix the first C/k channels only; the other
channels pass through (max-pooled 2x2 at stride 2 when the edge reduces), and the output is the
channel shuffle in k groups of [mixed, passed]: output channel i*k holds mixed channel i, channel
i*k + g (g >= 1) holds input channel g*C/k + i. The op (hdas::mixed_node with groups = k) reads
the mixed channels in place and writes every channel straight into its shuffled position: no
concatenation or shuffle tensors, forward or backward."""
from torch import nn

from ..primitives import DARTS_PRIMITIVES
from .checks import check_call
from .fused import FusedMixedOp


def check_partial(x, k, stride, who):
    """The shapes a partial-channel mix needs: C divisible by k, even H and W at stride 2 (the
    2x2 pool of the passed channels must match the ops' stride-2 output)."""
    N, C, H, W = x.shape
    if C % k:
        raise ValueError(f"{who}: x's channels ({C}) must be divisible by k = {k}")
    if stride == 2 and (H % 2 or W % 2):
        raise ValueError(f"{who}: at stride 2, x's height and width must be even (the passed channels are "
                         f"max-pooled 2x2), got {H}x{W}")


def check_k(C, k):
    """The constructor arguments of a partial-channel MixedOp: an int k >= 1 dividing C."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if C % k:
        raise ValueError(f"C ({C}) must be divisible by k = {k}")


class FusedPartialMixedOp(FusedMixedOp):
    """PC-DARTS' MixedOp (ops on C/k channels, the rest passed, channel shuffle in k groups), its
    mixed part fused as FusedMixedOp. State dict: `_ops` (built for C/k channels) and `mp`, as
    PC-DARTS' MixedOp. k = 1 is FusedMixedOp."""
    _partial = True

    def __init__(self, C, stride, k=4, primitives=DARTS_PRIMITIVES, affine=False, pool_bn=True):
        check_k(C, k)
        super().__init__(C // k, stride, primitives, affine, pool_bn)
        self.k = k
        self.mp = nn.MaxPool2d(2, 2)

    def extra_repr(self):
        return f"k={self.k}, " + super().extra_repr()

    def forward(self, x, weights):
        weights = check_call(self, x, weights, self.k)
        check_partial(x, self.k, self.stride, type(self).__name__)  # before the parametric ops run on x
        return self._fused(x, weights)

    def _fused(self, x, weights, active=None):
        return self._mix(x, weights, self.k, active)
