"""torchrun/DDP plumbing shared by search and training: the process group from the environment
and the few collectives the loops need. Every helper is a no-op in a single process."""
import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist



def check_device(device, name="device"):
    """device: 'auto', 'cpu', 'cuda' or 'cuda:N', and CUDA present when asked for; ValueError
    naming the option otherwise (before any process group or tensor is made)."""
    ok = isinstance(device, str) and (device in ("auto", "cpu", "cuda") or
                                      (device.startswith("cuda:") and device[5:].isdigit()))
    if not ok:
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{name}={device!r} but CUDA is not available here")


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


def is_main_process():
    """Rank 0 of a torchrun launch, or a lone process; read from the environment, so it holds
    also after the process group is gone."""
    return os.environ.get("RANK", "0") == "0"


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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


@contextlib.contextmanager
def distributed_session(device="auto"):
    """init_distributed for the length of a run; the process group is destroyed at the end when
    this call created it (a caller that set one up keeps it)."""
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(values, device):
    """Sum a list of floats over ranks (one collective)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t)
    return t.tolist()


def all_reduce_mean_(tensors):
    """Average tensors over ranks in place (one flattened all-reduce)."""
    if not is_distributed() or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return tensors


def broadcast_(tensors, src=0):
    """Rank src's values in every rank's tensors."""
    if is_distributed():
        for t in tensors:
            dist.broadcast(t.data, src)


def gather_objects(obj):
    """Every rank's `obj`, as a list indexed by rank (only the list on rank 0 is used)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier():
    if is_distributed():
        dist.barrier()
