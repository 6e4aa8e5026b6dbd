"""Grids over configs and seeds, run locally or on Ray; aggregation across seeds.

``phenomlab.sweep(...)`` calls :func:`phenomlab.sweep.api.sweep`: the package is callable, so the
function and the subpackage can share the name the design gives them.
"""

import sys
import types
from typing import Any

from .api import SweepResult, plan, runs_frame, sweep
from .compare import aggregate, bootstrap_ci
from .grid import MAX_TRIALS, TooManyTrials, Trial, parse_grid, parse_seeds

__all__ = [
    "SweepResult",
    "plan",
    "runs_frame",
    "sweep",
    "aggregate",
    "bootstrap_ci",
    "MAX_TRIALS",
    "TooManyTrials",
    "Trial",
    "parse_grid",
    "parse_seeds",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
