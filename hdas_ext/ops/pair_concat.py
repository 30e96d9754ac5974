"""hdas::pair_concat: the public function, its argument checks, the fake kernels and the registered
autograd."""
import torch

from .._native import native_available, warn_fallback
from . import reference as ref
from ._common import empty_like_format, register_no_double_backward

_OP = "hdas::pair_concat"


def check_args(states, weights, pairs):
    if len(states) == 0:
        raise ValueError(f"{_OP}: states must be a non-empty list of tensors")
    s0 = states[0]
    if s0.dim() != 4:
        raise ValueError(f"{_OP}: states[0] must be a 4-D tensor [N, C, H, W], got shape {list(s0.shape)}")
    for t, s in enumerate(states[1:], 1):
        if s.shape != s0.shape:
            raise ValueError(f"{_OP}: states[{t}] must have the shape of states[0] {list(s0.shape)}, got {list(s.shape)}")
        if s.dtype != s0.dtype:
            raise TypeError(f"{_OP}: states[{t}] must have dtype {s0.dtype}, got {s.dtype}")
    if len(pairs) == 0:
        raise ValueError(f"{_OP}: pairs must be a non-empty list of (i, j) pairs")
    for k, (i, j) in enumerate(pairs):
        for idx in (i, j):
            if not 0 <= idx < len(states):
                raise ValueError(f"{_OP}: pair {k} index {idx} is out of range for {len(states)} states")
    if tuple(weights.shape) != (len(pairs),):
        raise ValueError(f"{_OP}: weights must have shape [num_pairs] = [{len(pairs)}], got {list(weights.shape)}")


if native_available():

    @torch.library.register_fake("hdas::pair_concat")
    def _fake(states, weights, pairs):
        s = states[0]
        N, C, H, W = s.shape
        return empty_like_format(s, (N, 2 * C, H, W))

    @torch.library.register_fake("hdas::pair_concat_backward")
    def _fake_backward(grad_out, states, weights, pairs):
        return [empty_like_format(states[0], s.shape) for s in states], weights.new_empty(weights.shape)

    def _setup_context(ctx, inputs, output):
        states, weights, pairs = inputs
        ctx.save_for_backward(*states, weights)
        ctx.pairs = list(pairs)

    def _backward(ctx, grad_out):
        *states, weights = ctx.saved_tensors
        gs, gw = torch.ops.hdas.pair_concat_backward(grad_out, states, weights, ctx.pairs)
        return list(gs), gw, None

    torch.library.register_autograd("hdas::pair_concat", _backward, setup_context=_setup_context)
    register_no_double_backward("hdas::pair_concat")


def pair_concat(states, weights, pairs):
    """sum_k weights[k] * cat(states[i_k], states[j_k], dim=1), written into one output buffer."""
    states, pairs = list(states), [(int(i), int(j)) for i, j in pairs]
    check_args(states, weights, pairs)
    if native_available():
        return torch.ops.hdas.pair_concat(states, weights, [v for ij in pairs for v in ij])
    warn_fallback()
    return ref.pair_concat_all_states(states, weights, pairs)
