"""Timing and reporting helpers shared by the benchmarks (not part of the package), and the
supernets, data and step that the search-step scripts share."""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import hdas_ext
from hdas_ext.search import BilevelOptimizer
from hdas_ext.supernets import DartsCellSearch, DistributionSearch, HcDasSearch, HsDasSearch


def machine(device):
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    model = platform.processor() or "cpu"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    isa = hdas_ext.build_info().get("cpu_isa", "no native build")
    return f"{model}, {torch.get_num_threads()} threads, {isa} kernels (torch {torch.__version__})"


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(fn, device, reps, warmup=2, setup=None):
    """Median wall time of fn() in ms; with setup, fn(setup()) where setup runs untimed."""
    times = []
    for i in range(warmup + reps):
        arg = setup() if setup else None
        sync(device)
        t0 = time.perf_counter()
        fn(arg) if setup else fn()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class SavedBytes:
    """Bytes autograd keeps alive between forward and backward (tensors saved for backward),
    counted once per storage. The memory a fused op saves shows up here on any device."""

    def __enter__(self):
        self.storages = {}

        def pack(t):
            try:
                s = t.untyped_storage()
                self.storages[s.data_ptr()] = s.nbytes()
            except RuntimeError:
                pass
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def mb(self):
        return sum(self.storages.values()) / 2**20


def peak_extra_mb(fn, device):
    """Peak memory allocated during fn() above what was allocated before it. CUDA: the caching
    allocator's counters. CPU: the running sum of the profiler's allocation/free events."""
    if not device.startswith("cuda"):
        return _cpu_peak_mb(fn)
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def write_json(path, payload):
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _cpu_peak_mb(fn):
    """Peak resident memory during fn() above the resident memory before it (Linux: reset VmHWM
    through clear_refs, read it after). Only exact when freed tensors return to the OS, i.e. with
    MALLOC_MMAP_THRESHOLD_ set; benchmarks run it in a child process with that set (cpu_memory)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        return None
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def cpu_memory(script, case_args):
    """Runs `script --memory-case ...` in a child process whose freed tensors go back to the OS
    (glibc's mmap threshold pinned at 64 KiB) and returns the JSON it prints on its last line."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run([sys.executable, script, "--memory-case", json.dumps(case_args)], env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return {}
    return json.loads(res.stdout.strip().splitlines()[-1])


def parser(doc):
    """The options every op benchmark takes."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default: a few on CPU, 50 on GPU)")
    ap.add_argument("--compile", default="default", choices=["default", "reduce-overhead", "off"])
    ap.add_argument("--only-first", action="store_true", help="only the first shape (quick check)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    return ap


# ---- search steps --------------------------------------------------------------------------
# Supernets at the paper's search settings on CIFAR shapes (10 classes): DARTS cells (8 cells),
# Hc-DAS (same), Hs-DAS (6 cells per stage, DARTS_V2 cells), distribution (N_max=8, N_min=4).
SEARCH_SPACES = {
    "cells": lambda C, fused, **kw: DartsCellSearch(C, 10, 8, fused=fused, **kw),
    "hc": lambda C, fused, **kw: HcDasSearch(C, 10, 8, fused=fused, **kw),
    "hs": lambda C, fused, **kw: HsDasSearch("DARTS_V2", C, 10, cells_per_stage=6, fused=fused),
    "distribution": lambda C, fused, **kw: DistributionSearch("DARTS_V2", C, 10, n_max=8, n_min=4, fused=fused),
}


def conv_option(fuse_convs):
    """The fused modules' and cell supernets' option selecting the fused convolution candidates
    (hdas::conv_candidates), where this build has it: {} otherwise."""
    import inspect
    from hdas_ext.nn import FusedMixedOp
    return {"fuse_convs": fuse_convs} if "fuse_convs" in inspect.signature(FusedMixedOp).parameters else {}


def step_variants():
    """eager, fused (fused-today: convolution candidates as modules), and fused-conv where it exists."""
    return ("eager", "fused", "fused-conv") if conv_option(True) else ("eager", "fused")


def build_search(space, C, fused, device, compiled=False, conv_candidates=False):
    """(supernet, first-order BilevelOptimizer) with the paper's optimisers and loss weights.
    fused and conv_candidates=False: fused-today (the convolution candidates as modules)."""
    torch.manual_seed(0)
    kw = conv_option(conv_candidates) if fused and space in ("cells", "hc") else {}
    model = SEARCH_SPACES[space](C, fused, **kw).to(device)
    if compiled:
        model.net = torch.compile(model.net)
    w = torch.optim.SGD(model.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    a = torch.optim.Adam(model.alphas(), 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    delta = 1.0 if space in ("hs", "distribution") else 0.0
    gamma = 0.4 if space == "distribution" else 0.0
    return model, BilevelOptimizer(model, w, a, order=1, delta=delta, gamma=gamma)


def search_batches(batch, size, device):
    """One fixed (train, val) pair of random batches."""
    g = torch.Generator().manual_seed(1)
    make = lambda: (torch.randn(batch, 3, size, size, generator=g).to(device),  # noqa: E731
                    torch.randint(0, 10, (batch,), generator=g).to(device))
    return [make()], [make()]


def search_step(opt, data):
    """One search step (architecture step, then weight step) on data, as a callable."""
    train, val = data
    return lambda: opt.step(train, val, lr=0.025)


def search_parser(doc, batch_help="default 64 on CUDA, 8 on CPU"):
    """The options every search-step script takes; parse with parse_search_args."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help=batch_help)
    p.add_argument("--init-channels", type=int, default=16)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--spaces", default=",".join(SEARCH_SPACES))
    p.add_argument("--json", default=None)
    return p


def search_header(what, args):
    """Prints what runs, its settings and the machine; returns the start of the results JSON."""
    m = machine(args.device)
    print(f"# {what}, batch {args.batch}, {args.image_size}px, C={args.init_channels}")
    print(f"# machine: {m}")
    return {"machine": m, "batch": args.batch, "C": args.init_channels}


def parse_search_args(p, argv=None):
    """Parsed arguments with --spaces as a checked list and the device-dependent batch default."""
    args = p.parse_args(argv)
    args.spaces = [s for s in args.spaces.split(",") if s]
    for s in args.spaces:
        if s not in SEARCH_SPACES:
            p.error(f"--spaces: unknown space {s!r}; expected some of {list(SEARCH_SPACES)}")
    args.cuda = args.device.startswith("cuda")
    args.batch = args.batch or (64 if args.cuda else 8)
    return args
