"""Progress within an epoch that suits a terminal and a log file alike: a tqdm bar when stderr is a
terminal, else a plain line every LINE_SECONDS (a log file gets no carriage-return frames)."""
import contextlib
import sys
import time

from .optional import note_missing

LINE_SECONDS = 30.0


def show_progress(setting, main):
    """Progress on rank 0 only, when the setting is on."""
    return main and bool(setting)


class LineProgress:
    """tqdm's update/set_postfix/close, written as one line per `interval` seconds."""

    def __init__(self, total, desc, tag, interval=LINE_SECONDS, file=None):
        self.total, self.desc, self.tag, self.interval = total, desc, tag, interval
        self.file = file or sys.stderr
        self.n, self.postfix, self.last = 0, {}, time.monotonic()

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            extra = "".join(f" {k} {v}" for k, v in self.postfix.items())
            print(f"[{self.tag}] {self.desc}: step {self.n}/{self.total}{extra}", file=self.file, flush=True)

    def set_postfix(self, **values):
        self.postfix = values

    def close(self):
        pass


@contextlib.contextmanager
def progress_bar(total, desc, enabled, tag):
    """Progress of `total` steps, closed on leaving: a tqdm bar on a terminal (a line-per-interval
    progress without tqdm installed), a line per interval otherwise; None when disabled."""
    bar = None
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError as e:
            note_missing(e.name or "tqdm", "progress bars", tag)
        else:
            bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
    if enabled and bar is None:
        bar = LineProgress(total, desc, tag)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()
