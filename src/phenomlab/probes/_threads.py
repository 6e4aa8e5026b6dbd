"""Opt-in control of torch's intra-op thread count by the probes.

No probe calls ``torch.set_num_threads`` on its own: the count is process-wide, so a library that
changed it would change it for every other thread of the caller's process. A caller who wants the
probes to manage threads says so with :func:`threads`; inside that block small and memory-bound
kernels run on one thread and large GEMMs get the block's thread count (why: docs/PROBES.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor

from phenomlab.errors import PhenomlabError

__all__ = ["threads"]

# One entry per active ``threads`` block (innermost last): whether that block asked for adaptive threads.
_ADAPTIVE: list[bool] = []
# Thread counts in force outside each active ``one_thread`` block (innermost last).
_OUTER: list[int] = []

# Below ~1 GFLOP a GEMM is cheaper on one thread than handed to an OpenMP team on a busy machine.
_GEMM_THREAD_MIN_FLOPS = 1 << 30
# Below this many multiply-adds per pass (parameters x samples) a model pass is overhead-bound.
_SMALL_MODEL_WORK = 1 << 24


@contextmanager
def _count(n: int | None) -> Iterator[int]:
    """``n`` intra-op threads for the block (``None``: unchanged); yields the previous count, restored after."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield old
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


@contextmanager
def threads(n: int | None = None, *, adaptive: bool = True) -> Iterator[None]:
    """Let the probes called inside this block set torch's intra-op thread count; restored on exit.

    ``n``: threads for the block (``None`` keeps the current count). ``adaptive``: the probes run
    eigensolvers, sorts, scatter-adds and small per-sample passes on one thread and hand GEMMs above
    ~1 GFLOP back the block's count, which was much faster on oversubscribed CPUs (docs/PROBES.md).
    Outside any such block the probes never call ``torch.set_num_threads``.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise PhenomlabError(f"threads: n must be a positive int or None, got {n!r}")
    with _count(n):
        _ADAPTIVE.append(bool(adaptive))
        try:
            yield
        finally:
            _ADAPTIVE.pop()


@contextmanager
def one_thread(t: Tensor | None = None) -> Iterator[None]:
    """Inside an adaptive :func:`threads` block run the enclosed CPU work on one thread; else nothing."""
    if not (_ADAPTIVE and _ADAPTIVE[-1]) or (t is not None and t.device.type != "cpu"):
        yield
        return
    with _count(1) as old:
        _OUTER.append(old)
        try:
            yield
        finally:
            _OUTER.pop()


def caller_threads(flops: float | None = None) -> AbstractContextManager[Any]:
    """Inside :func:`one_thread`, give the enclosed GEMM the block's thread count if ``flops`` >= ~1 GFLOP."""
    if not _OUTER or (flops is not None and flops < _GEMM_THREAD_MIN_FLOPS):
        return nullcontext()
    return _count(_OUTER[0])


def model_pass_threads(n_params: int, n_samples: int, device: torch.device) -> AbstractContextManager[None]:
    """Threads for passes of a model: one thread for small work, the caller's count for big passes."""
    if device.type != "cpu":
        return nullcontext()
    if n_params * n_samples < _SMALL_MODEL_WORK:
        return one_thread()
    return caller_threads()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def single_threaded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator: run ``fn`` inside :func:`one_thread` (a no-op outside an adaptive :func:`threads` block)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with one_thread():
            return fn(*args, **kwargs)

    return wrapper
