"""Seeds and devices: same seed + same device gives the same numbers."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (dropout, init)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed``, independent of global state."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def derive_seed(seed: int, *salt: int | str) -> int:
    """A deterministic child seed, so sub-tasks (data, init, batches) get independent streams."""
    h = 1469598103934665603
    for part in (seed, *salt):
        for byte in str(part).encode():
            h = ((h ^ byte) * 1099511628211) % (2**63)
    return h % (2**31 - 1)


def resolve_device(device: str | None = None) -> torch.device:
    """The device a run uses: the CPU unless ``device`` names another; ``"auto"`` is CUDA when present, else the CPU.

    The CPU is the default, not the fastest device present, because the catalogue's verdicts were measured there:
    CUDA kernels round differently and every number moves, so a check near its threshold can flip (on an H200,
    sparse-training's seed 0 fails a check it passes on the CPU; docs/BENCHMARKS.md), and the same command
    would give another verdict on another machine.
    """
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .errors import ConfigError

    choices = "cpu, cuda, cuda:N, mps or auto"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"invalid device {device!r}: choose {choices}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but there are {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {device!r} requested but MPS is not available")
    elif dev.type != "cpu":
        # meta, xpu, ...: torch parses them, and the run then fails deep inside training
        raise ConfigError(f"device {device!r} is not supported: choose {choices}")
    return dev


@contextlib.contextmanager
def deterministic(device: str | torch.device) -> Iterator[None]:
    """Deterministic kernels while the block runs on a CUDA ``device``; a no-op on the CPU, whose kernels are.

    On CUDA several kernels accumulate with atomics (embedding and index backward passes, some cuDNN convolution
    algorithms), so two runs with one seed differ in the last bits and drift apart over training, and a resumed
    run no longer equals an uninterrupted one. Inside the block ``torch.use_deterministic_algorithms`` is on (an
    op with no deterministic kernel warns rather than fails) and cuDNN's autotuner off; the previous settings come
    back after it. cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when it starts, so it is set here (unless set already)
    and takes effect when the block is the process's first CUDA work, as in ``phenomlab run``. See PyTorch's
    "Reproducibility" notes (docs.pytorch.org/docs/stable/notes/randomness.html).
    """
    if torch.device(device).type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was[2], was[3]
