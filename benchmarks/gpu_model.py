"""A memory-traffic model of the CUDA kernels, counted by the emulator (no GPU needed).

The checked emulator build (python csrc/emu/build.py --checked) sees every global and shared memory
access of the shipped kernels. Per kernel launch it counts warp-wide requests (the k-th access of each
lane at one instruction is one request), the 32-byte sectors each touches (Nsight Compute's sectors
per request), shared-memory wavefronts against the conflict-free count (32 banks of 4 bytes), and the
distinct sectors the launch reads and writes (its DRAM traffic if every reuse within a launch hits in
the caches and none across launches does, which holds above the L2's size). This script runs the
fused ops (mixed_node, pair_concat, and conv_candidates on a DARTS edge's four convolution
candidates) on the shapes of benchmarks/bench_bars.py and the DARTS edges (NCHW and channels_last,
stride 1 and 2, float32 and bfloat16) at batch 1 and 2 and extrapolates every count linearly to the
full batch (the kernels' work is per sample; the N=1/N=2 runs are exact, not sampled). The ATen
ops an op runs between its own kernels (conv_candidates' GEMMs, copies, small per-channel steps)
are recorded by torch's profiler and modelled: each reads its tensor inputs once and writes its
output once, one row per ATen op name. It adds the
registers and static shared memory of every kernel from `ptxas -v` (sm_80 and sm_90), the occupancy
they allow by the CUDA occupancy rules, and a predicted time: DRAM bytes over the card's bandwidth
(a model, not a measurement).

    python benchmarks/gpu_model.py                  # the table (Markdown), ~10-20 min on 2 cores
    python benchmarks/gpu_model.py --check          # ... and exit 1 when a kernel misses the bars
    python benchmarks/gpu_model.py --shapes big     # bench_bars' shape only: what --predict needs
    python benchmarks/gpu_model.py --predict [--measured BARS_JSON]   # the model's times (beside bench_bars')
Runs on all or big shapes write benchmarks/gpu_model.json, which --predict reads (on the GPU machine too)
while the sources it was computed from are unchanged; --json PATH writes every number.
"""
import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import torch
from bench_bars import BIG
from gpu_model_measured import main as measured_main, saved_model
from gpu_model_runs import load_emulator, modelled_launch, run_conv, run_mixed, run_pair

ROOT = Path(__file__).resolve().parent.parent

SAVED = ROOT / "benchmarks" / "gpu_model.json"
DARTS = [(64, 16, 32, 32), (64, 32, 16, 16), (64, 64, 8, 8)]
CARDS = {"H100": (3.35e12, "H100 SXM, 3.35 TB/s HBM3"), "H200": (4.8e12, "H200, 4.8 TB/s HBM3e")}
L2_BYTES = 50 * 2**20  # H100 and H200
BARS = {"efficiency": 0.85, "traffic": 1.5, "occupancy": 0.5}
# Per architecture (CUDA occupancy calculator): warps, blocks, registers and shared memory per SM,
# register allocation per warp in units of 256, shared memory in units of 128 bytes plus 1 KiB
# reserved per block.
ARCH = {"sm_80": dict(warps=64, blocks=32, regs=65536, smem=164 * 1024),
        "sm_90": dict(warps=64, blocks=32, regs=65536, smem=228 * 1024)}


OPS = ("mixed_node", "pair_concat", "conv_candidates")


