"""PC-DARTS' partial-channel MixedOp, fused: the ops mix the first C/k channels only; the other
channels pass through (max-pooled 2x2 at stride 2 when the edge reduces), and the output is the
channel shuffle in k groups of [mixed, passed]: output channel i*k holds mixed channel i, channel
i*k + g (g >= 1) holds input channel g*C/k + i. The op (hdas::mixed_node with groups = k) reads
the mixed channels in place and writes every channel straight into its shuffled position: no
concatenation or shuffle tensors, forward or backward."""
from torch import nn

from ..ops.partial_channels import check_partial_channels
from ..primitives import DARTS_PRIMITIVES
from .checks import check_call
from .fused import FusedMixedOp


class FusedPartialMixedOp(FusedMixedOp):
    """PC-DARTS' MixedOp (ops on C/k channels, the rest passed, channel shuffle in k groups), its
    mixed part fused as FusedMixedOp. State dict: `_ops` (built for C/k channels) and `mp`, as
    PC-DARTS' MixedOp. k = 1 is FusedMixedOp."""
    _partial = True

    def __init__(self, C, stride, k=4, primitives=DARTS_PRIMITIVES, affine=False, pool_bn=True, fuse_convs=True):
        check_partial_channels(k, C)
        super().__init__(C // k, stride, primitives, affine, pool_bn, fuse_convs=fuse_convs)
        self.k = k
        self.mp = nn.MaxPool2d(2, 2)

    def extra_repr(self):
        return f"k={self.k}, " + super().extra_repr()

    def forward(self, x, weights):
        weights = check_call(self, x, weights, self.k)
        _, C, H, W = x.shape  # checked before the parametric ops run on x
        check_partial_channels(self.k, C, "k", "x's channels", (H, W), self.stride, type(self).__name__)
        return self._fused(x, weights)

    def _fused(self, x, weights, active=None):
        return self._mix(x, weights, self.k, active)
