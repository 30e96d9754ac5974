"""Registers, spills and static shared memory of every CUDA kernel instantiation, from `ptxas -v`.

Compiles each csrc/cuda/*.cu once the way setup.py does (torch's nvcc flags, -O3, sm_90 unless
TORCH_CUDA_ARCH_LIST says otherwise) with -Xptxas -v, and prints a Markdown table: one row per
kernel and template instantiation (element type, accumulation type).
    python benchmarks/ptxas_table.py [--out ptxas.md]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils import cpp_extension  # noqa: E402

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(.*)")
SMEM = re.compile(r"(\d+) bytes smem")


def nvcc_command(src, arch):
    cuda_home = cpp_extension.CUDA_HOME or "/usr/local/cuda"
    incs = [f"-I{p}" for p in cpp_extension.include_paths(device_type="cuda")] + [f"-I{cuda_home}/include"]
    sm = arch.replace(".", "")
    return ([f"{cuda_home}/bin/nvcc", "-c", str(src), "-o", os.devnull, *incs, *cpp_extension.COMMON_NVCC_FLAGS,
             "-O3", "--expt-relaxed-constexpr", "-DHDAS_WITH_CUDA", f'-DHDAS_CUDA_ARCHS="sm_{sm}"',
             "-DTORCH_API_INCLUDE_EXTENSION_H",
             "-DTORCH_EXTENSION_NAME=_C", f"-gencode=arch=compute_{sm},code=sm_{sm}", "-std=c++20",
             "-Xptxas", "-v", "--compiler-options", "-fPIC"])


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def short(name):
    """'void hdas::cuda::(anonymous namespace)::apply_kernel<float, float>(...)' -> ('apply_kernel', 'float, float')."""
    name = name.replace("(anonymous namespace)::", "").replace("c10::", "")
    m = re.match(r"(?:void )?(?:[\w:]*::)?(\w+)<(.*?)>\(", name)
    return (m.group(1), m.group(2)) if m else (name.split("(")[0], "")


def parse(log):
    rows, cur = [], None
    for line in log.splitlines():
        if m := ENTRY.search(line):
            cur = {"mangled": m.group(1), "arch": m.group(2)}
        elif cur is not None and (m := FRAME.search(line)):
            cur.update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        elif cur is not None and (m := USED.search(line)):
            s = SMEM.search(m.group(2))
            cur.update(regs=int(m.group(1)), smem=int(s.group(1)) if s else 0)
            rows.append(cur)
            cur = None
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the Markdown table here as well")
    ap.add_argument("--arch", default=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0").split(";")[0])
    args = ap.parse_args()
    lines = [f"| file | kernel | types (T, A) | registers | spill stores / loads (bytes) | stack (bytes) | static smem (bytes) |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory():
        for src in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
            res = subprocess.run(nvcc_command(src, args.arch), capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                sys.exit(f"nvcc failed on {src}:\n{res.stderr[-4000:]}")
            rows = parse(res.stdout + res.stderr)
            for row, name in sorted(zip(rows, demangle([r["mangled"] for r in rows])), key=lambda t: short(t[1])):
                kernel, types = short(name)
                lines.append(f"| {src.name} | {kernel} | {types} | {row['regs']} | {row['spill_st']} / {row['spill_ld']} "
                             f"| {row['stack']} | {row['smem']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(f"ptxas -v, sm_{args.arch.replace('.', '')}, nvcc flags of setup.py (-O3):\n\n" + table)


if __name__ == "__main__":
    main()
