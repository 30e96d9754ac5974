"""A run's output folder, kept the same way by search and training: config.json, log.jsonl,
checkpoint.pt and tb/, written by rank 0 only; refusing to overwrite a run, finding the checkpoint
a resume continues, checking it against the resuming run's settings, and the line that says what
it holds when the run is interrupted."""
import json
import os

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .jsonl_log import JsonlLogger
from .tensorboard import open_tensorboard

CHECKPOINT, LOG, CONFIG = "checkpoint.pt", "log.jsonl", "config.json"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; its message says what the checkpoint holds and how to continue."""


class RunFolder:
    def __init__(self, path, main=True, tag="run"):
        self.path, self.main, self.tag = os.fspath(path), main, tag
        self.checkpoint = self.file(CHECKPOINT)
        self.log = JsonlLogger(self.file(LOG), enabled=main)
        self.saved = 0  # epochs the checkpoint holds

    def file(self, name):
        return os.path.join(self.path, name)

    def checkpoint_to_resume(self, resume):
        """The checkpoint a run continues, or None for a fresh start. resume False: a fresh run (a
        folder already holding a checkpoint is refused); True: this folder's checkpoint (without
        one the run starts from scratch and says so)."""
        if not resume:
            if os.path.isfile(self.checkpoint):
                raise FileExistsError(f"--output {self.path!r} already holds {CHECKPOINT}; pass --resume to "
                                      "continue that run or choose another --output")
            return None
        if os.path.isfile(self.checkpoint):
            return self.checkpoint
        if self.main:
            print(f"[{self.tag}] --resume: no checkpoint in {self.path!r}, starting from scratch", flush=True)
        return None

    def load(self, path, fmt, policy, config, map_location="cpu", unmarked=None):
        """The checkpoint at `path` after checking that it is one of `fmt` (a checkpoint without a
        format field counts as `unmarked`) and that `config` (a dict of today's settings) may
        continue it under `policy`."""
        state = load_checkpoint(path, map_location=map_location)
        if not isinstance(state, dict) or state.get("format", unmarked) != fmt or "config" not in state:
            raise ValueError(f"checkpoint {path} is not a {self.tag} checkpoint of this package")
        policy.check(state["config"], config, path, self.main)
        return state

    def start(self, config, epoch):
        """Create the folder, write config.json (`config`, torch_threads, the intra-op thread count
        the run computes with, and torch_cpu_capability, the vector ISA of torch's CPU kernels:
        results are bit-identical at one count on one ISA only) and drop log
        records of epochs after the first `epoch` (written after the checkpoint a resume continues)."""
        self.saved = epoch
        if not self.main:
            return
        os.makedirs(self.path, exist_ok=True)
        with open(self.file(CONFIG), "w") as f:
            json.dump({**config, "torch_threads": torch.get_num_threads(),
                       "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}, f, indent=2, sort_keys=True)
        self.log.truncate(epoch)

    def save(self, state, epochs):
        """Write the checkpoint of the first `epochs` epochs (atomically: a kill leaves the last one)."""
        if self.main:
            save_checkpoint(self.checkpoint, state)
        self.saved = epochs

    def interrupted(self, total):
        """Interrupted, saying what the checkpoint holds (of `total` epochs) and how to continue."""
        if not os.path.isfile(self.checkpoint):
            return Interrupted(f"interrupted before the first epoch ended; nothing to resume in {self.path}")
        return Interrupted(f"interrupted; {self.checkpoint} holds epoch {self.saved} of {total}: run the same "
                           "command with --resume to continue")

    def tensorboard(self, enabled, purge_step):
        """A SummaryWriter on tb/ (rank 0, when enabled and installed), else None."""
        if not (enabled and self.main):
            return None
        return open_tensorboard(self.file("tb"), purge_step, self.tag)
