"""Datasets: 'digits' (embedded, offline), 'cifar10' (torchvision's reader), 'imagenet' (ImageFolder).

Small-image datasets are held in memory as one tensor and augmented by `augment_batch`, the same
code whether a DataLoader calls it per sample on the CPU or `DeviceLoader` calls it per batch on
the GPU (where the loader, not the network, is usually the bottleneck for 32 px images).

'digits' is the UCI handwritten digits as scikit-learn's load_digits returns them (1797 8x8 grey
images of 0-9, values 0-16), stored in the package as digits.npz, so no download and no
scikit-learn: upsampled bilinearly to 16x16, replicated to 3 channels, scaled to [0, 1],
normalised with the train split's per-channel mean/std; a fixed split (numpy RandomState(0)
permutation) puts 360 images in the test set and 1437 in the train set. Train augmentation: random
crop 16 with padding 2 (no flips: digits are not mirror-symmetric).

`autoaugment=True` (in-memory datasets) adds torchvision's AutoAugment with its CIFAR-10 policy
after the crop and flip, before normalisation and Cutout, as DARTS-family code that reports
AutoAugment results orders it; it needs torchvision (the 'data' extra) and draws its random choices
from torch's global RNG.
"""
import functools
import importlib.resources
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .extras import require

__all__ = [
    "DATASETS", "DATASET_SHAPES", "dataset_info", "get_dataset", "InMemoryImages", "augment_batch",
    "ShardedSampler", "DeviceLoader", "load_digits",
]

DATASETS = ("digits", "cifar10", "imagenet")
# name -> (num_classes, in_channels, image_size); networks read this without loading any data.
DATASET_SHAPES = {"digits": (10, 3, 16), "cifar10": (10, 3, 32), "imagenet": (1000, 3, 224)}

# DARTS' CIFAR-10 statistics (utils.py of quark0/darts) and the usual ImageNet ones.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR10_CROP_FILL = 128 / 255  # the released H-DAS recipe pads its crops with grey
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DIGITS_SIZE = 16
DIGITS_TEST = 360


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")


def dataset_info(name):
    """dict(num_classes, in_channels, image_size, mean, std) of a dataset name."""
    _check_name(name)
    num_classes, in_channels, image_size = DATASET_SHAPES[name]
    if name == "digits":
        _, _, mean, std = _digits_arrays()
    elif name == "cifar10":
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std)


def get_dataset(name, root=None, train=True, augment=True, cutout=0, download=False,
                color_jitter=False, autoaugment=False):
    """A torch Dataset of (image tensor, int label).

    name: 'digits' (root ignored), 'cifar10' (root = folder holding cifar-10-batches-py;
    `download=True` fetches it there first) or 'imagenet' (root holds train/ and val/ class folders).
    augment: the standard training augmentation (only applied when train=True).
    cutout: side of the zeroed square (DARTS' Cutout, after normalisation); 0 = off.
    color_jitter: ImageNet only, ColorJitter(0.4, 0.4, 0.4, 0.2) as in DARTS' train_imagenet.py.
    autoaugment: 'cifar10' and 'digits' only, torchvision's AutoAugment (CIFAR-10 policy) after the
    crop and flip (only applied when train=True and augment).
    """
    _check_name(name)
    if autoaugment and name == "imagenet":
        raise ValueError("autoaugment (torchvision's CIFAR-10 policy) applies to the in-memory datasets "
                         "'cifar10' and 'digits', not 'imagenet'")
    if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
        raise ValueError(f"cutout must be a non-negative int (square side in pixels), got {cutout!r}")
    augment = bool(augment and train)
    if name == "digits":
        images, labels, mean, std = _digits_arrays()
        n_test = DIGITS_TEST
        sl = slice(n_test, None) if train else slice(0, n_test)
        return InMemoryImages(images[sl], labels[sl], mean, std, crop_padding=2 if augment else 0,
                              flip=False, cutout=cutout if augment else 0, autoaugment=autoaugment and augment)
    if name == "cifar10":
        reader = _cifar10_reader(root, train, download)
        images = torch.from_numpy(reader.data).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
        labels = torch.tensor(reader.targets, dtype=torch.long)
        return InMemoryImages(images, labels, CIFAR10_MEAN, CIFAR10_STD,
                              crop_padding=4 if augment else 0, flip=augment,
                              cutout=cutout if augment else 0, crop_fill=CIFAR10_CROP_FILL,
                              autoaugment=autoaugment and augment)
    return _imagenet(root, train, augment, cutout, color_jitter)


