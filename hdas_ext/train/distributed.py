"""torchrun/DDP plumbing: process group from the environment, SyncBatchNorm (torch's on GPUs, a
small differentiable all-reduce version on CPU, where torch's refuses to run), reductions."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..utils import check_device


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1


def init_distributed(device="auto"):
    """Join the process group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK), NCCL on CUDA and
    gloo on CPU; without torchrun, a single process. Returns a DistContext."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    check_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        dev = torch.device("cuda", local_rank) if (world > 1 or device == "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, dev)


def cleanup_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
    Per-channel sums and sums of squares are all-reduced with the differentiable all_reduce of
    torch.distributed.nn, so the backward pass is that of one BN over the concatenated batch."""

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


def all_reduce_sum(values, ctx):
    """Sum a list of floats over ranks (one collective)."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, ctx):
    """Every rank's `obj`, as a list indexed by rank (only the list on rank 0 is used)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx):
    if ctx.distributed:
        dist.barrier()
