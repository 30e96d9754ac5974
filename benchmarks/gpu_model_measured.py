"""The traffic model's predicted times beside bench_bars' measurements (gpu_check.sh's hook):

    python benchmarks/gpu_model.py --predict --measured /tmp/hdas_bars.json

One line per measured row: the fused op's measured forward and forward + backward times, the model's
(DRAM bytes over the card's bandwidth, from benchmarks/gpu_model.json), and measured / model. It never
fails the GPU run: a missing, empty or unreadable measurement file, or no saved model for these
sources, is one line saying so and exit status 0.
"""
import json
from pathlib import Path


def saved_model(path, sources):
    """(results, None) from the saved model (benchmarks/gpu_model.json) when it was computed from these
    sources, else (None, why not)."""
    if not path.exists():
        return None, f"{path.name} is missing (python benchmarks/gpu_model.py --shapes big writes it)"
    data = json.loads(path.read_text())
    if data["sources"] != sources:
        return None, (f"{path.name} was computed from other CUDA sources ({data['sources']}, these are {sources}): "
                      "rerun python benchmarks/gpu_model.py --shapes big")
    return data["results"], None


def load_measured(path):
    """bench_bars' JSON -> (payload, None), or (None, why it cannot be used)."""
    p = Path(path)
    if not p.is_file():
        return None, f"{path} does not exist (bench_bars did not run or wrote nothing)"
    text = p.read_text().strip()
    if not text:
        return None, f"{path} is empty"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{path} is not JSON ({e})"
    rows = data.get("rows") if isinstance(data, dict) else None
    if not rows:
        return None, f"{path} holds no measured rows"
    return data, None


def cards_for(machine, cards):
    """The cards whose bandwidth the prediction uses: the one the machine string names (bench_bars
    records the GPU's name), else every card the model knows (a CPU dry run)."""
    found = [c for c in ("H200", "H100") if c in cards and c in (machine or "")]
    return found[:1] or list(cards)


def model_of(results, op, shape, dtype):
    """The model's result for what bench_bars times: the op on that shape, NCHW, stride 1."""
    for r in results or ():
        if r["op"] == op and r["shape"] == list(shape) and r["dtype"] == dtype and r["layout"] == "nchw" \
                and r["stride"] == 1:
            return {row["direction"]: row for row in r["rows"] if row["kernel"] == "(op)"}
    return None


def compare(data, results, cards, why_no_model=None):
    """The lines to print: one per measured row and card."""
    machine, dtype = data.get("machine", "?"), data.get("dtype", "float32")
    lines = [f"model vs measured on {machine} ({dtype}); model = DRAM bytes / the card's nominal bandwidth"]
    if why_no_model:
        lines.append(f"  no model: {why_no_model}")
    covered = sorted({"x".join(map(str, r["shape"])) for r in results or ()})
    for row in data["rows"]:
        op, shape = row.get("op", "?"), row.get("shape", [])
        fused = row.get("fused") or {}
        fwd, both = fused.get("fwd_ms"), fused.get("both_ms")
        where = f"{op} {'x'.join(map(str, shape))}"
        measured = "measured " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in (("fwd", fwd), ("fwd+bwd", both))
                                           if isinstance(ms, (int, float)))
        model = model_of(results, op, shape, dtype)
        if model is None:
            if why_no_model:
                lines.append(f"  {where}: {measured}; model: none (no saved model)")
            else:
                lines.append(f"  {where}: {measured}; model: none for this op, shape and dtype (the model covers "
                             f"{', '.join(covered) or 'no shape'}, NCHW, stride 1)")
            continue
        for card in cards:
            f_s = model["fwd"]["predicted"][card]
            b_s = f_s + model["bwd"]["predicted"][card]
            ratios = [f"{ms / (1e3 * s):.2f}x" for ms, s in ((fwd, f_s), (both, b_s)) if isinstance(ms, (int, float))]
            lines.append(f"  {where}: {measured}; model ({card}) fwd {1e3 * f_s:.4g} ms, fwd+bwd {1e3 * b_s:.4g} ms; "
                         f"measured / model {' / '.join(ratios) or '-'}")
    return lines


def main(path, saved, cards, card=None):
    """gpu_model.py --measured: saved is (results, None) or (None, why there is no model)."""
    data, why = load_measured(path)
    if data is None:
        print(f"gpu_model: no measurements to compare with: {why}")
        return 0
    results, why_no_model = saved
    use = [card] if card else cards_for(data.get("machine"), cards)
    print("\n".join(compare(data, results, use, why_no_model)))
    return 0
