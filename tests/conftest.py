import os

import mobilevision  # noqa: F401  (before torch: OpenMP reads its PASSIVE wait policy when torch loads)
import pytest
import torch

# CI runs `pytest -n 2` on 2 cores: one intra-op thread per worker avoids oversubscription.
torch.set_num_threads(int(os.environ.get("MOBILEVISION_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module whatever MOBILEVISION_TEST_THREADS says: these small convolutions gain
    nothing from a second thread, and on shared cores two threads per process oversubscribe badly (about 15x
    slower here); the setting is restored afterwards. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
