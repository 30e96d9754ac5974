"""The run layer shared by search and training: the resume policy, the output folder and the
JSON-lines log's truncation on resume."""
import re
import warnings

import pytest

from hdas_ext import genotypes as G
from hdas_ext.runtime import JsonlLogger, ResumePolicy, RunFolder, save_checkpoint
from hdas_ext.runtime.resume import NETWORK, OPTIMISER

POLICY = ResumePolicy(
    refused={"cell": NETWORK, "width": NETWORK, "lr": OPTIMISER},
    free=frozenset(("output",)),
    genotypes=frozenset(("cell",)),
    refused_when={"aux_weight": (lambda c: c["aux_weight"] > 0, NETWORK)},
    renamed={"C": "width"},
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


def test_resume_policy_reads_old_names():
    old = {("C" if k == "width" else k): v for k, v in OLD.items()}
    with pytest.raises(ValueError, match=re.escape("width=4 (now 8)")):
        POLICY.check(old, dict(OLD, width=8), "ck.pt")
    assert POLICY.check(old, dict(OLD), "ck.pt") == []


def test_run_folder_finds_the_checkpoint_to_resume(tmp_path, capsys):
    folder = RunFolder(tmp_path / "run", tag="test")
    assert folder.checkpoint_to_resume(False) is None
    assert folder.checkpoint_to_resume("auto") is None
    assert "no checkpoint in" in capsys.readouterr().out
    save_checkpoint(folder.checkpoint, {"format": "x", "config": {}})
    with pytest.raises(FileExistsError, match="pass --resume"):
        folder.checkpoint_to_resume(False)
    assert folder.checkpoint_to_resume(True) == folder.checkpoint == folder.checkpoint_to_resume("auto")
    with pytest.raises(FileNotFoundError, match="resume="):
        folder.checkpoint_to_resume(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="not a test checkpoint"):
        folder.load(folder.checkpoint, "y", POLICY, {})
    assert folder.load(folder.checkpoint, "x", POLICY, {})["format"] == "x"


def test_start_drops_log_records_the_checkpoint_does_not_hold(tmp_path):
    folder = RunFolder(tmp_path, tag="test")
    for epoch in range(3):
        folder.log.log(epoch=epoch)
    folder.log.log(event="end")
    folder.start({"a": 1}, epoch=2)
    assert [r.get("epoch") for r in folder.log.read()] == [0, 1, None]
    assert (tmp_path / "config.json").read_text().strip().startswith("{")
    off = JsonlLogger(tmp_path / "log.jsonl", enabled=False)
    off.truncate(0)
    assert len(folder.log.read()) == 3


def test_a_refused_run_leaves_no_folder(tmp_path):
    folder = RunFolder(tmp_path / "never", tag="test")
    with pytest.raises(FileNotFoundError):
        folder.checkpoint_to_resume(str(tmp_path / "missing.pt"))
    assert not (tmp_path / "never").exists()
