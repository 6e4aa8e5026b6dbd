"""phenomlab: reproduce, measure and sweep the phenomena of deep learning science.

>>> import phenomlab
>>> result = phenomlab.run("grokking", preset="quick", seed=0)   # doctest: +SKIP
>>> result.verdict.passed                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ._version import __version__


def run(
    pid: str,
    preset: str = "quick",
    seed: int = 0,
    device: str | None = None,
    out: str | None = None,
    force: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> Any:
    """Run phenomenon ``pid`` (e.g. ``"grokking"``) and return its :class:`~phenomlab.phenomena.Result`.

    Keyword ``overrides`` replace config fields (``phenomlab.run("grokking", weight_decay=0.5)``). Finished runs
    are read from the store in ``out`` (default ``./phenomlab-runs`` or ``$PHENOMLAB_HOME``).
    """
    from .phenomena.lifecycle import run_phenomenon

    return run_phenomenon(
        pid, preset=preset, overrides=overrides, seed=seed, device=device, out=out, force=force, progress=progress
    )


def __getattr__(name: str) -> Any:
    # ``phenomlab.sweep`` is both the subpackage and a callable (see phenomlab/sweep/__init__.py). It is
    # imported on first use, so ``import phenomlab.store`` or the CLI's startup do not pay for torch.
    if name == "sweep":
        import importlib

        return importlib.import_module(".sweep", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "run", "sweep"]
