"""Mixed precision, the same for searches and training: bf16 autocasts on any device, fp16 (with
loss scaling) on CUDA only."""
import torch

AMP_MODES = ("none", "bf16", "fp16")


def amp_dtype(amp, device):
    """The autocast dtype of an --amp setting on `device` (None for 'none'); ValueError naming the
    setting when it is unknown or fp16 is asked for off CUDA."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ValueError(f"amp='fp16' needs a CUDA device (its loss scaling), got {device}; bf16 runs on the CPU too")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
