"""What the two ops' Python halves share: outputs allocated as the kernels allocate them, and the
refusal of a double backward."""
import torch
from torch._prims_common import suggest_memory_format


def empty_like_format(x, shape):
    """A new tensor of `shape` in the layout the kernels give outputs: that of x."""
    fmt = torch.channels_last if suggest_memory_format(x) == torch.channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def acc_dtype(dtype):
    """The dtype the kernels accumulate (and return statistics) in for inputs of `dtype`."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def no_double_backward(op):
    return f"{op}: double backward (create_graph=True through the fused op) is not supported"


def register_no_double_backward(op):
    """Registers an autograd for `op`'s backward op ("<op>_backward") that refuses to run."""
    message = no_double_backward(op)

    def refuse(ctx, *grads):
        raise RuntimeError(message)

    torch.library.register_autograd(f"{op}_backward", refuse, setup_context=lambda ctx, inputs, output: None)


def engine_needs(ctx, first, n_fixed):
    """Which tensor inputs of a custom autograd Function (its arguments from `first` on, all tensors)
    the running backward needs gradients for: a weight step needs the parameters', an architecture
    step (autograd.grad w.r.t. the alphas) does not, and computing them anyway would cost a weight
    gradient per convolution. Inputs from index n_fixed on must arrive as views, whose nodes the
    engine can be asked about (not leaves: it refuses those inside autograd.grad)."""
    need = list(ctx.needs_input_grad[first:])
    will = getattr(torch._C, "_will_engine_execute_node", None)
    if will is not None:
        for i, (node, _) in enumerate(ctx.next_functions[n_fixed:], n_fixed):
            if need[i] and node is not None:
                need[i] = will(node)
    return need
