"""Small-image datasets held in memory as one tensor, augmented per sample on the CPU (a
DataLoader) or per batch on the device (hdas_ext.data.DeviceLoader) by the same code."""
import torch
from torch.utils.data import Dataset

from .augmentation import augment_batch, autoaugment_policy


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
