"""Training throughput (images/s) of an evaluation network, eager vs channels_last vs torch.compile.

One full training step is timed: forward with the auxiliary head, cross-entropy (+0.4 aux), backward,
grad-norm clip 5, SGD step; drop path on (p = 0.2, its final value). Inputs are random tensors
already on the device (the data loader is not measured). Each mode runs in its own subprocess so a
compilation that exceeds --compile-timeout is killed and reported, not waited for.

    python benchmarks/bench_train_step.py --device cpu --batch 8 --steps 3
    python benchmarks/bench_train_step.py --device cuda --amp bf16 --batch 96   # projected 600 epochs
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("eager", "channels_last", "compile", "compile_channels_last")


def write_results(args, results):
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--cell", default="DARTS_V2")
    p.add_argument("--stages", default="HS_DAS_CIFAR", help="stage genotype; 'none' for the DARTS chain")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "imagenet", "digits"))
    p.add_argument("--init-channels", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--modes", default=",".join(MODES[:3]), help=f"comma-separated subset of {MODES}")
    p.add_argument("--compile-timeout", type=float, default=600, help="seconds allowed per mode, compile included")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--epochs", type=int, default=600, help="for the projected training time")
    p.add_argument("--train-images", type=int, default=50000, help="images per epoch for the projection")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_mode(args, mode):
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    from hdas_ext.data import DATASET_SHAPES
    from hdas_ext.networks import build_eval_network, count_params

    dev = torch.device(args.device)
    torch.manual_seed(0)
    stages = None if args.stages.lower() == "none" else args.stages
    net = build_eval_network(args.cell, stages, dataset=args.dataset, init_channels=args.init_channels,
                             layers=args.layers, auxiliary=True, drop_path_prob=0.2).to(dev).train()
    channels_last = "channels_last" in mode
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if mode.startswith("compile") else net
    opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    classes, ch, size = DATASET_SHAPES[args.dataset]
    x = torch.randn(args.batch, ch, size, size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (args.batch,), device=dev)
    amp = (torch.autocast(dev.type, dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16)
           if args.amp != "none" else None)
    scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")

    def step():
        with amp if amp is not None else _null():
            logits, aux = fwd(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        scaler.step(opt)
        scaler.update()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm = time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    ips = args.batch * args.steps / dt
    out = dict(mode=mode, images_per_s=ips, step_ms=1000 * dt / args.steps, warmup_s=warm,
               params=count_params(net), batch=args.batch, device=str(dev), amp=args.amp,
               threads=torch.get_num_threads(),
               projected_hours=args.epochs * args.train_images / ips / 3600)
    if dev.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main(argv=None):
    args = parse_args(argv)
    if args.single:
        print("RESULT " + json.dumps(run_mode(args, args.single)))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}; choose from {MODES}")
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = []
    for mode in modes:
        cmd = [sys.executable, os.path.abspath(__file__), *base, "--single", mode]
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            results.append(dict(mode=mode, error=f"did not finish within {args.compile_timeout:.0f} s"))
            print(f"{mode:>22}: timed out after {time.time() - t0:.0f} s", flush=True)
            continue
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            results.append(dict(mode=mode, error=(proc.stderr or proc.stdout)[-800:]))
            print(f"{mode:>22}: failed\n{(proc.stderr or proc.stdout)[-800:]}", flush=True)
            continue
        r = json.loads(line[0][7:])
        results.append(r)
        write_results(args, results)  # after every mode: a run stopped by an outer time cap keeps them
        mem = f", peak {r['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in r else ""
        print(f"{mode:>22}: {r['images_per_s']:9.1f} img/s  {r['step_ms']:8.1f} ms/step  warm-up "
              f"{r['warmup_s']:6.1f} s  -> {args.epochs} epochs x {args.train_images} images: "
              f"{r['projected_hours']:.1f} h{mem}", flush=True)
    ok = [r for r in results if "images_per_s" in r]
    if ok:
        eager = next((r for r in ok if r["mode"] == "eager"), None)
        if eager:
            for r in ok:
                r["speedup_vs_eager"] = r["images_per_s"] / eager["images_per_s"]
            print("speed-up vs eager: " + ", ".join(f"{r['mode']} {r['speedup_vs_eager']:.2f}x" for r in ok))
    write_results(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
