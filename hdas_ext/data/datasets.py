"""The datasets: 'digits' (embedded, offline), 'cifar10' (torchvision's reader), 'imagenet' (ImageFolder).

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
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F

from .augmentation import Cutout
from .images import InMemoryImages

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
    package = __name__.split(".")[0]  # digits.npz sits at the package's top (setup.py's package_data)
    with importlib.resources.files(package).joinpath("digits.npz").open("rb") as f, np.load(f) as z:
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

    root = os.fspath(root)
    folder = os.path.join(root, Reader.base_folder)
    wanted = [f for f, _ in Reader.train_list + Reader.test_list] + [Reader.meta["filename"]]
    if not download:
        missing = [f for f in wanted if not os.path.isfile(os.path.join(folder, f))]
        if missing:
            raise FileNotFoundError(
                f"root={root!r}: {folder} lacks {', '.join(missing)}; point root at the "
                f"folder holding cifar-10-batches-py or pass download=True (--download)")
    try:
        return Reader(root, train=train, download=download)
    except OSError as e:  # urllib's URLError among them: no network, proxy, ...
        if not download:
            raise
        raise ConnectionError(f"download of CIFAR-10 into {root!r} failed ({getattr(e, 'reason', e)}); fetch "
                              f"{Reader.url} by hand and extract it there") from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError):
        raise ValueError(f"dataset cifar10: {_unreadable(folder, wanted)} is damaged (truncated or not a CIFAR-10 "
                         f"batch); replace it, e.g. extract the archive again") from None


def _unreadable(folder, names):
    """The first of `names` in `folder` that does not unpickle (or the folder, when they all do)."""
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        except Exception:
            return path
    return folder


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
            steps.append(Cutout(cutout))
    else:
        steps = [T.Resize(256), T.CenterCrop(224)] + norm
    return datasets.ImageFolder(split, T.Compose(steps))
