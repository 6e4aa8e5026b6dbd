"""phenomlab: reproduce, measure and sweep the phenomena of deep learning science.

>>> import phenomlab
>>> result = phenomlab.run("grokking", preset="quick", seed=0)   # doctest: +SKIP
>>> result.verdict.passed                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from ._version import __version__


def run(
    pid: str,
    preset: str = "quick",
    seed: int = 0,
    device: str | None = None,
    store: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = False,
    *,
    out: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Any:
    """Run phenomenon ``pid`` (e.g. ``"grokking"``) and return its :class:`~phenomlab.phenomena.Result`.

    Keyword ``overrides`` replace config fields (``phenomlab.run("grokking", weight_decay=0.5)``). Finished runs
    are read from the run store ``store`` (default ``$PHENOMLAB_HOME``, else ``./phenomlab-runs``), as the CLI's
    ``--store``; ``out=`` is its deprecated old name.
    """
    from .phenomena.lifecycle import run_phenomenon
    from .store.sqlite import store_argument

    store = store_argument(store, out)
    return run_phenomenon(
        pid, preset=preset, overrides=overrides, seed=seed, device=device, out=store, force=force, progress=progress
    )


def __getattr__(name: str) -> Any:
    # ``phenomlab.sweep`` is both the subpackage and a callable (see phenomlab/sweep/__init__.py). It is
    # imported on first use, so ``import phenomlab.store`` or the CLI's startup do not pay for torch.
    if name == "sweep":
        import importlib

        return importlib.import_module(".sweep", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "run", "sweep"]
