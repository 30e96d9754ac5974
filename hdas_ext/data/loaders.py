"""What serves a dataset to a run: this rank's share of each epoch (ShardedSampler) and, for
in-memory images, batches cut and augmented on the compute device (DeviceLoader)."""
import math

import torch

from .images import InMemoryImages


class ShardedSampler(torch.utils.data.Sampler):
    """This rank's indices for one epoch. Shuffling is a permutation drawn from (seed, epoch)
    alone, so a resumed run sees the same order and every rank agrees on it. Rank r takes
    positions r, r + world, ...; when shuffling (training) the permutation is cut to a multiple
    of world so every rank runs the same number of steps; evaluation keeps all items (ranks may
    differ by one, which is fine without collectives in the forward pass).
    With world = 1 and batch B the batches are exactly the union of the world-W batches of B/W."""

    def __init__(self, n, shuffle, seed=0, rank=0, world=1):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world={world}), got {rank}")
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def indices(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
            order = order[: self.n - self.n % self.world]
        else:
            order = torch.arange(self.n)
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        if self.shuffle:
            return self.n // self.world
        return len(range(self.rank, self.n, self.world))


class DeviceLoader:
    """Batches of an InMemoryImages dataset kept whole on `device`, augmented there per batch
    with a device-side generator (its state is part of the loader's state_dict for resuming)."""

    def __init__(self, dataset, batch_size, sampler, device, seed=0, drop_last=False):
        if not isinstance(dataset, InMemoryImages):
            raise TypeError("DeviceLoader needs an InMemoryImages dataset ('digits' or 'cifar10')")
        self.dataset, self.batch_size, self.sampler, self.drop_last = dataset, batch_size, sampler, drop_last
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 7919 * sampler.rank)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        idx = self.sampler.indices().to(self.device)
        for b in range(len(self)):
            sel = idx[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.dataset.transform(self.images[sel], self.generator), self.labels[sel]

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"].cpu())
