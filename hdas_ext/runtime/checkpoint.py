"""Checkpoint files: atomic writes, weights-only loads."""
import os
import tempfile

import torch


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
    tensors and plain Python values, never pickled classes. A file that does not load (truncated
    by a copy or a full disk, empty, or no checkpoint at all) raises one ValueError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint path {path!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, OSError... by damage
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ValueError(f"checkpoint {path} cannot be read ({reason}): it is damaged (e.g. truncated) or not a "
                         "checkpoint of this package") from None


def cpu_state(module):
    """A module's state dict detached on the CPU (a plain file any machine loads)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}