def sources_hash():
    """The modelled ops' launchers and every file of csrc they include, transitively (another op's
    sources do not make the saved model stale)."""
    todo, seen = [ROOT / "csrc" / "cuda" / f"{op}_kernel.cu" for op in OPS], set()
    while todo:
        f = todo.pop().resolve()
        if f not in seen and f.exists():
            seen.add(f)
            todo += [f.parent / inc for inc in re.findall(r'^#include "([^"]+)"', f.read_text(), re.M)]
    h = hashlib.sha1()
    for f in sorted(seen):
        h.update(str(f.relative_to(ROOT)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


# ---- ptxas -------------------------------------------------------------------------------------------
def kernel_key(name):
    """'void hdas::cuda::apply_kernel<c10::BFloat16, float, int>(...)' -> 'apply_kernel<BFloat16, float, int>'."""
    name = re.sub(r"^void ", "", name).replace("hdas::cuda::", "").replace("c10::", "")
    name = name.replace("(anonymous namespace)::", "")
    depth = 0
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            return name[:i]
    return name


def ptxas_resources():
    """{(kernel key, 'sm_80'|'sm_90'): (registers, static smem bytes, spill bytes)}, cached per source hash."""
    from ptxas_table import demangle, nvcc_command, parse

    cache = ROOT / "build" / "gpu_model" / f"ptxas-{sources_hash()}.json"
    if cache.exists():
        return {tuple(k.split("|")): tuple(v) for k, v in json.loads(cache.read_text()).items()}
    out = {}
    for src in (ROOT / "csrc" / "cuda" / f"{op}_kernel.cu" for op in OPS):
        cmd = nvcc_command(src, "9.0")
        cmd.insert(cmd.index("-gencode=arch=compute_90,code=sm_90"), "-gencode=arch=compute_80,code=sm_80")
        print(f"gpu_model: ptxas -v on {src.name} (sm_80, sm_90) ...", file=sys.stderr, flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            sys.exit(f"nvcc failed on {src}:\n{res.stderr[-4000:]}")
        rows = parse(res.stdout + res.stderr)
        for row, name in zip(rows, demangle([r["mangled"] for r in rows])):
            out[(kernel_key(name), row["arch"])] = (row["regs"], row["smem"], row["spill_st"] + row["spill_ld"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"|".join(k): v for k, v in out.items()}))
    return out


def occupancy(regs, smem, threads, arch):
    """Resident warps / the SM's maximum for blocks of `threads` threads."""
    a = ARCH[arch]
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = (a["regs"] // per_warp) // warps if per_warp else a["blocks"]
    by_smem = a["smem"] // (math.ceil((smem + 1024) / 128) * 128)
    blocks = min(a["blocks"], a["warps"] // warps, by_regs, by_smem)
    return blocks * warps / a["warps"]


# ---- emulation: gpu_model_runs.py ----------------------------------------------------------------------

def aten_sum(launches, sums):
    """mixed_node's backward reduces the chunks' sums with an ATen sum (partial.sum(0)) between its
    kernels: it reads the buffer backward_reduce_kernel wrote and no later kernel reads, and writes C
    values per primitive and one more."""
    reduce_ = next(i for i, l in enumerate(launches) if kernel_key(l["kernel"]).startswith("backward_reduce_kernel"))
    read_later = {a["id"] for l in launches[reduce_ + 1:] for a in l["allocs"] if a["ld_sectors"]}
    partial = [a for a in launches[reduce_]["allocs"] if a["st_sectors"] and a["id"] not in read_later]
    assert len(partial) == 1, f"cannot tell backward_reduce_kernel's partial sums: {partial}"
    bytes_in = partial[0]["bytes"]
    out = sums["values"] * sums["acc"]
    return modelled_launch("ATen sum (partial.sum(0))", bytes_in, out)


def extrapolate(a, b, N):
    """Counts at batch N from those at batch 1 (a) and 2 (b): a + (b - a) * (N - 1), field by field."""
    if isinstance(a, dict):
        return {k: extrapolate(a[k], b[k], N) for k in a}
    if isinstance(a, list):
        return a if len(a) != len(b) or not a or not isinstance(a[0], (dict, int, float)) else [
            extrapolate(x, y, N) for x, y in zip(a, b)]
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        return a
    return a + (b - a) * (N - 1)


def model_case(op, shape, stride, cl, dtype):
    """Per direction: the launches (extrapolated to the full batch) and the compulsory bytes."""
    N = shape[0]
    run = {"mixed_node": run_mixed, "pair_concat": run_pair, "conv_candidates": run_conv}[op]
    one, two = run(1, *shape[1:], stride, cl, dtype), run(2, *shape[1:], stride, cl, dtype)
    out = {}
    for d in ("fwd", "bwd"):
        l1, l2 = one[d], two[d]
        if one["sums"] and d == "bwd":
            l1, l2 = l1 + [aten_sum(l1, one["sums"])], l2 + [aten_sum(l2, two["sums"])]
        names = [kernel_key(x["kernel"]) for x in l1]
        assert names == [kernel_key(x["kernel"]) for x in l2], f"{op}: different launches at N=1 and N=2"
        for x in l1 + l2:  # per-site and per-allocation lists differ in order between runs: totals only
            x["sites_conflicts"] = sum(s["wavefronts"] - s["ideal"] for s in x["sites"])
            x["sites"], x["allocs"] = [], []
        launches = [extrapolate(x, y, N) for x, y in zip(l1, l2)]
        comp = one["compulsory"][d] + (two["compulsory"][d] - one["compulsory"][d]) * (N - 1)
        out[d] = dict(launches=launches, compulsory=comp)
    return out


def summarize(case, res):
    rows = []
    for d, r in case.items():
        total = 0
        for l in r["launches"]:
            key = kernel_key(l["kernel"])
            ld, st, sh = l["ld"], l["st"], l["shared"]
            dram = 32 * (ld["distinct_sectors"] + st["distinct_sectors"])
            total += dram
            row = dict(direction=d, kernel=key, modelled=l.get("modelled", False),
                       ld_eff=ld["bytes"] / (32 * ld["sectors"]) if ld["sectors"] else None,
                       st_eff=st["bytes"] / (32 * st["sectors"]) if st["sectors"] else None,
                       dram=dram, requested=32 * (ld["sectors"] + st["sectors"]),
                       conflicts=sh["wavefronts"] - sh["ideal"], threads=math.prod(l["block"]))
            for arch in ("sm_80", "sm_90"):
                if (key, arch) in res:
                    regs, smem, spill = res[(key, arch)]
                    row[arch] = dict(regs=regs, smem=smem, spill=spill, occupancy=occupancy(regs, smem, row["threads"], arch))
            rows.append(row)
        for row in rows:
            if row["direction"] == d:
                row["share"] = row["dram"] / total if total else 0
        rows.append(dict(direction=d, kernel="(op)", dram=total, compulsory=r["compulsory"],
                         ratio=total / r["compulsory"], launches=sum(l.get("launches", 1) for l in r["launches"]),
                         predicted={c: total / bw for c, (bw, _) in CARDS.items()}))
    return rows


def cases(which):
    shapes = {"big": [BIG], "darts": DARTS, "all": [BIG] + DARTS}[which]
    for shape in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            for cl in (False, True):
                for stride in (1, 2):
                    yield "mixed_node", shape, stride, cl, dtype
                yield "pair_concat", shape, 1, cl, dtype
                for stride in (1, 2):
                    yield "conv_candidates", shape, stride, cl, dtype


def fmt_pct(v):
    return "-" if v is None else f"{100 * v:.0f}%"


def markdown(results):
    lines = ["| op | shape | layout | stride | dtype | dir | kernel | ld eff | st eff | DRAM MB (share) | "
             "regs sm80/sm90 | smem B | occupancy sm80/sm90 | bank conflicts |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = ["| op | shape | layout | stride | dtype | dir | launches | DRAM MB | compulsory MB | traffic / compulsory "
               "| predicted H100 | predicted H200 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = (f"| {r['op']} | {'x'.join(map(str, r['shape']))} | {r['layout']} | {r['stride'] if r['op'] != 'pair_concat' else '-'} "
                f"| {r['dtype']} |")
        for row in r["rows"]:
            if row["kernel"] == "(op)":
                p = row["predicted"]
                summary.append(f"{head} {row['direction']} | {row['launches']} | {row['dram'] / 1e6:.1f} | "
                               f"{row['compulsory'] / 1e6:.1f} | {row['ratio']:.2f}x | {1e6 * p['H100']:.0f} us | "
                               f"{1e6 * p['H200']:.0f} us |")
                continue
            res = [row.get(a) for a in ("sm_80", "sm_90")]
            regs = "/".join(str(x["regs"]) + (f" (spills {x['spill']} B)" if x["spill"] else "") for x in res if x) or "-"
            occ = "/".join(fmt_pct(x["occupancy"]) for x in res if x) or "-"
            smem = str(res[1]["smem"]) if res[1] else "-"
            name = row["kernel"] + (" (modelled)" if row["modelled"] else "")
            lines.append(f"{head} {row['direction']} | `{name}` | {fmt_pct(row['ld_eff'])} | {fmt_pct(row['st_eff'])} | "
                         f"{row['dram'] / 1e6:.1f} ({100 * row['share']:.0f}%) | {regs} | {smem} | {occ} | {row['conflicts']:.0f} |")
    return "\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"


def misses(results):
    """The bars of issue 23 on the shapes larger than the L2: every kernel's sector efficiency (loads and
    stores) and sm_90 occupancy, every op direction's traffic, no bank conflicts."""
    out = []
    for r in results:
        where = f"{r['op']} {'x'.join(map(str, r['shape']))} {r['layout']} stride {r['stride']} {r['dtype']}"
        big = r["compulsory_fwd"] > L2_BYTES
        for row in r["rows"]:
            if row["kernel"] == "(op)":
                if big and row["ratio"] > BARS["traffic"]:
                    out.append(f"{where} {row['direction']}: traffic {row['ratio']:.2f}x compulsory > {BARS['traffic']}x")
                continue
            if row.get("conflicts", 0) > 0:
                out.append(f"{where} {row['kernel']}: {row['conflicts']:.0f} bank-conflict wavefronts")
            if not big or row["modelled"]:
                continue
            for what in ("ld_eff", "st_eff"):
                if row[what] is not None and row[what] < BARS["efficiency"]:
                    out.append(f"{where} {row['kernel']}: {what.replace('_eff', '')} sector efficiency "
                               f"{fmt_pct(row[what])} < {fmt_pct(BARS['efficiency'])}")
            occ = row.get("sm_90", {}).get("occupancy")
            if occ is not None and occ < BARS["occupancy"]:
                out.append(f"{where} {row['kernel']}: sm_90 occupancy {fmt_pct(occ)} < {fmt_pct(BARS['occupancy'])}")
    return out


def run_model(which, res):
    load_emulator()
    results = []
    for op, shape, stride, cl, dtype in cases(which):
        case = model_case(op, shape, stride, cl, dtype)
        results.append(dict(op=op, shape=list(shape), layout="channels_last" if cl else "nchw", stride=stride,
                            dtype=str(dtype).replace("torch.", ""), compulsory_fwd=case["fwd"]["compulsory"],
                            rows=summarize(case, res)))
        r = results[-1]
        print(f"gpu_model: {op} {shape} {r['layout']} stride {stride} {r['dtype']}: " + ", ".join(
            f"{row['direction']} {row['ratio']:.2f}x" for row in r["rows"] if row["kernel"] == "(op)"),
            file=sys.stderr, flush=True)
    return results


def predict(results, card=None):
    """The model's times for what bench_bars measures: fused forward and forward + backward on BIG."""
    cards = [card] if card else list(CARDS)
    for r in results:
        if r["shape"] != list(BIG) or r["stride"] != 1:
            continue
        ops = {row["direction"]: row for row in r["rows"] if row["kernel"] == "(op)"}
        for c in cards:
            f, b = ops["fwd"]["predicted"][c], ops["bwd"]["predicted"][c]
            print(f"model {r['op']} fused [{r['dtype']}, {r['layout']}]: fwd {1e3 * f:.3f} ms, fwd+bwd {1e3 * (f + b):.3f} ms "
                  f"({CARDS[c][1]}; DRAM bytes / bandwidth, {ops['fwd']['ratio']:.2f}x / {ops['bwd']['ratio']:.2f}x "
                  f"the compulsory bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", choices=["all", "big", "darts"], default="all")
    ap.add_argument("--check", action="store_true", help="exit 1 when a kernel misses the bars")
    ap.add_argument("--predict", action="store_true", help="print the model's times for bench_bars' shapes")
    ap.add_argument("--card", choices=list(CARDS), help="with --predict: one card only")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--measured", metavar="JSON", help="with --predict: beside bench_bars' JSON (saved model only)")
    args = ap.parse_args()
    h = sources_hash()
    saved, why = saved_model(SAVED, h)
    if args.measured:
        sys.exit(measured_main(args.measured, (saved, why), list(CARDS), args.card))
    if args.predict and not args.check and saved:
        predict(saved, args.card)
        return
    res = ptxas_resources()
    results = run_model("big" if args.predict and not args.check else args.shapes, res)
    data = {"sources": h, "results": results}
    if args.shapes != "darts" and not args.predict:
        SAVED.write_text(json.dumps(data, indent=1) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.predict:
        predict(results, args.card)
        if not args.check:
            return
    table = markdown(results)
    print(f"CPU model of the CUDA kernels (emulator, checked build); sources {h}; ptxas sm_80/sm_90; "
          f"predicted time = DRAM bytes / bandwidth ({', '.join(v for _, v in CARDS.values())})\n")
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    missed = misses(results)
    print(f"bars (shapes above the {L2_BYTES >> 20} MiB L2): " + ("all met" if not missed else f"{len(missed)} missed"))
    for m in missed:
        print(f"  MISS {m}")
    if args.check and missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
