"""Learning-rate schedules as closed-form factors of the optimizer step, for LambdaLR stepped
once per optimizer step (a resumed run only needs the step count)."""
import math


class LRFactor:
    """lr(step) / lr for the three recipes.

    cosine: DARTS' CosineAnnealingLR stepped per epoch, from lr to lr_min over `epochs`.
    step: multiply by `decay` every epoch (DARTS ImageNet, 0.97).
    warmup_cosine: linear warm-up from 1e-3*lr over `warmup_epochs` (per step), then cosine per
    step to lr_min over the remaining steps (the H-DAS DDP recipe; its released code used the total
    step count as the cosine period, which never reaches lr_min; we end exactly at lr_min).
    A plain object (numbers only), so LambdaLR's state_dict stores and restores it."""

    def __init__(self, kind, epochs, steps_per_epoch, min_factor=0.0, decay=0.97, warmup_epochs=0):
        self.kind = kind
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.min_factor = min_factor
        self.decay = decay
        self.warmup_epochs = warmup_epochs

    def __call__(self, step):
        epoch = step // self.steps_per_epoch
        if self.kind == "cosine":
            t = min(epoch, self.epochs) / self.epochs
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.decay ** epoch
        if self.kind == "warmup_cosine":
            warm = self.warmup_epochs * self.steps_per_epoch
            total = self.epochs * self.steps_per_epoch
            if step < warm:
                return 1e-3 + (1 - 1e-3) * step / warm
            t = min(step - warm, total - warm) / max(1, total - warm)
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        raise ValueError(f"schedule must be cosine, step or warmup_cosine, got {self.kind!r}")
