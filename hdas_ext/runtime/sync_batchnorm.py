"""BatchNorm over the global batch of all ranks: torch's SyncBatchNorm on GPUs, a small
differentiable all-reduce version on CPU (gloo), where torch's refuses to run."""
import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the incoming gradients (every
    rank's loss depends on the sum). torch.distributed.nn.functional.all_reduce does the same but
    is deprecated."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks, for gloo/CPU.
    Per-channel sums and sums of squares are all-reduced differentiably, so the backward pass is
    that of one BN over the concatenated batch."""

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        C = x.size(1)
        dtype, x = x.dtype, x.float()  # statistics in fp32 also under autocast
        local = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)),
                           x.new_full((1,), x.numel() // C)])
        total = _SumOverRanks.apply(local)
        n = total[-1]
        mean = total[:C] / n
        var = total[C:2 * C] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        y = (x - mean.view(1, C, 1, 1)) * torch.rsqrt(var.view(1, C, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, C, 1, 1) + self.bias.view(1, C, 1, 1)
        return y.to(dtype)


def convert_sync_batchnorm(model, device):
    """torch.nn.SyncBatchNorm on CUDA; CPUSyncBatchNorm (same parameters and buffers) on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_bn(model)


def _swap_bn(module):
    if type(module) is nn.BatchNorm2d:
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, _swap_bn(child))
    return module
