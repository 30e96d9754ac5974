"""The run layer shared by search and training: the resume policy, the output folder and the
JSON-lines log's truncation on resume."""
import json
import re
import warnings

import pytest
import torch

from hdas_ext import genotypes as G
from hdas_ext.runtime import JsonlLogger, ResumePolicy, RunFolder, load_checkpoint, save_checkpoint, set_threads
from hdas_ext.runtime.resume import NETWORK, OPTIMISER

POLICY = ResumePolicy(
    refused={"cell": NETWORK, "width": NETWORK, "lr": OPTIMISER},
    free=frozenset(("output",)),
    genotypes=frozenset(("cell",)),
    refused_when={"aux_weight": (lambda c: c["aux_weight"] > 0, NETWORK)},
)
OLD = dict(cell="DARTS_V2", width=4, lr=0.1, aux_weight=0.4, output="a", delta=1.0)


def test_resume_policy_refuses_warns_and_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a library name and its JSON are the same cell; where the run writes is free
        assert POLICY.check(OLD, dict(OLD, cell=G.to_json(G.DARTS_V2), output="b"), "ck.pt") == []
    with pytest.warns(UserWarning, match=r"changed settings \['aux_weight', 'delta'\]"):
        assert POLICY.check(OLD, dict(OLD, delta=0.5, aux_weight=0.3), "ck.pt") == ["aux_weight", "delta"]
    new = dict(OLD, cell="PDARTS", width=8, lr=0.2, aux_weight=0.0)
    with pytest.raises(ValueError) as e:
        POLICY.check(OLD, new, "ck.pt")
    message = str(e.value)
    assert message.startswith("cannot resume ck.pt with changed ")
    assert re.search(r"aux_weight=0\.4 \(now 0\.0\), cell='DARTS_V2' \(now 'PDARTS'\), width=4 \(now 8\): "
                     "the checkpoint holds another network", message)
    assert "lr=0.1 (now 0.2): the checkpoint's optimiser and LR schedule would override them" in message
    assert message.endswith("start a new run (another --output)")


def test_run_folder_finds_the_checkpoint_to_resume(tmp_path, capsys):
    folder = RunFolder(tmp_path / "run", tag="test")
    assert folder.checkpoint_to_resume(False) is None
    assert capsys.readouterr().out == ""
    assert folder.checkpoint_to_resume(True) is None
    assert "no checkpoint in" in capsys.readouterr().out
    save_checkpoint(folder.checkpoint, {"format": "x", "config": {}})
    with pytest.raises(FileExistsError, match="pass --resume"):
        folder.checkpoint_to_resume(False)
    assert folder.checkpoint_to_resume(True) == folder.checkpoint
    with pytest.raises(ValueError, match="not a test checkpoint"):
        folder.load(folder.checkpoint, "y", POLICY, {})
    assert folder.load(folder.checkpoint, "x", POLICY, {})["format"] == "x"


def test_start_drops_log_records_the_checkpoint_does_not_hold(tmp_path):
    folder = RunFolder(tmp_path, tag="test")
    for epoch in (1, 2, 3):
        folder.log.log(epoch=epoch)
    folder.log.log(event="end")
    folder.start({"a": 1}, epoch=2)
    assert [r.get("epoch") for r in folder.log.read()] == [1, 2, None]
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1, "torch_threads": torch.get_num_threads(),
                                                                   "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    off = JsonlLogger(tmp_path / "log.jsonl", enabled=False)
    off.truncate(0)
    assert len(folder.log.read()) == 3


def test_set_threads():
    n = torch.get_num_threads()
    try:
        set_threads(None)
        assert torch.get_num_threads() == n
        set_threads(1)
        assert torch.get_num_threads() == 1
        for bad in (0, True, 1.5):
            with pytest.raises(ValueError, match="threads must be an int >= 1 or None"):
                set_threads(bad)
    finally:
        torch.set_num_threads(n)


def test_a_refused_run_leaves_no_folder(tmp_path):
    folder = RunFolder(tmp_path / "never", tag="test")
    with pytest.raises(ValueError, match="not a test checkpoint"):
        save_checkpoint(tmp_path / "other.pt", [1, 2])
        folder.load(tmp_path / "other.pt", "x", POLICY, {})
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("content", [b"", b"garbage, not a zip archive", "truncated"])
def test_an_unreadable_checkpoint_is_one_error_naming_it(tmp_path, content):
    path = tmp_path / "ck.pt"
    if content == "truncated":
        save_checkpoint(path, {"format": "x", "config": {}, "w": torch.zeros(1000)})
        content = path.read_bytes()[:700]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))} cannot be read") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_an_interrupted_run_says_what_its_checkpoint_holds(tmp_path):
    folder = RunFolder(tmp_path, tag="test")
    assert "nothing to resume" in str(folder.interrupted(5))
    folder.start({}, 0)
    folder.save({"format": "x", "config": {}}, 2)
    e = folder.interrupted(5)
    assert isinstance(e, KeyboardInterrupt)
    assert str(e) == f"interrupted; {folder.checkpoint} holds epoch 2 of 5: run the same command with --resume to continue"
