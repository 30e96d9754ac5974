"""Training augmentation, one code path for a sample on the CPU and a batch on the GPU: random
crops of the padded image, horizontal flips, AutoAugment (torchvision's CIFAR-10 policy, the
'data' extra), normalisation and DARTS' Cutout."""
import torch
import torch.nn.functional as F

from ..extras import require


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


class Cutout:
    """DARTS' Cutout of one normalised image tensor [C, H, W], as a torchvision transform."""

    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        return augment_batch(img.unsqueeze(0), cutout=self.size).squeeze(0)
