"""The package version, and the versions a run records next to its numbers."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """phenomlab, torch, numpy and Python versions, the platform and torch's intra-op thread count: stored with
    every run (CPU float rounding, and so a trained run's exact numbers, depend on the thread count)."""
    import numpy
    import torch

    return {
        "phenomlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }
