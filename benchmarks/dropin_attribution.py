"""Where a fused public network's error comes from: its own ops, or the inputs they were given.

public_dropin.py compares whole networks, so a tensor's error there is the fused op's rounding plus
everything the network fed it: float64 outputs that differ from the truth's in the 15th digit, or a
float32 input that falls on the other side of a ReLU from eager's. This runs one codebase's network
in lockstep as public_lockstep.py does (truth float64, eager float32, fused float64 and float32) and,
for every tensor of a fused op that misses the exactness bars (float64 beyond 1e-12 relative to its
largest element; float32 more than 2x eager's norm-relative error), replays that op alone on the
inputs the fused network gave it (its input, mixing weights and output gradient, its state before
the step), three ways: fused, the module's own forward in the network's dtype, and its own forward
in float64. Printed per tensor: the error in the network; the fused op's own error on the same
inputs (float64: against its own forward; float32: beside eager's own float32 error, both against
float64 on those inputs); and the error of the module's own forward on the fused network's inputs
against the truth network, which is what eager's code makes of the same inputs.

    python benchmarks/dropin_attribution.py --darts /work/public/darts --batch 16 --size 32 --C 16 --layers 8
"""
import argparse
import copy
import os
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import public_codebases as pc  # noqa: E402
import public_lockstep as pl  # noqa: E402

BAR64, BAR32 = 1e-12, 2.0


def capture(net, sites):
    """Hooks on the fused sites of net: path -> list of [args, output gradient] per call."""
    calls, handles = {}, []
    modules = dict(net.named_modules())
    for path in sites:
        def hook(m, args, out, path=path):
            call = [tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args), None]
            calls.setdefault(path, []).append(call)
            if out.requires_grad:
                out.register_hook(lambda g: call.__setitem__(1, g.detach().clone()))
        handles.append(modules[path].register_forward_hook(hook))
    return calls, handles


