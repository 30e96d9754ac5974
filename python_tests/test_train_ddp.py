"""DDP under torchrun with 2 gloo CPU processes equals one process on the same global batch."""
import json
import os
import subprocess
import sys

import pytest
import torch

from hdas_ext.train import make_config, train
from hdas_ext.train.loop import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = dict(epochs=2, train_subset=64, test_subset=60, init_channels=4, layers=3, augment=False,
              drop_path_prob=0.0, tensorboard=False, progress=False, seed=3)


def test_two_gloo_ranks_equal_one_process(tmp_path):
    # Rank r takes positions r, r+2, ... of the shared permutation, so the two per-rank batches of
    # 16 are exactly the single process's batch of 32; SyncBatchNorm makes BN see that global
    # batch, and lr 0.005 x world 2 equals the single process's 0.01. (At larger learning rates this
    # tiny network amplifies float rounding ~100x per step: max-pool ties, small-batch BN.)
    out2 = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hdas_ext.cli", "train", "--preset", "digits", "--output", out2, "--batch-size", "16",
           "--lr", "0.005", "--sync-bn", "--no-augment", "--epochs", "2", "--train-subset", "64",
           "--test-subset", "60", "--init-channels", "4", "--layers", "3", "--drop-path-prob", "0",
           "--no-tensorboard", "--no-progress", "--seed", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = make_config("digits", output=str(tmp_path / "single"), batch_size=32, lr=0.01, **COMMON)
        train(single)
    finally:
        torch.set_num_threads(n)

    a = torch.load(os.path.join(single.output, "last.pt"), weights_only=True)
    b = torch.load(os.path.join(out2, "last.pt"), weights_only=True)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    torch.manual_seed(3)
    init = build_model(single).state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a if a[k].is_floating_point()) > 1e-3
    logs = []
    for out in (single.output, out2):
        with open(os.path.join(out, "log.jsonl")) as f:
            logs.append([r for r in map(json.loads, f) if r["event"] == "epoch"])
    start = [json.loads(line) for line in open(os.path.join(out2, "log.jsonl"))][0]
    assert start["world"] == 2 and start["lr"] == pytest.approx(0.01)
    for ra, rb in zip(*logs):
        assert ra["train_images"] == rb["train_images"] == 64 and rb["test_images"] == 60
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["test_top1"] == pytest.approx(ra["test_top1"], abs=1e-9)
