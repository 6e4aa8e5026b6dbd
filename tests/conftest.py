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
