"""Optional dependencies: the extra of setup.py's extras_require that installs each, and the one
line that names it when the package is missing."""

# module -> (what pip installs, the extra that holds it)
EXTRAS = {
    "graphviz": ("graphviz", "viz"),
    "tensorboard": ("tensorboard", "log"),
    "torchvision": ("torchvision", "data"),
}


def install_hint(module):
    """'<module> is not installed (the 'X' extra): pip install <package>' for an optional module
    (or a submodule of one); None for any other name."""
    top = (module or "").split(".")[0]
    if top not in EXTRAS:
        return None
    package, extra = EXTRAS[top]
    return f"{top} is not installed (the '{extra}' extra): pip install {package}"


def require(module):
    """import_module(module), or ModuleNotFoundError carrying install_hint's line and the name."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0]:
            raise
        raise ModuleNotFoundError(install_hint(module), name=e.name) from None
