"""The command line answers bad options, names and files with one line naming the culprit (no
traceback) and a non-zero exit."""
import argparse
import ast
import json
import os
import re
import subprocess
import sys
import typing
from dataclasses import fields

import pytest

from hdas_ext.cli import build_parser, main
from hdas_ext.commands import plot
from hdas_ext.extras import EXTRAS, install_hint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv,words", [
    (["train", "--epochs", "-1"], "hdas train: error: epochs must be an int >= 1, got -1"),
    (["train", "--cell", "NOPE"], "hdas train: error: cell: unknown genotype name 'NOPE'"),
    (["train", "--cell", "Genotype(normal=[("], "hdas train: error: genotype string is not valid syntax"),
    (["train", "--stages", "/nonexistent/genotype_best.json"],
     "hdas train: error: stages: no such file '/nonexistent/genotype_best.json'"),
    (["search", "hs", "--device", "gpu"], "hdas search: error: device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["search", "hs", "--lr-min", "1"], "hdas search: error: lr_min must be in [0, lr=0.025]"),
    (["search", "hs", "--momentum", "5"], "hdas search: error: momentum must be in [0, 1), got 5.0"),
    (["random-baseline", "--samples", "0", "--searched-acc", "50"], "hdas random-baseline: error: samples must be"),
    (["random-baseline", "--stages", "HS_DAS_CIFAR", "--searched-acc", "150"],
     "hdas random-baseline: error: searched_acc must be a top-1 accuracy in percent"),
    (["random-baseline", "--stages", "HS_DAS_CIFAR", "--searched-acc", "50", "--window", "9"],
     "hdas random-baseline: error: window must be in [2, N+1] = [2, 7]"),
    (["random-baseline", "--space", "stage"], "hdas random-baseline: error: space must be one of cells, hc, hs, dist"),
    (["search", "hs", "--amp", "fp16", "--device", "cpu"], "hdas search: error: amp='fp16' needs a CUDA device"),
    (["train", "--amp", "fp16", "--device", "cpu"], "hdas train: error: amp='fp16' needs a CUDA device"),
    (["train", "--stages", "HS_DAS_CIFAR", "--layers", "5"], "hdas train: error: layers (--layers) applies to chain"),
    (["train", "--decay", "0.5"], "hdas train: error: decay must be left unset unless schedule is 'step'"),
    (["space-size", "--nodes", "1000"], "hdas space-size: error: a count has more than"),
    (["plot", "DARTS_V2", "--format", "svg", "--output", "y.png"],
     "hdas plot: error: --format svg does not match --output 'y.png'"),
    (["plot", "DARTS_V2", "--output", "/nonexistent/dir/x.png"],
     "hdas plot: error: --output: folder '/nonexistent/dir' does not exist"),
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


@pytest.mark.parametrize("argv,error", [
    (["train", "--epochs", "-1"], ValueError),
    (["search", "hs", "--epochs", "0"], ValueError),
    (["random-baseline", "--samples", "0", "--searched-acc", "50"], ValueError),
    (["space-size", "--nodes", "1000"], ValueError),
    (["plot", "NASNET"], ValueError),
])
def test_debug_shows_the_traceback_of_every_command(argv, error, monkeypatch):
    monkeypatch.setenv("HDAS_DEBUG", "1")
    with pytest.raises(error):
        main(argv)


@pytest.mark.parametrize("command", [["search", "hs"], ["train"], ["random-baseline"], ["plot", "DARTS_V2"]])
def test_old_spellings_and_prefixes_are_unknown_options(command, capsys):
    for old in ("--out", "--C", "--workers", "--max-train-steps", "--max-eval-steps", "--memory", "--epoch"):
        with pytest.raises(SystemExit) as e:
            main(command + [old, "1"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"usage: hdas {command[0]}" in err and f"unrecognized arguments: {old}" in err, err


def test_search_and_train_spell_shared_settings_alike():
    from hdas_ext.search import SearchConfig
    from hdas_ext.train import TrainConfig

    shared = {f.name for f in fields(SearchConfig)} & {f.name for f in fields(TrainConfig)}
    assert {"output", "init_channels", "num_workers", "epochs", "batch_size", "lr", "device", "amp", "resume",
            "steps_per_epoch", "eval_batches", "progress"} <= shared
    hints = typing.get_type_hints(SearchConfig), typing.get_type_hints(TrainConfig)
    for name in shared:  # one kind of option: a flag in both, or a value in both
        assert (hints[0][name] is bool) == (hints[1][name] is bool), name
    parser = build_parser()
    for command in (["search", "hs"], ["train"], ["random-baseline"]):
        args = parser.parse_args(command + ["--resume", "--steps-per-epoch", "2", "--eval-batches", "1"])
        assert (args.resume, args.steps_per_epoch, args.eval_batches) == (True, 2, 1)


@pytest.mark.parametrize("command", ["search", "train", "random-baseline", "space-size", "plot"])
def test_every_option_shows_its_default(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:  # plain flags (--json, --print-config) default to off
        if action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
            assert "default" in (action.help or ""), (command, action.option_strings)


def test_install_hints_name_extras_of_setup_py():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    extras = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "extras_require"))
    for module, (requirement, extra) in EXTRAS.items():
        assert requirement in extras.get(extra, ()), (module, extra)
        assert f"(the '{extra}' extra): pip install {requirement}" in install_hint(module + ".sub")
    assert install_hint("numpy") is None


def test_plot_formats_are_the_renderers():
    from hdas_ext import viz
    assert plot.FORMATS == viz.FORMATS


def test_commands_run_without_optional_packages(tmp_path):
    # Stub packages that fail to import stand in for a bare install: --help and space-size need
    # none of them; plot names the extra to install; a search and a training run go on without
    # TensorBoard, progress bars and the genotype picture, each off with a one-line note.
    for name in ("graphviz", "tensorboard", "torchvision", "tqdm"):
        (tmp_path / "stubs" / name).mkdir(parents=True)
        (tmp_path / "stubs" / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError({'No module named ' + repr(name)!r}, name={name!r})\n")
    out = tmp_path / "runs"
    calls = [["--help"], ["space-size"], ["plot", "DARTS_V2", "--output", str(tmp_path / "x.png")],
             ["search", "hs", "--init-channels", "4", "--cells-per-stage", "2", "--epochs", "1", "--batch-size", "8",
              "--steps-per-epoch", "1", "--eval-batches", "1", "--no-fused", "--output", str(out / "s")],
             ["train", "--epochs", "1", "--train-subset", "32", "--test-subset", "16", "--init-channels", "4",
              "--layers", "3", "--progress", "--output", str(out / "t")]]
    script = ("import json, sys\nfrom hdas_ext.cli import main\ncodes, light = [], None\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    try:\n        codes.append(main(argv))\n    except SystemExit as e:\n        codes.append(e.code)\n"
              "    if light is None and len(codes) == 2:\n"
              "        light = [m for m in ('sklearn', 'torchvision', 'graphviz') if m in sys.modules]\n"
              "print('CODES', json.dumps([codes, light]))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "stubs"), ROOT]), OMP_NUM_THREADS="1")
    env.pop("HDAS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(calls)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    codes, light = json.loads(proc.stdout.split("CODES ")[-1])
    assert codes[:2] == [0, 0] and light == []
    assert codes[2] == "hdas plot: error: graphviz is not installed (the 'viz' extra): pip install graphviz " \
                       "(HDAS_DEBUG=1 shows the traceback)"
    assert codes[3:] == [0, 0]
    # (progress off a terminal is a plain line: no tqdm needed, no note)
    for tag, feature, module in [("search", "TensorBoard logs", "tensorboard"), ("search", "genotype pictures", "graphviz"),
                                 ("train", "TensorBoard logs", "tensorboard")]:
        assert proc.stdout.count(f"[{tag}] {feature} off: {install_hint(module)}") == 1, (tag, feature)
    assert "progress bars off" not in proc.stdout
    assert (out / "s" / "genotype_last.json").is_file() and (out / "t" / "last.pt").is_file()
