"""Data: the three datasets (digits embedded, CIFAR-10, ImageNet), their augmentation, in-memory
images and the loaders that serve them (sharded across ranks, or batched on the device)."""
from .augmentation import augment_batch, autoaugment_policy
from .datasets import DATASET_SHAPES, DATASETS, dataset_info, get_dataset, load_digits
from .images import InMemoryImages
from .loaders import DeviceLoader, ShardedSampler

__all__ = [
    "DATASETS", "DATASET_SHAPES", "dataset_info", "get_dataset", "InMemoryImages", "augment_batch",
    "autoaugment_policy", "ShardedSampler", "DeviceLoader", "load_digits",
]
