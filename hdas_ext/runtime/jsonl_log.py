"""The JSON-lines log of a run: one object per line, flushed as written."""
import json
import os
import time

import numpy as np
import torch


class JsonlLogger:
    """Appends one JSON object per line and flushes it, so a killed run keeps every line written.
    `enabled=False` (non-zero DDP ranks) turns every call into a no-op. The folder is made at the
    first record, so a run refused before it starts leaves none behind."""

    def __init__(self, path, enabled=True):
        self.path = os.fspath(path)
        self.enabled = enabled

    def log(self, record=None, **fields):
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3)}
        row.update(record or {})
        row.update(fields)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")

    def read(self):
        """All records written so far (a missing file reads as none)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, epochs):
        """Keep the records of the first `epochs` epochs (epochs count from 1) and those of no epoch:
        a resumed run rewrites the epochs its checkpoint does not hold (records written before a kill)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        rows = [r for r in self.read() if r.get("epoch", 0) <= epochs]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def _json_default(x):
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return x.item()
    if isinstance(x, (np.generic,)):
        return x.item()
    raise TypeError(f"JsonlLogger: value of type {type(x).__name__} is not JSON serialisable")
