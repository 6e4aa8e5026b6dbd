import pytest

from phenomlab.phenomena.lifecycle import run_phenomenon
from phenomlab.store.sqlite import RunStore


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """``smoke(pid) -> (store, result)``: each phenomenon's smoke-preset run, computed once per test session and
    shared by the contract test and the phenomenon's own tests."""
    cache = {}

    def get(pid):
        if pid not in cache:
            store = RunStore(tmp_path_factory.mktemp(f"smoke-{pid}"))
            cache[pid] = (store, run_phenomenon(pid, preset="smoke", seed=0, store=store))
        return cache[pid]

    return get
