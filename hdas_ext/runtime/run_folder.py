"""A run's output folder, kept the same way by search and training: config.json, log.jsonl,
checkpoint.pt and tb/, written by rank 0 only; refusing to overwrite a run, finding the checkpoint
a resume continues, and checking it against the resuming run's settings."""
import json
import os

from .checkpoint import load_checkpoint, save_checkpoint
from .jsonl_log import JsonlLogger
from .tensorboard import open_tensorboard

CHECKPOINT, LOG, CONFIG = "checkpoint.pt", "log.jsonl", "config.json"


class RunFolder:
    def __init__(self, path, main=True, tag="run"):
        self.path, self.main, self.tag = os.fspath(path), main, tag
        self.checkpoint = self.file(CHECKPOINT)
        self.log = JsonlLogger(self.file(LOG), enabled=main)

    def file(self, name):
        return os.path.join(self.path, name)

    def checkpoint_to_resume(self, resume):
        """The checkpoint a run continues, or None for a fresh start. `resume`: falsy (a fresh run;
        a folder already holding a checkpoint is refused), True or 'auto' (this folder's checkpoint
        when there is one) or a checkpoint path."""
        if not resume:
            if os.path.isfile(self.checkpoint):
                raise FileExistsError(f"--output {self.path!r} already holds {CHECKPOINT}; pass --resume to "
                                      "continue that run or choose another --output")
            return None
        if resume is True or resume == "auto":
            if os.path.isfile(self.checkpoint):
                return self.checkpoint
            if self.main:
                print(f"[{self.tag}] --resume: no checkpoint in {self.path!r}, starting from scratch", flush=True)
            return None
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"resume={resume!r}: no such checkpoint file")
        return resume

    def load(self, path, fmt, policy, config, map_location="cpu", unmarked=None):
        """The checkpoint at `path` after checking that it is one of `fmt` (a checkpoint without a
        format field counts as `unmarked`) and that `config` (a dict of today's settings) may
        continue it under `policy`."""
        state = load_checkpoint(path, map_location=map_location)
        if state.get("format", unmarked) != fmt:
            raise ValueError(f"{path}: not a {self.tag} checkpoint of this package")
        policy.check(state["config"], config, path, self.main)
        return state

    def start(self, config, epoch):
        """Create the folder, write config.json and drop log records of epochs >= `epoch` (written
        after the checkpoint a resume continues)."""
        if not self.main:
            return
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(CONFIG), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        self.log.truncate(epoch)

    def save(self, state):
        if self.main:
            save_checkpoint(self.checkpoint, state)

    def tensorboard(self, enabled, purge_step):
        """A SummaryWriter on tb/ (rank 0, when enabled and installed), else None."""
        if not (enabled and self.main):
            return None
        return open_tensorboard(self.file("tb"), purge_step, self.tag)
