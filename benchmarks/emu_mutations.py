"""Shows that the emulated CUDA checks can fail: builds deliberately broken variants of the CUDA
source (patched copies of csrc/ in a temporary folder; the checkout is never touched, so the shipped
build cannot contain them) over the emulator, and runs on each the emulated tests and the sanitizer
program (emu_check under ASan + UBSan and under ThreadSanitizer). A variant is caught when a check
fails; the script exits non-zero if one is missed.
    python benchmarks/emu_mutations.py [--only barrier,pool_window,cl_stride,warp_sum] [--sanitizers asan,tsan]
                                       [--out FILE]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "csrc" / "emu"))
import build as emu_build  # noqa: E402

# name: (file under csrc, text, replacement, what it breaks); the text must occur exactly once.
MUTATIONS = {
    "barrier": ("cuda/device.cuh", "  if (lane == 0) smem[warp] = v;\n  __syncthreads();\n",
                "  if (lane == 0) smem[warp] = v;\n",
                "block_sum: the barrier between the warps' partial sums and warp 0 reading them removed"),
    "pool_window": ("cuda/mixed_node_device.cuh", "return o * s + 1 < n - 1 ? o * s + 1 : n - 1;",
                    "return o * s + 1 < n ? o * s + 1 : n;",
                    "3x3 pools: the window's last row/column one too far at the bottom/right edge"),
    "cl_stride": ("cuda/mixed_node_device.cuh", "return cl ? ((n * H + h) * W + w) * Cx + c :",
                  "return cl ? ((n * W + w) * H + h) * Cx + c :",
                  "channels_last: the input index with the h and w strides swapped"),
    "groups_out": ("cuda/mixed_node_device.cuh", "* Cx + c * G : ((n * Cx + c * G) * Ho",
                   "* Cx + c : ((n * Cx + c) * Ho",
                   "partial channels: mixed channel c written to output channel c instead of c*groups"),
    "warp_sum": ("cuda/mixed_node_device.cuh", "if (cl ? o >= cw : o < streams)", "if (cl ? o > cw : o < streams)",
                 "reduction kernels, channels_last: one level of the shuffle sum over a plane's lanes skipped"),
}


def first_line(text, words):
    for line in text.splitlines():
        if any(w in line for w in words):
            return line.strip()[:160]
    return text.strip().splitlines()[-1][:160] if text.strip() else ""


def run_tests(lib):
    env = dict(os.environ, HDAS_EMU_LIB=str(lib), HDAS_REQUIRE_EMU="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "python_tests", "-m", "cuda_emulated", "-x", "-q",
                          "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True)
    return res.returncode != 0, first_line(res.stdout, ["Error:", "FAILED"])


def run_sanitized(src, out, sanitizer):
    built = emu_build.build(src, out, sanitizer)
    env = dict(os.environ, **emu_build.RUN_ENV[sanitizer])
    res = subprocess.run([str(built["check"])], env=env, capture_output=True, text=True)
    return res.returncode != 0, first_line(res.stderr + res.stdout, ["SUMMARY", "runtime error", "ERROR"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(MUTATIONS))
    ap.add_argument("--sanitizers", default="asan,tsan")
    ap.add_argument("--out", help="also write the Markdown table here")
    args = ap.parse_args()
    sanitizers = [s for s in args.sanitizers.split(",") if s]
    rows, missed = [], []
    # One object folder for every variant: a variant recompiles only what its patch touches.
    objs = ROOT / "build" / "emu-mutations"
    for name in args.only.split(","):
        rel, old, new, what = MUTATIONS[name]
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "csrc"
            shutil.copytree(ROOT / "csrc", src)
            text = (src / rel).read_text()
            if text.count(old) != 1:
                sys.exit(f"{name}: the text to break occurs {text.count(old)} times in csrc/{rel}; update MUTATIONS")
            (src / rel).write_text(text.replace(old, new))
            lib = emu_build.build(src, objs)["lib"]
            results = {"emulated tests": run_tests(lib)}
            for s in sanitizers:
                results[s] = run_sanitized(src, objs, s)
        caught = [k for k, (hit, _) in results.items() if hit]
        if not caught:
            missed.append(name)
        cells = [f"caught: {line}" if hit else "passed" for hit, line in results.values()]
        rows.append(f"| {name}: {what} | " + " | ".join(cells) + f" | {'yes' if caught else 'NO'} |")
        print(f"emu_mutations: {name} done in {time.time() - t0:.0f} s: caught by {caught or 'nothing'}", flush=True)
    header = ["| mutation | emulated tests | " + " | ".join(sanitizers) + " | caught |",
              "|---|---|" + "---|" * len(sanitizers) + "---|"]
    table = "\n".join(header + rows) + "\n"
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    sys.exit(f"missed: {', '.join(missed)}" if missed else 0)


if __name__ == "__main__":
    main()
