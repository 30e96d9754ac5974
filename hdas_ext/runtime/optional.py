"""Optional dependencies: which extra of the package installs each, and the one-line notes a run
prints when one is missing (the run goes on without the feature)."""
import functools

# module -> (what pip installs, the extra of setup.py's extras_require that holds it)
EXTRAS = {
    "graphviz": ("graphviz", "viz"),
    "tensorboard": ("tensorboard", "log"),
    "tqdm": ("tqdm", "log"),
    "torchvision": ("torchvision", "data"),
    "sklearn": ("scikit-learn", "data"),
}


def install_hint(module):
    """'<module> is not installed: pip install ...' for an optional module (or a submodule of
    one); None for any other name."""
    top = (module or "").split(".")[0]
    if top not in EXTRAS:
        return None
    _, extra = EXTRAS[top]
    return f"{top} is not installed: pip install 'hdas_ext[{extra}]'"


@functools.lru_cache(maxsize=None)
def note_missing(module, feature, tag):
    """Print once per process that `feature` is off because `module` is missing."""
    print(f"[{tag}] {feature} off: {install_hint(module) or module + ' is not installed'}", flush=True)
