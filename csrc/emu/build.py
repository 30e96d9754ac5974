"""Builds the emulated CUDA backend: the shipped CUDA launchers and kernels (csrc/cuda) compiled by g++
over the CUDA emulator of csrc/emu. Never part of the shipped wheel; the tests and .ci/run use it.

    python csrc/emu/build.py                   # build/emu/libhdas_emu.so (torch.ops.hdas_emu.*) and the self-test
    python csrc/emu/build.py --run             # ... then runs the emulator self-test
    python csrc/emu/build.py --selftest --run  # the self-test alone, without the library
    python csrc/emu/build.py --checked         # build/emu/checked/: every memory access of the kernels checked
                                               # (poisoned reads, out-of-bounds accesses) and counted (traffic)
    python csrc/emu/build.py --sanitize asan   # build/emu/asan/: self-test and emu_check under ASan + UBSan
    python csrc/emu/build.py --sanitize tsan   # build/emu/tsan/: the same under ThreadSanitizer
    --run with --sanitize runs both programs; --src builds another csrc tree (the mutation checks do).

The library registers hdas_emu::mixed_node, mixed_node_backward, pair_concat, pair_concat_backward,
conv_candidates and conv_candidates_backward for CPU tensors: python_tests/test_cuda_emulated.py loads
it (HDAS_EMU_LIB overrides the path). How launches run is chosen when they run: HDAS_EMU_SEED
(interleave the threads in a seeded random order), HDAS_EMU_BLOCKS (blocks at once),
HDAS_EMU_BARRIER=relaxed (see docs/kernels.md), for the library, emu_check and emu_selftest alike.
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
CHECKED_SOURCES = ["emu/checked_alloc.cpp"]  # the checked build's library has these too
# No -fvisibility=hidden: the emulator names kernels in its reports from the dynamic symbol table.
# -Werror=deprecated-declarations: a bare __shared__ (cuda_emu.h) fails the build instead of a warning no one reads.
COMMON = ["-std=c++20", "-fPIC", "-pthread", "-DHDAS_CUDA_EMU", "-DHDAS_OPS_NAMESPACE=hdas_emu", "-Wall",
          "-Werror=deprecated-declarations"]
SANITIZE = {
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "tsan": ["-fsanitize=thread"],
}
# The checked build: GCC's kernel-address instrumentation, out of line, in the translation units that
# hold kernels (the emulator's hooks in cuda_emu.cpp receive every access); no shadow memory of its own.
CHECKED = ["-DHDAS_EMU_CHECKED", "-g1"]
INSTRUMENT = ["-fsanitize=kernel-address", "-fsanitize-recover=kernel-address",
              "--param=asan-instrumentation-with-call-threshold=0", "--param=asan-stack=0",
              "--param=asan-globals=0", "--param=asan-use-after-return=0"]


def holds_kernels(source):
    """The translation units whose kernels the checked build instruments: every op's emulated launcher
    (emu/<op>_emu.cpp) and the self-test."""
    return source == "emu/emu_selftest.cpp" or (source.startswith("emu/") and source.endswith("_emu.cpp")
                                                 and source != "emu/cuda_emu.cpp")
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


KEEP = 6  # versions of an object kept: patched trees (the mutation checks) build beside the checkout's


def compile_all(src, sources, out, flags, jobs):
    """Compiles sources (relative to src) into out/ with flags(source). An object is reused while its key
    holds; the last KEEP versions of each are kept (out/<source>.json lists them)."""
    out.mkdir(parents=True, exist_ok=True)
    objects, todo = {}, []
    for s in sources:
        meta = out / (s.replace("/", "_") + ".json")
        versions = json.loads(meta.read_text()) if meta.exists() else []
        hit = next((v for v in versions if isinstance(v, dict) and (out / v["obj"]).exists()
                    and _key(src, v["deps"], flags(s)) == v["key"]), None)
        if hit:
            objects[s] = out / hit["obj"]
        else:
            todo.append(s)

    def run(s):
        stem = s.replace("/", "_")
        tmp = out / f"{stem}.{os.getpid()}.tmp.o"
        dep = tmp.with_suffix(".d")
        res = subprocess.run(["g++", *flags(s), "-MMD", "-MF", str(dep), "-c", str(src / s), "-o", str(tmp)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            return s, res, None
        deps = _deps(dep, src)
        key = _key(src, deps, flags(s))
        entry = {"obj": f"{stem}.{key[:12]}.o", "deps": deps, "key": key}
        os.replace(tmp, out / entry["obj"])
        dep.unlink()
        return s, res, entry

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for s, res, entry in pool.map(run, todo):
            if entry is None:
                sys.exit(f"emu build: compiling {s} failed:\n{res.stderr[-6000:]}")
            meta = out / (s.replace("/", "_") + ".json")
            old = json.loads(meta.read_text()) if meta.exists() else []
            old = [v for v in old if isinstance(v, dict) and v["key"] != entry["key"]]
            for v in old[KEEP - 1:]:
                (out / v["obj"]).unlink(missing_ok=True)
            meta.write_text(json.dumps([entry] + old[:KEEP - 1]))
            objects[s] = out / entry["obj"]
    return [objects[s] for s in sources]


def link(objects, target, flags):
    res = subprocess.run(["g++", *map(str, objects), "-o", str(target), *flags], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"emu build: linking {target} failed:\n{res.stderr[-6000:]}")
    return target


def build(src=ROOT / "csrc", out=ROOT / "build" / "emu", sanitize=None, jobs=None, checked=False, objs=None,
          selftest_only=False):
    """Builds into out (out/<sanitizer> for a sanitizer build, out/checked for the checked one), with the
    objects under objs (default: out; the mutation checks reuse the checkout's); returns {name: path}.
    selftest_only: the self-test alone, without the library or emu_check."""
    if sanitize and checked:
        raise ValueError("the checked build and the sanitizer builds are separate")
    jobs = jobs or int(os.environ.get("MAX_JOBS", "2"))
    variant = sanitize or ("checked" if checked else "")
    src, out = Path(src).resolve(), Path(out).resolve() / variant
    objs = Path(objs).resolve() / variant if objs else out
    if sanitize:
        opt = ["-O1", "-g1", "-fno-omit-frame-pointer", *SANITIZE[sanitize]]  # -g1: line tables for the reports
    else:
        opt = ["-O2"] + (CHECKED if checked else [])

    def flags(extra):
        def of(source):
            f = COMMON + opt + extra
            if sanitize == "tsan" and source == "emu/cuda_emu.cpp":  # see cuda_emu.cpp: not instrumented
                f = [x for x in f if x != "-fsanitize=thread"] + ["-DHDAS_EMU_TSAN"]
            if checked and holds_kernels(source):
                f = f + INSTRUMENT
            return f
        return of

    out.mkdir(parents=True, exist_ok=True)
    built = {}
    st = compile_all(src, SELFTEST_SOURCES, objs / "selftest.obj", flags([]), jobs)
    built["selftest"] = link(st, out / "emu_selftest", opt)
    if selftest_only:
        return built
    tflags, tlink = torch_flags()
    if sanitize:
        o = compile_all(src, CHECK_SOURCES, objs / "check.obj", flags(tflags), jobs)
        built["check"] = link(o, out / "emu_check", opt + ["-rdynamic"] + tlink)
    else:
        sources = LIB_SOURCES + (CHECKED_SOURCES if checked else [])
        o = compile_all(src, sources, objs / "lib.obj", flags(tflags), jobs)
        built["lib"] = link(o, out / "libhdas_emu.so", ["-shared", *opt, *tlink])
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
    ap.add_argument("--checked", action="store_true", help="instrument the kernels' memory accesses")
    ap.add_argument("--run", action="store_true", help="run the self-test (and emu_check when sanitized)")
    ap.add_argument("--selftest", action="store_true", help="build the self-test only")
    ap.add_argument("--src", default=str(ROOT / "csrc"), help="the csrc tree to build")
    ap.add_argument("--out", default=str(ROOT / "build" / "emu"))
    ap.add_argument("--jobs", type=int)
    ap.add_argument("check_args", nargs="*", help="arguments for emu_check (e.g. --cases 12)")
    args = ap.parse_args()
    built = build(args.src, args.out, args.sanitize, args.jobs, args.checked, selftest_only=args.selftest)
    for name, path in built.items():
        print(f"emu: built {name}: {path}")
    if args.run:
        run(built, args.sanitize, args.check_args)


if __name__ == "__main__":
    main()
