"""The package as a plain install sees it: every data file reaches the wheel, and the CLI runs the
main job without the optional packages (scikit-learn, graphviz, tensorboard, torchvision).
.ci/run repeats the second check with a real wheel in a fresh venv."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONAL = ["sklearn", "graphviz", "tensorboard", "torchvision"]
# A None entry in sys.modules makes `import NAME` fail as if NAME were not installed.
BARE_CLI = (f"import sys; sys.modules.update(dict.fromkeys({OPTIONAL!r}))\n"
            "from hdas_ext.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")


def package_files(top):
    """Files under top/hdas_ext, relative to top, without caches and built libraries."""
    out = set()
    for folder, dirs, files in os.walk(os.path.join(top, "hdas_ext")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if not (f.endswith((".so", ".pyd", ".pyc")) or f.startswith(".")):
                out.add(os.path.relpath(os.path.join(folder, f), top))
    return out


def test_every_package_file_reaches_the_wheel(tmp_path):
    # build_py is the step of a wheel build that copies modules and package data (no compiling).
    run = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    source, built = package_files(ROOT), package_files(str(tmp_path))
    assert os.path.join("hdas_ext", "digits.npz") in source
    assert source - built == set(), "not in the wheel: add them to package_data in setup.py"
    assert os.path.getsize(os.path.join(tmp_path, "hdas_ext", "digits.npz")) < 200_000


def bare(args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", BARE_CLI, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_runs_without_optional_packages(tmp_path):
    check = bare(["--help"], tmp_path)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "space-size" in check.stdout and "search" in check.stdout
    size = bare(["space-size", "--json"], tmp_path)
    assert size.returncode == 0, size.stderr[-2000:]
    assert json.loads(size.stdout)
    out = tmp_path / "hs"
    search = bare(["search", "hs", "--init-channels", "4", "--cells-per-stage", "4", "--batch-size", "32",
                   "--epochs", "1", "--steps-per-epoch", "2", "--eval-batches", "1", "--no-progress",
                   "--output", str(out)], tmp_path)
    assert search.returncode == 0, search.stderr[-2000:]
    assert "tensorboard is not installed" in search.stdout
    assert (out / "genotype_best.json").is_file() and (out / "log.jsonl").is_file()
    assert not (out / "genotype.png").exists() and not (out / "tb").exists()
    plot = bare(["plot", "DARTS_V2", "--output", str(tmp_path / "d.png")], tmp_path)
    assert plot.returncode != 0 and "pip install graphviz" in plot.stderr


def test_readme_commands_are_the_ones_ci_and_the_cli_know():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    block = ci.split("# --- README test command")[1].split("\n# ---")[0]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert len(lines) == 1 and f"```bash\n{lines[0]}\n```" in readme, ".ci/run and README's test command differ"
    main_job = [line for line in readme.splitlines() if ".venv/bin/hdas search" in line]
    assert len(main_job) == 1
    from hdas_ext.cli import build_parser

    args = build_parser().parse_args(main_job[0].split(".venv/bin/hdas ")[1].split())
    assert (args.command, args.space) == ("search", "hs")