def replay(site, calls, dtype, own):
    """site (a copy) run on the captured calls in dtype, by its own forward (own) or the fused one:
    name -> tensor for its outputs, parameter gradients and buffers afterwards."""
    site = copy.deepcopy(site)
    if own:
        cls = type(site)._adopted[1]
        method = type(site)._adopted[2]
        run = lambda *a: getattr(cls, method)(site, *a)  # noqa: E731
    else:
        run = site
    site.to(dtype)
    for p in site.parameters():
        p.grad = None
    out = {}
    with pl.default_dtype(dtype):
        for i, (args, g) in enumerate(calls):
            args = [a.detach().to(dtype, copy=True).requires_grad_() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            y = run(*args)
            out[f"output {i}"] = y.detach()
            if g is not None:
                y.backward(g.to(dtype))
                out.update((f"grad input {i}.{j}", a.grad) for j, a in enumerate(args)
                           if torch.is_tensor(a) and a.grad is not None)
    out.update((f"grad {n}", p.grad) for n, p in site.named_parameters() if p.grad is not None)
    out.update((f"buffer {n}", b.detach().clone()) for n, b in site.named_buffers())
    return out


def owner(name, sites):
    """The fused site a network tensor name ('grad a.b.c', 'buffer a.b') belongs to, and its name there."""
    kind, _, path = name.partition(" ")
    best = max((s for s in sites if path.startswith(s + ".")), key=len, default=None)
    return (best, f"{kind} {path[len(best) + 1:]}") if best else (None, None)


def same_inputs(r, key, bits):
    """The fused op's error on the inputs it was given, from one site's replays r: float64, against
    its own forward; float32, as a ratio to its own float32 forward's error (both against float64,
    norm-relative, floored as public_lockstep floors eager's). (the measure, its words)"""
    if bits == 64:
        same = pl.relative_error(r["fused"][key], r["own64"][key])
        return same, f"the fused op {same:.1e} from its own forward"
    mine = pl.relative_error(r["fused"][key], r["own64"][key], norm=True)
    own = pl.relative_error(r["own"][key], r["own64"][key], norm=True)
    ratio = mine / max(own, pl.FLOOR32)
    return ratio, f"fused {mine:.1e}, own float32 {own:.1e} ({ratio:.2f}x)"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--darts", metavar="PATH", required=True, help="checkout of quark0/darts")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--top", type=int, default=5, help="tensors printed per network and step")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pc.cpu_only()
    cfg = types.SimpleNamespace(batch=args.batch, size=args.size, C=args.C, layers=args.layers, device="cpu")
    v = pc.darts(args.darts, cfg)[0]
    ls = pl.Lockstep(v, cfg)
    ls.build()
    fused = {k: n for k, n in ls.alive().items() if k not in ("unfused64", "eager32")}
    sites = {k: [f.path for f in ls.reports[k].fused] for k in fused}
    xs = {64: ls.inputs(64), 32: ls.inputs(32)}
    print(f"public DARTS network, batch {args.batch}, {args.size} px, C {args.C}, {args.layers} cells; "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}")
    for step in range(args.steps):
        before = {k: copy.deepcopy(n) for k, n in fused.items()}
        hooks = {k: capture(n, sites[k]) for k, n in fused.items()}
        records, errors = ls._step("training", step, xs, {}, seed=step)
        for _, handles in hooks.values():
            for h in handles:
                h.remove()
        truth = records["unfused64"]
        for k in fused:
            bits = 64 if k.endswith("64") else 32
            if bits == 64:
                miss = {n: e[0] for n, e in errors[k].items() if not e[0] <= BAR64}
            else:
                miss = {n: e[2] / max(errors["eager32"][n][2], pl.FLOOR32) for n, e in errors[k].items()}
                miss = {n: ratio for n, ratio in miss.items() if not ratio <= BAR32}
            print(f"\n{k}, step {step + 1}: {len(miss)} tensors miss the bar")
            replays, owned, outside = {}, [], []
            for name in sorted(miss, key=miss.get, reverse=True):
                site, local = owner(name, sites[k])
                if site is None or not hooks[k][0].get(site):
                    outside.append(name)
                    continue
                if site not in replays:
                    module, calls = dict(before[k].named_modules())[site], hooks[k][0][site]
                    dt = torch.float64 if bits == 64 else torch.float32
                    replays[site] = {"fused": replay(module, calls, dt, own=False),
                                     "own": replay(module, calls, dt, own=True),
                                     "own64": replay(module, calls, torch.float64, own=True)}
                r = replays[site]
                measure, words = same_inputs(r, local, bits)
                theirs = pl.relative_error(r["own" if bits == 32 else "own64"][local], truth[name], norm=bits == 32)
                network = (f"{miss[name]:.2e}" if bits == 64 else
                           f"{miss[name]:.1f}x eager ({errors[k][name][2]:.1e} against eager's "
                           f"{errors['eager32'][name][2]:.1e})")
                owned.append((measure, f"  {name}: {network} in the network; on the same inputs {words}; its own "
                                       f"forward on those inputs {theirs:.2e} from the truth network"))
            flows = [(*same_inputs(r, key, bits), f"{site} {key}") for site, r in replays.items()
                     for key in r["fused"] if key.startswith("grad input")]  # the op's input and weight gradients
            rows = owned + [(measure, f"  {where}: on the same inputs {words}") for measure, words, where in flows]
            for _, line in owned[:args.top]:
                print(line)
            if rows:
                worst = max(rows, key=lambda row: row[0])
                what = "error from its own forward" if bits == 64 else "ratio to own float32 (floored at 1e-5)"
                print(f"  same inputs, {len(rows)} tensors of {len(replays)} fused ops: worst fused {what} {worst[0]:.2g}, at"
                      f"\n  {worst[1].strip()}")
            if outside:
                name = max(outside, key=miss.get)
                print(f"  {len(outside)} outside fused ops (architecture tensors, stem, preprocessing, the output: "
                      f"no op to replay), the worst {name}: {miss[name]:.3g}{'x eager' if bits == 32 else ''}")

if __name__ == "__main__":
    main()
