import os

import pytest
import torch

# The tests' own inductor cache: a warm cache makes torch.compile tests fast on reruns.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".inductor-cache"))

HAS_CUDA = torch.cuda.is_available()


def devices():
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def single_thread():
    """One intra-op thread for tests of whole networks: on a shared 2-core machine two OpenMP
    threads spin against other processes and run tiny kernels up to 100x slower. (The op tests
    keep the default threads, so at::parallel_for's chunking is exercised.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
