"""Search data: the training set split into a weight half and an architecture half (DARTS; docs/algorithms.md),
each served by one persistent loader per epoch. Every step's global batch is cut into per-rank,
per-chunk micro-batches; the order depends only on (seed, epoch, half), so a resumed run sees the
same batches as an uninterrupted one, and N ranks x 1 chunk see exactly the samples that 1 rank x
N chunks sees (their random augmentations differ: each rank draws its own). In-memory datasets
('digits', 'cifar10') are batched and augmented on the compute device (hdas_ext.data.DeviceLoader);
others go through a DataLoader."""
import torch
from torch.utils.data import DataLoader, Subset

from ..data import DeviceLoader, InMemoryImages, ShardedSampler


class StepSampler(torch.utils.data.Sampler):
    """This rank's indices (into one half) for an epoch, in consumption order: for each global
    batch of a fresh permutation (the incomplete last batch dropped), this rank's `chunks`
    consecutive micro-batches of `global_batch / (world * chunks)` samples."""

    def __init__(self, num_samples, global_batch, seed, salt, rank=0, world=1, chunks=1):
        parts = world * chunks
        if global_batch % parts:
            raise ValueError(f"batch_size ({global_batch}) must be divisible by world size x accumulate "
                             f"({world} x {chunks})")
        if num_samples < global_batch:
            raise ValueError(f"batch_size ({global_batch}) is larger than a data half ({num_samples} samples)")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.seed, self.salt, self.rank, self.world, self.chunks = seed, salt, rank, world, chunks
        self.micro = global_batch // parts
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def steps(self):
        return self.num_samples // self.global_batch

    def indices(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 2 + self.salt)
        perm = torch.randperm(self.num_samples, generator=g)[: self.steps() * self.global_batch]
        per_rank = perm.view(self.steps(), self.world, self.chunks * self.micro)
        return per_rank[:, self.rank].reshape(-1)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.steps() * self.chunks * self.micro


def split_indices(n, train_portion):
    if not 0 < train_portion < 1:
        raise ValueError(f"train_portion must be in (0, 1), got {train_portion}")
    cut = int(n * train_portion)
    return list(range(cut)), list(range(cut, n))


def _half(dataset, idx):
    if isinstance(dataset, InMemoryImages):
        return dataset.select(idx)
    return Subset(dataset, idx)


class SearchData:
    """Loaders over the two halves of the training set plus an evaluation loader over this
    rank's shard of the architecture half (no augmentation). The released code uses indices
    [0, n/2) for the weights and [n/2, n) for the architecture."""

    def __init__(self, dataset, eval_dataset, batch_size, seed, device, train_portion=0.5, rank=0,
                 world=1, chunks=1, workers=0):
        w_idx, a_idx = split_indices(len(dataset), train_portion)
        self.chunks = chunks
        self.samplers = [StepSampler(len(w_idx), batch_size, seed, 0, rank, world, chunks),
                         StepSampler(len(a_idx), batch_size, seed, 1, rank, world, chunks)]
        micro = self.samplers[0].micro
        self.loaders = []
        for salt, (idx, sampler) in enumerate(zip((w_idx, a_idx), self.samplers)):
            half = _half(dataset, idx)
            if isinstance(half, InMemoryImages):
                self.loaders.append(DeviceLoader(half, micro, sampler, device, seed=seed * 2 + salt, drop_last=True))
            else:
                # Workers are not persistent: each epoch's iterator seeds them from the global RNG,
                # which the checkpoint restores, so augmentation is the same after a resume.
                self.loaders.append(DataLoader(half, batch_size=micro, sampler=sampler, drop_last=True,
                                               num_workers=workers, pin_memory=device.type == "cuda"))
        eval_half = _half(eval_dataset, a_idx)
        eval_sampler = ShardedSampler(len(a_idx), shuffle=False, rank=rank, world=world)
        eval_batch = max(1, batch_size // world)
        if isinstance(eval_half, InMemoryImages):
            self.eval_loader = DeviceLoader(eval_half, eval_batch, eval_sampler, device)
        else:
            self.eval_loader = DataLoader(eval_half, batch_size=eval_batch, sampler=eval_sampler,
                                          num_workers=workers)
        self.device = device

    def steps_per_epoch(self):
        return min(s.steps() for s in self.samplers)

    def set_epoch(self, epoch):
        for s in self.samplers:
            s.set_epoch(epoch)

    def epoch(self):
        """One iterator per half for the epoch, advanced in lock-step: yields (train chunks,
        val chunks), each a list of (x, y) on the device."""
        its = [iter(loader) for loader in self.loaders]
        for _ in range(self.steps_per_epoch()):
            yield tuple([self._to(next(it)) for _ in range(self.chunks)] for it in its)

    def _to(self, batch):
        x, y = batch
        return (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))

    def state_dict(self):
        return [loader.state_dict() if hasattr(loader, "state_dict") else None for loader in self.loaders]

    def load_state_dict(self, states):
        for loader, state in zip(self.loaders, states):
            if state is not None:
                loader.load_state_dict(state)
