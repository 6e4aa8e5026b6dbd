import os

import pytest
import torch

# keep tests independent of a user's store location
os.environ.pop("PHENOMLAB_HOME", None)

# the tests train tiny models: one intra-op thread is as fast on an idle 2-core machine and 10-40x faster on a
# busy one (threads spinning against other processes); PHENOMLAB_TEST_THREADS overrides
torch.set_num_threads(int(os.environ.get("PHENOMLAB_TEST_THREADS", "1")))


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "store"


def _accelerator() -> torch.device | None:
    # PHENOMLAB_TEST_DEVICE=cpu runs the accelerator tests on the CPU (to check the tests themselves); unset, they
    # run on CUDA when present and are skipped otherwise (CI has no GPU)
    name = os.environ.get("PHENOMLAB_TEST_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda") if torch.cuda.is_available() else None


@pytest.fixture
def accel() -> torch.device:
    """The device the accelerator tests compare against the CPU; skips the test when there is none."""
    dev = _accelerator()
    if dev is None:
        pytest.skip("no accelerator (CUDA) on this machine; PHENOMLAB_TEST_DEVICE=cpu checks the test itself")
    return dev
