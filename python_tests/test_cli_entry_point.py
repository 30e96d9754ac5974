"""The command line as a user meets it: each case runs the real entry point (`python -m
hdas_ext.cli`, what the `hdas` script calls) in a fresh process and checks the one line it ends
with, its exit code and what it leaves behind."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from hdas_ext.runtime import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SEARCH = ["--init-channels", "4", "--batch-size", "8", "--steps-per-epoch", "2", "--eval-batches", "1",
               "--no-tensorboard", "--seed", "1"]
TINY_TRAIN = ["--epochs", "1", "--train-subset", "32", "--test-subset", "16", "--init-channels", "4", "--layers", "3",
              "--no-tensorboard"]


def env(tmp_path, **extra):
    e = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **extra)
    e.pop("HDAS_DEBUG", None)
    return e


def hdas(tmp_path, *argv, extra_env=None, timeout=600):
    """(exit code, stdout, stderr) of `python -m hdas_ext.cli ARGV` run in tmp_path."""
    proc = subprocess.run([sys.executable, "-m", "hdas_ext.cli", *map(str, argv)], cwd=tmp_path,
                          env=env(tmp_path, **(extra_env or {})), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def last_line(err):
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def error_line(message):
    return f"{message} (HDAS_DEBUG=1 shows the traceback)"


# ---- unreadable files: one line naming the file ----------------------------------------------------------

def _damage(path, how):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    else:  # truncated, as by a full disk or an interrupted copy
        save_checkpoint(path, {"format": "x", "config": {}, "w": torch.zeros(4096)})
        path.write_bytes(path.read_bytes()[:5000])


@pytest.mark.parametrize("command, how", [("search", "truncated"), ("search", "empty"), ("train", "garbage"),
                                          ("train", "truncated")])
def test_resume_from_a_damaged_checkpoint(tmp_path, command, how):
    out = tmp_path / "run"
    out.mkdir()
    _damage(out / "checkpoint.pt", how)
    argv = (["search", "hs", "--cells-per-stage", "2", *TINY_SEARCH] if command == "search" else ["train", *TINY_TRAIN])
    code, _, err = hdas(tmp_path, *argv, "--output", out, "--resume")
    assert code == 1
    assert re.fullmatch(rf"hdas {command}: error: checkpoint {re.escape(str(out / 'checkpoint.pt'))} cannot be read "
                        r"\(.*\): it is damaged \(e\.g\. truncated\) or not a checkpoint of this package "
                        r"\(HDAS_DEBUG=1 shows the traceback\)", last_line(err)), err


@pytest.mark.parametrize("content, words", [
    (None, "stages: no such file '{path}'"),
    ("", "stages: file '{path}' is empty; it must hold a library name, a genotype string or JSON"),
    ('{"type": "StageGenotype", "DAG1": ', "stages: file '{path}': genotype JSON is malformed at line 1, column 34: Expecting value"),
])
def test_genotype_files_are_named(tmp_path, content, words):
    path = tmp_path / "runs" / "dist" / "genotype_best.json"
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_text(content)
    code, _, err = hdas(tmp_path, "train", "--stages", path, "--print-config")
    assert code == 1
    assert last_line(err).startswith("hdas train: error: " + words.format(path=path)), err


def test_a_damaged_dataset_file_is_named(tmp_path):
    from test_data import _write_fake_cifar

    _write_fake_cifar(str(tmp_path / "data"))
    bad = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    code, _, err = hdas(tmp_path, "train", "--preset", "cifar10", "--data-root", tmp_path / "data", *TINY_TRAIN,
                        "--batch-size", "4", "--num-workers", "0", "--output", tmp_path / "run")
    assert code == 1
    assert last_line(err) == error_line(f"hdas train: error: dataset cifar10: {bad} is damaged (truncated or not "
                                        "a CIFAR-10 batch); replace it, e.g. extract the archive again"), err


def test_download_without_network_is_one_line(tmp_path):
    proxy = "http://127.0.0.1:9"  # nothing listens there: every download fails at once
    code, _, err = hdas(tmp_path, "train", "--preset", "cifar10", "--data-root", tmp_path / "data", "--download",
                        *TINY_TRAIN, "--output", tmp_path / "run",
                        extra_env=dict(http_proxy=proxy, https_proxy=proxy, HTTP_PROXY=proxy, HTTPS_PROXY=proxy,
                                       no_proxy="", NO_PROXY=""))
    assert code == 1
    assert re.fullmatch(r"hdas train: error: download of CIFAR-10 into '.*data' failed \(.*\); fetch https?://\S+ "
                        r"by hand and extract it there \(HDAS_DEBUG=1 shows the traceback\)", last_line(err)), err


# ---- Ctrl-C ------------------------------------------------------------------------------------------------

def test_ctrl_c_stops_with_one_line_and_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hdas_ext.cli", "search", "hs", "--cells-per-stage", "2",
                             *TINY_SEARCH, "--epochs", "1000", "--no-plot", "--output", str(out)],
                            cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    line = last_line(err)
    m = re.fullmatch(rf"hdas search: interrupted; {re.escape(str(out / 'checkpoint.pt'))} holds epoch (\d+) of "
                     r"1000: run the same command with --resume to continue", line)
    assert m, err[-3000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == int(m.group(1)) >= 1


# ---- options ---------------------------------------------------------------------------------------------

def test_a_mistyped_option_shows_the_subcommands_usage(tmp_path):
    code, _, err = hdas(tmp_path, "search", "hs", "--epochz", "3")
    assert code == 2 and err.startswith("usage: hdas search ")
    assert last_line(err) == "hdas search: error: unrecognized arguments: --epochz (did you mean --epochs?) 3"


@pytest.mark.parametrize("command, option", [("train", "--max-train-steps"), ("search", "--out")])
def test_old_spellings_are_gone(tmp_path, command, option):
    code, _, err = hdas(tmp_path, command, *(["hs"] if command == "search" else []), option, "1")
    assert code == 2 and err.startswith(f"usage: hdas {command} ")
    assert last_line(err).startswith(f"hdas {command}: error: unrecognized arguments: {option}")


@pytest.mark.parametrize("argv, line", [
    (["search", "cells", "--genotype", "PDARTS"], "genotype (--genotype) applies to the hs and distribution searches, not to 'cells'"),
    (["search", "cells", "--cells-per-stage", "4"], "cells_per_stage (--cells-per-stage) applies to the hs search, not to 'cells'"),
    (["search", "cells", "--window", "3"], "window (--window) applies to the hs and distribution searches, not to 'cells'"),
    (["search", "cells", "--delta", "1"], "delta (--delta) applies to the hs and distribution searches, not to 'cells'"),
    (["search", "hs", "--layers", "5"], "layers (--layers) applies to the cells and hc searches, not to 'hs'"),
    (["search", "hs", "--theta", "params"], "theta (--theta) applies to the distribution search, not to 'hs'"),
    (["search", "hs", "--partial-channels", "2"], "partial_channels (--partial-channels) applies to the cells and hc searches, not to 'hs'"),
    (["random-baseline", "--space", "cells", "--window", "3"], "window (--window) applies to the hs and distribution spaces, not to 'cells'"),
])
def test_an_option_that_does_not_apply_is_refused(tmp_path, argv, line):
    code, _, err = hdas(tmp_path, *argv)
    assert code == 1 and last_line(err) == error_line(f"hdas {argv[0]}: error: {line}"), err


def test_help_shows_every_default(tmp_path):
    code, out, _ = hdas(tmp_path, "random-baseline", "--help")
    text = " ".join(out.split())
    assert code == 0
    for words in ("the search space sampled (default: hs)", "random architectures (default: 8)",
                  "architecture sampler (default: 0)", "(default: those of --stages, else 6",
                  "sliding-window size (default: 3)", "cells per stage (default: 4)",
                  "skip training it (default: train it)", "or the last (default: best)"):
        assert words in text, words
    code, out, _ = hdas(tmp_path, "search", "--help")
    assert "(default: max_pool_3x3,avg_pool_3x3,skip_connect,none; hs, distribution only)" in " ".join(out.split())


# ---- runs --------------------------------------------------------------------------------------------------

def test_search_counts_epochs_from_one_and_names_its_picture(tmp_path):
    out = tmp_path / "run"
    no_dot = dict(PATH=str(tmp_path / "bin"))  # graphviz's `dot` binary out of reach
    code, stdout, err = hdas(tmp_path, "search", "hs", "--cells-per-stage", "2", *TINY_SEARCH, "--epochs", "2",
                             "--amp", "bf16", "--device", "cpu", "--output", out, extra_env=no_dot)
    assert code == 0, err[-3000:]
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert "[search] epoch 1/2 " in stdout and "[search] epoch 2/2 " in stdout
    best = rows[-1]["best_epoch"]
    assert f"best genotype (epoch {best}, arch-half" in stdout and best in (1, 2)
    assert stdout.count(f"[search] genotype picture: graphviz 'dot' binary not found; wrote the source to "
                        f"{out / 'genotype.dot'}") == 1 and (out / "genotype.dot").is_file()
    assert "\r" not in stdout + err  # progress off a terminal: no carriage-return frames


def test_train_counts_epochs_from_one_and_takes_bf16_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    code, stdout, err = hdas(tmp_path, "train", *TINY_TRAIN, "--epochs", "2", "--amp", "bf16", "--device", "cpu",
                             "--output", out)
    assert code == 0, err[-3000:]
    assert "[train] epoch 1/2 " in stdout and "[train] epoch 2/2 " in stdout and "\r" not in stdout + err
    summary = json.loads(stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in open(out / "log.jsonl") if '"epoch"' in line]
    assert [r["epoch"] for r in rows if r["event"] == "epoch"] == [1, 2] and summary["best_epoch"] in (1, 2)


def test_plot_without_dot_writes_the_source_and_exits_0(tmp_path):
    code, stdout, err = hdas(tmp_path, "plot", "DARTS_V2", "--output", tmp_path / "x.png",
                             extra_env=dict(PATH=str(tmp_path / "bin")))
    assert code == 0 and stdout.strip() == str(tmp_path / "x.dot") and (tmp_path / "x.dot").is_file()
    assert last_line(err).startswith(f"hdas plot: note: graphviz 'dot' binary not found; wrote the source to "
                                     f"{tmp_path / 'x.dot'}")


def test_random_baseline_survives_a_zero_sample_and_resumes(tmp_path):
    # evaluation patched to score 0 %: a sampled network that never hits a label
    script = ("import sys\nimport hdas_ext.train.loop as loop\n"
              "real = loop.evaluate\n"
              "def zero(*a, **k):\n    r = real(*a, **k)\n    return dict(r, test_top1=0.0)\n"
              "loop.evaluate = zero\nfrom hdas_ext.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    argv = ["random-baseline", "--space", "hs", "--samples", "1", "--cells-per-stage", "2", "--searched-acc", "40",
            *TINY_TRAIN[:-3], "--no-tensorboard", "--output", "rb"]

    def run(*extra):
        p = subprocess.run([sys.executable, "-c", script, *argv, *extra], cwd=tmp_path, env=env(tmp_path),
                           capture_output=True, text=True, timeout=600)
        return p.returncode, p.stdout, p.stderr

    code, out, err = run()
    assert code == 0, err[-3000:]
    assert "--resume: no checkpoint" not in out + err
    assert "[random-baseline] RI undefined: the random architectures' mean accuracy is 0 %" in out
    summary = json.load(open(tmp_path / "rb" / "random_baseline.json"))
    assert summary["RI"] is None and summary["random_mean"] == 0.0
    code, _, err = run()  # a rerun without --resume refuses the finished run
    assert code == 1 and "already holds checkpoint.pt; pass --resume" in last_line(err)
    code, out, err = run("--resume")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["samples"] == 1, err[-3000:]