def load_digits():
    """(images, target): the embedded digits as numpy arrays equal to scikit-learn's
    load_digits().images (float64 [1797, 8, 8], values 0-16) and .target (int64 [1797])."""
    with importlib.resources.files(__package__).joinpath("digits.npz").open("rb") as f, np.load(f) as z:
        return z["images"].astype(np.float64), z["target"].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    images, target = load_digits()
    order = np.random.RandomState(0).permutation(len(target))
    x = torch.from_numpy(images[order].astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    x = x.clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(target[order])
    train = x[DIGITS_TEST:]
    mean = tuple(float(v) for v in train.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in train.std(dim=(0, 2, 3)))
    return x, y, mean, std


def _cifar10_reader(root, train, download):
    from torchvision.datasets import CIFAR10

    if root is None:
        raise ValueError("dataset 'cifar10' needs root= (the folder that holds cifar-10-batches-py)")

    class Reader(CIFAR10):
        # torchvision md5-checks all six batch files on every load; we check presence (a
        # download is still verified against the archive's md5).
        train_list = [[f, None] for f, _ in CIFAR10.train_list]
        test_list = [[f, None] for f, _ in CIFAR10.test_list]
        meta = dict(CIFAR10.meta, md5=None)

    folder = os.path.join(os.fspath(root), Reader.base_folder)
    if not download:
        wanted = [f for f, _ in Reader.train_list + Reader.test_list] + [Reader.meta["filename"]]
        missing = [f for f in wanted if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise FileNotFoundError(
                f"root={os.fspath(root)!r}: {folder} lacks {', '.join(missing)}; point root at the "
                f"folder holding cifar-10-batches-py or pass download=True (--download)")
    return Reader(os.fspath(root), train=train, download=download)


def _imagenet(root, train, augment, cutout, color_jitter):
    from torchvision import datasets, transforms as T

    if root is None:
        raise ValueError("dataset 'imagenet' needs root= (a folder with train/ and val/ class folders)")
    split = os.path.join(os.fspath(root), "train" if train else "val")
    if not os.path.isdir(split):
        raise FileNotFoundError(f"root={os.fspath(root)!r}: no folder {split}")
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if augment:
        steps = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
        if color_jitter:
            steps.append(T.ColorJitter(0.4, 0.4, 0.4, 0.2))
        steps += norm
        if cutout:
            steps.append(_Cutout(cutout))
    else:
        steps = [T.Resize(256), T.CenterCrop(224)] + norm
    return datasets.ImageFolder(split, T.Compose(steps))


class _Cutout:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        return augment_batch(img.unsqueeze(0), cutout=self.size).squeeze(0)


def autoaugment_policy():
    """torchvision's AutoAugment with its CIFAR-10 policy (the 'data' extra)."""
    transforms = require("torchvision.transforms")
    return transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)


def augment_batch(x, crop_padding=0, flip=False, cutout=0, mean=None, std=None, generator=None, crop_fill=0.0,
                  policy=None):
    """Augment a float batch [B, C, H, W] with every sample drawn independently: random crop of
    the original size from the image padded with `crop_fill` (a value in x's [0, 1] scale),
    horizontal flip with probability 1/2, then `policy` (a transform of one uint8 image, e.g.
    autoaugment_policy(); its own random choices), then normalisation with (mean, std) when given,
    then DARTS' Cutout (a square of side `cutout` centred uniformly at random, clipped at the
    border, set to 0). `generator` must live on x's device; None uses the global RNG."""
    B, C, H, W = x.shape
    dev = x.device
    if crop_padding:
        p = crop_padding
        xp = F.pad(x, (p, p, p, p), value=crop_fill)
        oy = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=generator)
        rows = (oy[:, None] + torch.arange(H, device=dev))[:, None, :, None].expand(B, C, H, W + 2 * p)
        x = xp.gather(2, rows)
        cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, None, :].expand(B, C, H, W)
        x = x.gather(3, cols)
    if flip:
        mirror = torch.rand(B, device=dev, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    if policy is not None:
        pixels = x.mul(255).round_().to(torch.uint8)
        x = torch.stack([policy(img) for img in pixels]).to(x.dtype).div_(255)
    if mean is not None:
        m = torch.as_tensor(mean, dtype=x.dtype, device=dev).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=x.dtype, device=dev).view(1, -1, 1, 1)
        x = (x - m) / s
    if cutout:
        cy = torch.randint(0, H, (B, 1), device=dev, generator=generator)
        cx = torch.randint(0, W, (B, 1), device=dev, generator=generator)
        half = cutout // 2
        ys = torch.arange(H, device=dev)[None, :]
        xs = torch.arange(W, device=dev)[None, :]
        in_y = (ys >= (cy - half).clamp(0, H)) & (ys < (cy + half).clamp(0, H))
        in_x = (xs >= (cx - half).clamp(0, W)) & (xs < (cx + half).clamp(0, W))
        hole = in_y[:, None, :, None] & in_x[:, None, None, :]
        x = x.masked_fill(hole, 0.0)
    return x


class InMemoryImages(Dataset):
    """Images held as one tensor ([N, C, H, W], uint8 in [0, 255] or float in [0, 1]) with labels;
    items are normalised float tensors, augmented per sample with the global RNG."""

    def __init__(self, images, labels, mean, std, crop_padding=0, flip=False, cutout=0, crop_fill=0.0,
                 autoaugment=False):
        if images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images must be [N, C, H, W] with N == len(labels), got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        self.images, self.labels = images, labels
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_padding, self.flip, self.cutout, self.crop_fill = crop_padding, flip, cutout, crop_fill
        self.autoaugment = bool(autoaugment)
        self.policy = autoaugment_policy() if self.autoaugment else None

    def __len__(self):
        return self.images.shape[0]

    def to_float(self, x):
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def transform(self, x, generator=None):
        """Augment and normalise a raw batch (uint8 or float [0, 1])."""
        return augment_batch(self.to_float(x), self.crop_padding, self.flip, self.cutout,
                             self.mean, self.std, generator, self.crop_fill, self.policy)

    def __getitem__(self, i):
        return self.transform(self.images[i:i + 1]).squeeze(0), int(self.labels[i])

    def subset(self, n):
        """The first n items, same augmentation (quick runs)."""
        if not 0 < n <= len(self):
            raise ValueError(f"subset size must be in [1, {len(self)}], got {n}")
        return self.select(slice(0, n))

    def select(self, idx):
        """The items at idx (a slice or an index tensor/list), same augmentation."""
        idx = idx if isinstance(idx, slice) else torch.as_tensor(idx)
        return InMemoryImages(self.images[idx], self.labels[idx], self.mean, self.std, self.crop_padding,
                              self.flip, self.cutout, self.crop_fill, self.autoaugment)


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
