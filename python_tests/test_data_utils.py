import os
import random

import numpy as np
import pytest
import torch

from hdas_ext.runtime import JsonlLogger, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state, set_seed
from hdas_ext.search.metrics import AverageMeter, accuracy

pytestmark = pytest.mark.usefixtures("single_thread")


def test_rng_state_roundtrip_through_a_weights_only_checkpoint(tmp_path):
    set_seed(3)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"rng": get_rng_state(), "epoch": 4})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.random(), np.random.rand(), torch.rand(5)  # move every generator on
    state = load_checkpoint(path)  # weights_only=True inside: no pickled classes allowed
    set_rng_state(state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    assert state["epoch"] == 4


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, {"v": torch.tensor(1)})

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"v": torch.tensor(2)})
    monkeypatch.undo()
    assert load_checkpoint(path)["v"].item() == 1
    assert os.listdir(path.parent) == ["ck.pt"]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_set_seed_validates():
    with pytest.raises(ValueError, match="seed"):
        set_seed(-1)


def test_jsonl_logger(tmp_path):
    log = JsonlLogger(tmp_path / "log.jsonl")
    log.log({"epoch": 0}, loss=torch.tensor(1.5))
    log.log(epoch=1, acc=np.float32(2.0))
    rows = log.read()
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["loss"] == 1.5 and rows[1]["acc"] == 2.0
    off = JsonlLogger(tmp_path / "other.jsonl", enabled=False)
    off.log(epoch=0)
    assert not (tmp_path / "other.jsonl").exists()


def test_average_meter_and_accuracy():
    m = AverageMeter()
    m.update(1.0, 3)
    m.update(torch.tensor(3.0), 1)
    assert m.avg == pytest.approx(1.5) and m.count == 4
    out = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5], [0.5, 0.2, 0.3]])
    target = torch.tensor([1, 2, 0, 2])
    top1, top2, top5 = accuracy(out, target, topk=(1, 2, 5))
    assert top1 == 25.0 and top2 == 75.0 and top5 == 100.0
    with pytest.raises(ValueError, match="target"):
        accuracy(out, target[:2])
