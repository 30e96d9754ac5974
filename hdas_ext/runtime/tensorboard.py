"""TensorBoard event files (optional: without the tensorboard package a run goes on without)."""
from .optional import note_missing


def open_tensorboard(folder, purge_step, tag):
    """A SummaryWriter on `folder` that drops events after `purge_step` (written before a kill
    and rewritten by the resumed run), or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        note_missing(e.name or "tensorboard", "TensorBoard logs", tag)
        return None
    return SummaryWriter(folder, purge_step=purge_step)
