"""The command line answers bad options, names and files with one line naming the culprit (no
traceback) and a non-zero exit."""
import json
import re

import pytest

from hdas_ext.cli import main


@pytest.mark.parametrize("argv,words", [
    (["train", "--epochs", "-1"], "hdas train: error: epochs must be an int >= 1, got -1"),
    (["train", "--cell", "NOPE"], "hdas train: error: cell: unknown genotype name 'NOPE'"),
    (["train", "--cell", "Genotype(normal=[("], "hdas train: error: genotype string is not valid syntax"),
    (["train", "--resume", "/nonexistent/checkpoint.pt"], "hdas train: error: resume='/nonexistent/checkpoint.pt'"),
    (["search", "hs", "--device", "gpu"], "hdas search: error: device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["search", "hs", "--lr-min", "1"], "hdas search: error: lr_min must be in [0, lr=0.025]"),
    (["search", "hs", "--momentum", "5"], "hdas search: error: momentum must be in [0, 1), got 5.0"),
    (["random-baseline", "--samples", "0", "--searched-acc", "50"], "hdas random-baseline: error: samples must be"),
    (["random-baseline", "--stages", "HS_DAS_CIFAR", "--searched-acc", "150"],
     "hdas random-baseline: error: searched_acc must be a top-1 accuracy in percent"),
    (["random-baseline", "--stages", "HS_DAS_CIFAR", "--searched-acc", "50", "--window", "9"],
     "hdas random-baseline: error: window must be in [2, N+1] = [2, 7]"),
    (["space-size", "--nodes", "1000"], "hdas space-size: a count has more than"),
    (["plot", "DARTS_V2", "--format", "svg", "--out", "y.png"], "hdas plot: --format svg does not match --out 'y.png'"),
    (["plot", "DARTS_V2", "--out", "/nonexistent/dir/x.png"], "hdas plot: --out: folder '/nonexistent/dir' does not exist"),
])
def test_bad_input_is_one_line(argv, words, monkeypatch):
    monkeypatch.delenv("HDAS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert isinstance(e.value.code, str) and re.search(re.escape(words), e.value.code), e.value.code
    assert "\n" not in e.value.code


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("HDAS_DEBUG", "1")
    with pytest.raises(ValueError, match="epochs must be"):
        main(["train", "--epochs", "-1"])


def test_print_config_needs_no_data(capsys):
    assert main(["train", "--preset", "cifar10", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["epochs"], cfg["batch_size"], cfg["data_root"]) == (600, 96, None)
