"""hdas::pair_concat: fake kernel, autograd, argument checks and the public function."""
import torch

from .._native import native_available, warn_fallback
from ..reference import functional as ref
from .mixed_node import _empty_like_format

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
        return _empty_like_format(s, (N, 2 * C, H, W))

    @torch.library.register_fake("hdas::pair_concat_backward")
    def _fake_backward(grad_out, states, weights, pairs):
        return [_empty_like_format(states[0], s.shape) for s in states], weights.new_empty(weights.shape)

    def _setup_context(ctx, inputs, output):
        states, weights, pairs = inputs
        ctx.save_for_backward(*states, weights)
        ctx.pairs = list(pairs)

    def _backward(ctx, grad_out):
        *states, weights = ctx.saved_tensors
        gs, gw = torch.ops.hdas.pair_concat_backward(grad_out, states, weights, ctx.pairs)
        return list(gs), gw, None

    torch.library.register_autograd("hdas::pair_concat", _backward, setup_context=_setup_context)

    def _no_double_backward(ctx, *grads):
        raise RuntimeError("hdas::pair_concat: double backward (create_graph=True through the fused op) is not supported")

    torch.library.register_autograd("hdas::pair_concat_backward", _no_double_backward, setup_context=lambda ctx, inputs, output: None)


def pair_concat(states, weights, pairs):
    """sum_k weights[k] * cat(states[i_k], states[j_k], dim=1), written into one output buffer."""
    states, pairs = list(states), [(int(i), int(j)) for i, j in pairs]
    check_args(states, weights, pairs)
    if native_available():
        return torch.ops.hdas.pair_concat(states, weights, [v for ij in pairs for v in ij])
    warn_fallback()
    return ref.pair_concat(states, weights, pairs)
