"""Small shared utilities: seeding and RNG state, atomic checkpoints, a JSON-lines logger,
running averages and top-k accuracy."""
import json
import os
import random
import tempfile
import time

import numpy as np
import torch

__all__ = [
    "set_seed", "get_rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
    "JsonlLogger", "AverageMeter", "accuracy",
]


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


def save_checkpoint(path, state):
    """torch.save to a temporary file in the same folder, fsync, then os.replace: a kill at any
    moment leaves either the old or the new checkpoint, never a truncated one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by save_checkpoint. Uses weights_only=True: checkpoints hold only
    tensors and plain Python values, never pickled classes."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint path {path!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


class JsonlLogger:
    """Appends one JSON object per line and flushes it, so a killed run keeps every line written.
    `enabled=False` (non-zero DDP ranks) turns every call into a no-op."""

    def __init__(self, path, enabled=True):
        self.path = os.fspath(path)
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def log(self, record=None, **fields):
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3)}
        row.update(record or {})
        row.update(fields)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")

    def read(self):
        """All records written so far (a missing file reads as none)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def _json_default(x):
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    if isinstance(x, (np.generic,)):
        return x.item()
    raise TypeError(f"JsonlLogger: value of type {type(x).__name__} is not JSON serialisable")


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
