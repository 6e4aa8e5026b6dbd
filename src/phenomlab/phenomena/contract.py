"""The phenomenon contract as code: what a module in ``phenomlab.phenomena`` must define.

A phenomenon module defines::

    ID = "grokking"                           # catalogue id (docs/CATALOG.md)
    class Config(PhenomenonConfig, training(...))  # fields with ``param``; defaults = the quick preset
    PRESETS = {"quick": {}, "paper": {...}}   # overrides of the defaults
    def run(config, ctx) -> dict              # trains / measures; returns JSON-able data
    def signature(result) -> Verdict          # decides from the measured numbers only
    def plot(result, out_dir) -> list[Path]   # figures from the same data

and, optionally, ``RUNS_ON_CPU = True`` when ``run`` builds everything on the CPU and ignores ``ctx.device``: the
lifecycle then runs and records it on the CPU whatever device was asked for, and says so.

The registry checks this when it loads a module; the lifecycle, CLI, sweeps, store and report know nothing
phenomenon-specific. docs/CONTRIBUTING.md has a complete example and the science rules a verdict follows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from ..errors import PhenomlabError
from .config import PhenomenonConfig
from .context import RunContext
from .verdict import Result, Verdict


class ContractError(PhenomlabError):
    """A phenomenon module that does not follow the contract (names the module and what is missing)."""


@runtime_checkable
class Phenomenon(Protocol):
    """The module-level names a phenomenon defines (checked by :func:`check_module`)."""

    ID: str
    Config: type[PhenomenonConfig]
    PRESETS: Mapping[str, Mapping[str, Any]]

    def run(self, config: Any, ctx: RunContext) -> dict[str, Any]: ...

    def signature(self, result: Result) -> Verdict: ...

    def plot(self, result: Result, out_dir: Path) -> list[Path]: ...


def check_module(mod: ModuleType, pid: str) -> ModuleType:
    """Return ``mod`` if it follows the contract for id ``pid``, else raise :class:`ContractError`."""
    name = mod.__name__
    missing = [a for a in ("ID", "Config", "PRESETS", "run", "signature", "plot") if not hasattr(mod, a)]
    if missing:
        raise ContractError(f"phenomenon module {name} lacks {', '.join(missing)} (see phenomlab.phenomena.contract)")
    if mod.ID != pid:
        raise ContractError(f"phenomenon module {name} declares ID {mod.ID!r}, the catalogue expects {pid!r}")
    cfg = mod.Config
    if not (isinstance(cfg, type) and issubclass(cfg, PhenomenonConfig) and dataclasses.is_dataclass(cfg)):
        raise ContractError(f"{name}.Config must be a dataclass deriving from PhenomenonConfig")
    if not isinstance(mod.PRESETS, Mapping) or "quick" not in mod.PRESETS:
        raise ContractError(f"{name}.PRESETS must be a mapping with at least a 'quick' preset")
    for fn in ("run", "signature", "plot"):
        if not callable(getattr(mod, fn)):
            raise ContractError(f"{name}.{fn} must be a function")
    return mod
