import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch

from phenomlab.phenomena.grokking import Config

# the catalogue-wide names once grokking's config is renamed (max_steps -> steps, wd -> weight_decay)
_FIELDS = {f.name for f in dataclasses.fields(Config)}
STEPS = "steps" if "steps" in _FIELDS else "max_steps"


def tiny_grokking(steps: int = 60) -> dict[str, str]:
    """A tiny grokking config (verdict irrelevant): well under a second per run on one thread."""
    return {"p": "11", "embed_dim": "16", "width": "32", STEPS: str(steps), "eval_every": "20"}


@pytest.fixture
def tiny() -> Callable[..., dict[str, str]]:
    """``tiny(steps=60)``: the overrides of a tiny grokking run."""
    return tiny_grokking


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # tiny models on a shared machine: several threads per op are much slower than one (and workers use one)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
