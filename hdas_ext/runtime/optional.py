"""The one-line notes a run prints when an optional package is missing (the run goes on without
the feature)."""
import functools

from ..extras import install_hint


@functools.lru_cache(maxsize=None)
def note_missing(module, feature, tag):
    """Print once per process that `feature` is off because `module` is missing."""
    print(f"[{tag}] {feature} off: {install_hint(module) or module + ' is not installed'}", flush=True)
