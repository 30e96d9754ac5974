"""Builds the emulated CUDA backend: the shipped CUDA launchers and kernels (csrc/cuda) compiled by g++
over the CUDA emulator of csrc/emu. Never part of the shipped wheel; the tests and .ci/run use it.

    python csrc/emu/build.py                   # build/emu/libhdas_emu.so (torch.ops.hdas_emu.*) and the self-test
    python csrc/emu/build.py --run             # ... then runs the emulator self-test
    python csrc/emu/build.py --sanitize asan   # build/emu/asan/: self-test and emu_check under ASan + UBSan
    python csrc/emu/build.py --sanitize tsan   # build/emu/tsan/: the same under ThreadSanitizer
    --run with --sanitize runs both programs; --src builds another csrc tree (the mutation checks do).

The library registers hdas_emu::mixed_node, mixed_node_backward, pair_concat, pair_concat_backward,
conv_candidates and conv_candidates_backward
for CPU tensors: python_tests/test_cuda_emulated.py loads it (HDAS_EMU_LIB overrides the path).
An object is rebuilt when the flags or the contents of its source or of a header it includes change.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The ops' schema and checks, the emulator, and the launchers (each wrapper includes a cuda/*.cu).
LIB_SOURCES = ["mixed_node.cpp", "pair_concat.cpp", "conv_candidates.cpp", "emu/cuda_emu.cpp", "emu/mixed_node_emu.cpp",
               "emu/pair_concat_emu.cpp", "emu/conv_candidates_emu.cpp", "emu/test_knobs.cpp"]
CHECK_SOURCES = LIB_SOURCES + ["emu/check_main.cpp"]
SELFTEST_SOURCES = ["emu/cuda_emu.cpp", "emu/emu_selftest.cpp"]
COMMON = ["-std=c++20", "-fPIC", "-pthread", "-DHDAS_CUDA_EMU", "-DHDAS_OPS_NAMESPACE=hdas_emu", "-Wall"]
SANITIZE = {
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "tsan": ["-fsanitize=thread"],
}
RUN_ENV = {
    "asan": {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
    "tsan": {"TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1"},
}


def torch_flags():
    import torch
    from torch.utils import cpp_extension

    compile_flags = [f"-isystem{p}" for p in cpp_extension.include_paths()]
    compile_flags.append(f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}")
    lib = cpp_extension.library_paths()[0]
    return compile_flags, [f"-L{lib}", f"-Wl,-rpath,{lib}", "-lc10", "-ltorch_cpu"]


def _key(src, rel_files, flags):
    """What an object depends on: the flags and the contents of its source and the headers it read
    (paths relative to the tree, so a patched copy of the tree reuses what it did not change)."""
    h = hashlib.sha1(" ".join(flags).encode())
    for rel in rel_files:
        f = src / rel
        h.update(rel.encode())
        h.update(f.read_bytes() if f.exists() else b"<missing>")
    return h.hexdigest()


def _deps(depfile, src):
    """The files under src that a -MMD dependency file lists."""
    text = depfile.read_text().replace("\\\n", " ")
    files = text.split(":", 1)[1].split()
    return sorted({str(Path(f).resolve().relative_to(src)) for f in files if Path(f).resolve().is_relative_to(src)})


def compile_all(src, sources, out, flags, jobs):
    """Compiles sources (relative to src) into out/; an object is reused while its key holds."""
    out.mkdir(parents=True, exist_ok=True)
    objects, todo = [], []
    for s in sources:
        obj = out / (s.replace("/", "_") + ".o")
        meta = obj.with_suffix(".json")
        objects.append(obj)
        if obj.exists() and meta.exists():
            info = json.loads(meta.read_text())
            if _key(src, info["deps"], flags) == info["key"]:
                continue
        todo.append((s, obj, meta))

    def run(job):
        s, obj, meta = job
        dep = obj.with_suffix(".d")
        res = subprocess.run(["g++", *flags, "-MMD", "-MF", str(dep), "-c", str(src / s), "-o", str(obj)],
                             capture_output=True, text=True)
        if res.returncode == 0:
            deps = _deps(dep, src)
            meta.write_text(json.dumps({"deps": deps, "key": _key(src, deps, flags)}))
        return s, res

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for s, res in pool.map(run, todo):
            if res.returncode != 0:
                sys.exit(f"emu build: compiling {s} failed:\n{res.stderr[-6000:]}")
    return objects


def link(objects, target, flags):
    res = subprocess.run(["g++", *map(str, objects), "-o", str(target), *flags], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"emu build: linking {target} failed:\n{res.stderr[-6000:]}")
    return target


def build(src=ROOT / "csrc", out=ROOT / "build" / "emu", sanitize=None, jobs=None):
    """Builds into out (out/<sanitizer> for a sanitizer build); returns {name: path}."""
    jobs = jobs or int(os.environ.get("MAX_JOBS", "2"))
    src, out = Path(src).resolve(), Path(out).resolve()
    tflags, tlink = torch_flags()
    if sanitize:
        out = out / sanitize
        opt = ["-O1", "-g1", "-fno-omit-frame-pointer", *SANITIZE[sanitize]]  # -g1: line tables for the reports
    else:
        opt = ["-O2", "-fvisibility=hidden", "-fvisibility-inlines-hidden"]
    built = {}
    st = compile_all(src, SELFTEST_SOURCES, out / "selftest.obj", COMMON + opt, jobs)
    built["selftest"] = link(st, out / "emu_selftest", opt)
    if sanitize:
        objs = compile_all(src, CHECK_SOURCES, out / "check.obj", COMMON + opt + tflags, jobs)
        built["check"] = link(objs, out / "emu_check", opt + tlink)
    else:
        objs = compile_all(src, LIB_SOURCES, out / "lib.obj", COMMON + opt + tflags, jobs)
        built["lib"] = link(objs, out / "libhdas_emu.so", ["-shared", *opt, *tlink])
    return built


def run(built, sanitize=None, check_args=()):
    env = dict(os.environ, **RUN_ENV.get(sanitize, {}))
    for name in ("selftest", "check"):
        if name in built:
            cmd = [str(built[name]), *(check_args if name == "check" else ())]
            print(f"emu: running {' '.join(cmd)}", flush=True)
            if subprocess.run(cmd, env=env).returncode != 0:
                sys.exit(f"emu: {name} failed" + (f" under {sanitize}" if sanitize else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sanitize", choices=sorted(SANITIZE))
    ap.add_argument("--run", action="store_true", help="run the self-test (and emu_check when sanitized)")
    ap.add_argument("--src", default=str(ROOT / "csrc"), help="the csrc tree to build")
    ap.add_argument("--out", default=str(ROOT / "build" / "emu"))
    ap.add_argument("--jobs", type=int)
    ap.add_argument("check_args", nargs="*", help="arguments for emu_check (e.g. --cases 12)")
    args = ap.parse_args()
    built = build(args.src, args.out, args.sanitize, args.jobs)
    for name, path in built.items():
        print(f"emu: built {name}: {path}")
    if args.run:
        run(built, args.sanitize, args.check_args)


if __name__ == "__main__":
    main()
