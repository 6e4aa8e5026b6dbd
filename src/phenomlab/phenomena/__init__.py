"""The catalogue of phenomena: one module per id, found through :mod:`.registry`."""

from .base import Check, PhenomenonConfig, Result, RunContext, Verdict, build_config, check, param
from .registry import CATALOG, entry, get, implemented

__all__ = [
    "Check",
    "PhenomenonConfig",
    "Result",
    "RunContext",
    "Verdict",
    "build_config",
    "check",
    "param",
    "CATALOG",
    "entry",
    "get",
    "implemented",
]
