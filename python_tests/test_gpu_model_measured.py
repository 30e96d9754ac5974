"""gpu_check.sh's hook: benchmarks/gpu_model.py --predict --measured BARS_JSON reads bench_bars' JSON,
prints the model's times beside the measured ones, and exits 0 whatever is missing."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_model_measured as gm  # noqa: E402

BIG = [128, 64, 56, 56]


def bars_json(machine="NVIDIA H100 80GB HBM3 (torch 2.11.0, CUDA 13.0)", rows=None):
    """What bench_bars.py writes (its keys), with made-up times."""
    rows = rows if rows is not None else [
        {"op": "mixed_node", "shape": BIG, "fused": {"fwd_ms": 0.5, "both_ms": 1.5}, "eager": {"fwd_ms": 3.0, "both_ms": 9.0},
         "fwd_tbs": 0.4, "both_tbs": 0.3},
        {"op": "pair_concat", "shape": BIG, "fused": {"fwd_ms": 0.25, "both_ms": 0.75}}]
    return {"machine": machine, "dtype": "float32", "peak_tbs": 3.35, "copy_tbs": 2.9, "rows": rows}


def model_result(op, fwd_s, bwd_s, shape=BIG, layout="nchw", stride=1, dtype="float32"):
    """One entry of gpu_model.json's results, reduced to what the comparison reads."""
    pred = lambda s: {"H100": s, "H200": s / 2}  # noqa: E731
    return {"op": op, "shape": shape, "layout": layout, "stride": stride, "dtype": dtype,
            "rows": [{"direction": "fwd", "kernel": "(op)", "predicted": pred(fwd_s)},
                     {"direction": "bwd", "kernel": "(op)", "predicted": pred(bwd_s)},
                     {"direction": "fwd", "kernel": "output_kernel<float>", "predicted": None}]}


def test_prints_model_beside_each_measured_row(tmp_path, capsys):
    path = tmp_path / "bars.json"
    path.write_text(json.dumps(bars_json()))
    results = [model_result("mixed_node", 0.25e-3, 0.5e-3),
               model_result("mixed_node", 9.0, 9.0, layout="channels_last"),  # not what bench_bars times
               model_result("mixed_node", 9.0, 9.0, stride=2)]
    assert gm.main(path, (results, None), ["H100", "H200"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "NVIDIA H100" in out[0]
    mixed = [line for line in out if "mixed_node 128x64x56x56" in line]
    # measured 0.5 / 1.5 ms; the H100 model 0.25 ms and 0.25 + 0.5 = 0.75 ms: ratios 2.00x and 2.00x
    assert len(mixed) == 1 and "(H100)" in mixed[0] and "H200" not in mixed[0]
    assert "measured fwd 0.500 ms, fwd+bwd 1.500 ms" in mixed[0]
    assert "model (H100) fwd 0.25 ms, fwd+bwd 0.75 ms" in mixed[0] and "measured / model 2.00x / 2.00x" in mixed[0]
    pair = [line for line in out if "pair_concat" in line]
    assert len(pair) == 1 and "model: none for this op, shape and dtype" in pair[0]


def test_card_from_the_machine_name_else_every_card():
    assert gm.cards_for("NVIDIA H200 (torch 2.11.0)", ["H100", "H200"]) == ["H200"]
    assert gm.cards_for("NVIDIA H100 PCIe", ["H100", "H200"]) == ["H100"]
    assert gm.cards_for("AMD EPYC 7R13, 2 threads", ["H100", "H200"]) == ["H100", "H200"]


def test_small_dry_run_shape_has_no_model(tmp_path, capsys):
    path = tmp_path / "bars.json"
    path.write_text(json.dumps(bars_json("cpu", [{"op": "mixed_node", "shape": [2, 4, 8, 8],
                                                  "fused": {"fwd_ms": 0.1, "both_ms": 0.2}}])))
    assert gm.main(path, ([model_result("mixed_node", 1e-3, 1e-3)], None), ["H100", "H200"]) == 0
    out = capsys.readouterr().out
    assert "mixed_node 2x4x8x8: measured fwd 0.100 ms, fwd+bwd 0.200 ms; model: none" in out
    assert "the model covers 128x64x56x56" in out


@pytest.mark.parametrize("content", [None, "", "{not json", json.dumps({"rows": []}), json.dumps([1, 2])])
def test_missing_or_empty_measurements_exit_0_with_one_line(tmp_path, capsys, content):
    path = tmp_path / "bars.json"
    if content is not None:
        path.write_text(content)
    assert gm.main(path, ([model_result("mixed_node", 1e-3, 1e-3)], None), ["H100"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("gpu_model: no measurements to compare with: ")


def test_stale_or_missing_saved_model_is_said_and_measurements_still_printed(tmp_path, capsys):
    saved = tmp_path / "gpu_model.json"
    assert gm.saved_model(saved, "abc")[1].startswith("gpu_model.json is missing")
    saved.write_text(json.dumps({"sources": "old", "results": [model_result("mixed_node", 1e-3, 1e-3)]}))
    results, why = gm.saved_model(saved, "new")
    assert results is None and "computed from other CUDA sources (old, these are new)" in why
    assert gm.saved_model(saved, "old")[0][0]["op"] == "mixed_node"
    path = tmp_path / "bars.json"
    path.write_text(json.dumps(bars_json()))
    assert gm.main(path, (results, why), ["H100"]) == 0
    out = capsys.readouterr().out
    assert f"no model: {why}" in out
    assert "mixed_node 128x64x56x56: measured fwd 0.500 ms, fwd+bwd 1.500 ms; model: none (no saved model)" in out


def test_the_hook_command_exits_0_without_measurements(tmp_path):
    """The command gpu_check.sh runs, verbatim but for the path."""
    res = subprocess.run([sys.executable, "benchmarks/gpu_model.py", "--predict", "--measured",
                          str(tmp_path / "missing.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "gpu_model: no measurements to compare with:" in res.stdout
