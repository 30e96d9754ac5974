"""Small shared utilities: the device option's check, seeding and RNG state, running averages
and top-k accuracy. (Checkpoint files and the JSON-lines log are in hdas_ext.runtime.)"""
import random

import numpy as np
import torch

__all__ = ["check_device", "set_seed", "get_rng_state", "set_rng_state", "AverageMeter", "accuracy"]


def check_device(device, name="device"):
    """device: 'auto', 'cpu', 'cuda' or 'cuda:N', and CUDA present when asked for; ValueError
    naming the option otherwise (before any process group or tensor is made)."""
    ok = isinstance(device, str) and (device in ("auto", "cpu", "cuda") or
                                      (device.startswith("cuda:") and device[5:].isdigit()))
    if not ok:
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{name}={device!r} but CUDA is not available here")


def set_seed(seed, deterministic=False):
    """Seed python, numpy and torch (all CUDA devices). `deterministic` also asks torch for
    deterministic kernels (warn-only, since some GPU kernels have no deterministic variant)
    and turns off cuDNN autotuning, whose choice of algorithm varies between runs."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def get_rng_state():
    """Every global RNG state as plain values and tensors, so that a checkpoint holding it loads
    with torch.load(weights_only=True) (numpy's state is a tuple holding an ndarray, which that
    loader refuses; it is stored as a tensor instead)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Inverse of get_rng_state."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class AverageMeter:
    """Running (weighted) average."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, value, n=1):
        if isinstance(value, torch.Tensor):
            value = value.item()
        self.sum += float(value) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent (DARTS convention), one float per k. A k larger than the number
    of classes is clipped to it (top-5 of a 3-class problem is 100 %)."""
    if output.dim() != 2:
        raise ValueError(f"accuracy: output must be [batch, classes], got shape {tuple(output.shape)}")
    if target.shape != output.shape[:1]:
        raise ValueError(f"accuracy: target must have shape [{output.shape[0]}], got {tuple(target.shape)}")
    maxk = min(max(topk), output.size(1))
    batch = target.size(0)
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).float().sum().item() * 100.0 / batch for k in topk]
