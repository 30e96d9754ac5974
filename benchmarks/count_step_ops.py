"""Operators one search step dispatches, fused vs eager: a device-independent proxy for the
kernel launches that bound a small-batch step on a fast GPU (H200), measured here on the CPU.

Counts every ATen/hdas operator call of one first-order search step (architecture step and
weight step, common.SEARCH_SPACES' supernets and settings), except views and metadata ops, which
launch nothing. The optimisers' and the gradient clipping's ops are counted apart: on CUDA they
run as multi-tensor (foreach) kernels, a few launches for all parameters, while on the CPU they
loop over the parameters. An hdas op counts once here, though its CUDA implementation launches a
few kernels (mixed_node: 3 forward, 3 backward plus its ATen sums and copies).

    python benchmarks/count_step_ops.py [--spaces cells,hc,hs,distribution]
"""
import argparse
import collections
import functools

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import common  # noqa: E402

# Allocation and metadata ops (views are recognised by their schema): no kernel runs.
NO_KERNEL = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "set_",
    "is_same_size", "_has_compatible_shallow_copy_type", "sym_size", "sym_stride", "sym_numel",
    "sym_storage_offset", "is_nonzero", "_local_scalar_dense", "result_type", "size", "stride", "dim",
    "_record_function_enter_new", "_record_function_exit",
}


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bucket = "model"
        self.counts = collections.defaultdict(collections.Counter)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if not func.is_view and name.split("::")[-1] not in NO_KERNEL:
            self.counts[self.bucket][name] += 1
        return func(*args, **(kwargs or {}))


def count(space, fused):
    _, opt = common.build_search(space, 16, fused, "cpu")
    step = common.search_step(opt, common.search_batches(2, 32, "cpu"))  # the op count does not depend on the batch
    step()
    counter = OpCounter()

    def in_bucket(fn):
        @functools.wraps(fn)
        def run(*a, **k):
            counter.bucket = "optimiser"
            try:
                return fn(*a, **k)
            finally:
                counter.bucket = "model"
        return run

    opt.w_optimizer.step = in_bucket(opt.w_optimizer.step)
    opt.a_optimizer.step = in_bucket(opt.a_optimizer.step)
    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = in_bucket(clip)
    try:
        with counter:
            step()
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    return counter.counts


def top(counts, k):
    return ", ".join(f"{name.split('::')[-1]} {n}" for name, n in counts.most_common(k))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spaces", default=",".join(common.SEARCH_SPACES))
    p.add_argument("--top", type=int, default=8)
    args = p.parse_args()
    print("| supernet | eager ops (model / optimiser) | fused ops (model / optimiser) | eager / fused, model ops |")
    print("|---|---|---|---|")
    details = []
    for space in args.spaces.split(","):
        e, f = count(space, False), count(space, True)
        em, fm = sum(e["model"].values()), sum(f["model"].values())
        print(f"| {space} | {em} / {sum(e['optimiser'].values())} | {fm} / {sum(f['optimiser'].values())} "
              f"| {em / fm:.2f}x |", flush=True)
        details.append(f"{space}: eager-only ops {top(e['model'] - f['model'], args.top)}; "
                       f"fused model ops {top(f['model'], args.top)}")
    print()
    print("\n".join(details))


if __name__ == "__main__":
    main()
