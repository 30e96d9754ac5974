"""DDP: two gloo processes on CPU, each with half of every global batch, end with the same
architecture (and weights) as one process that takes both halves as two micro-batches."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hdas_ext.search import SearchConfig, run_search


def config(out, **kw):
    # no augmentation: DDP ranks draw their augmentations from per-rank generators
    base = dict(space="hs", output=str(out), init_channels=4, epochs=1, batch_size=8, steps_per_epoch=3,
                eval_batches=1, fused=False, progress=False, tensorboard=False, plot=False, seed=0,
                augment=False, device="cpu")
    base.update(kw)
    if base["space"] == "hs":
        base.setdefault("cells_per_stage", 2)
    return SearchConfig(**base)


def _worker(rank, world, port, out, kw):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        run_search(config(out, **kw))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process(tmp_path):
    # second order on the distribution search: every gradient the optimiser averages (weights,
    # virtual-step weights, alphas and betas, the finite-difference terms) crosses the ranks
    kw = dict(order=2, space="distribution", n_max=2, n_min=1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), kw), nprocs=2, join=True)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_search(config(tmp_path / "single", accumulate=2, **kw))
    finally:
        torch.set_num_threads(n)
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["config"]["world"] == 2 and single["config"]["world"] == 1
    alpha_keys = [k for k in single["model"] if not k.startswith("net.")]
    assert alpha_keys
    moved = 0
    for k, v in single["model"].items():
        if k.startswith("net.") and ("running_" in k or "num_batches" in k):
            continue  # BN statistics: DDP keeps rank 0's, one process sees both halves
        torch.testing.assert_close(ddp["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    for k in alpha_keys:
        moved += int((single["model"][k].abs() > 2e-3).any())
    assert moved  # the alphas did move away from their 1e-3 * N(0, 1) start
