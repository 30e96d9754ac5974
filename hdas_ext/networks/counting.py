"""Parameter and multiply-add counts, as DARTS-family papers report them."""
import copy

import torch
from torch import nn

__all__ = ["count_params", "count_multiply_adds"]


def count_params(model, exclude="auxiliary"):
    """Parameters whose name does not contain `exclude` (DARTS' count_parameters_in_MB leaves the
    auxiliary head out). Returns an int (divide by 1e6 for the papers' 'M')."""
    return sum(p.numel() for name, p in model.named_parameters() if not (exclude and exclude in name))


def count_multiply_adds(model, input_size, device="meta"):
    """Multiply-adds of one image through `model` in eval mode (so the auxiliary head, which runs
    only in training, is not counted), counting convolutions (output elements x input channels
    per group x kernel area) and linear layers, as quark0/darts#46 counts (523 M for DARTS_V2 on
    ImageNet; this gives 529.9 M; the 574 M DARTS reports is not reached by this convention).
    input_size: (C, H, W). The count runs on a copy on the 'meta' device: shapes only, no
    arithmetic and no memory; pass device='cpu' for a real forward pass."""
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size!r}")
    net = copy.deepcopy(model).to(device).eval()
    total = [0]

    def conv_hook(m, inputs, out):
        kh, kw = m.kernel_size
        total[0] += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inputs, out):
        total[0] += out[0].numel() * m.in_features

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        net(torch.zeros((1, *input_size), device=device))
    return total[0]
