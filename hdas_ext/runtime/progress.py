"""Per-epoch progress bars (tqdm, optional: without it a run goes on without bars)."""
import contextlib
import sys

from .optional import note_missing


def show_progress(setting, main):
    """Bars on rank 0 only; setting None means: when stderr is a terminal."""
    return main and (sys.stderr.isatty() if setting is None else bool(setting))


@contextlib.contextmanager
def progress_bar(total, desc, enabled, tag):
    """A tqdm bar of `total` steps, closed on leaving; None when disabled or tqdm is not installed."""
    bar = None
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError as e:
            note_missing(e.name or "tqdm", "progress bars", tag)
        else:
            bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
