"""The catalogue of phenomena: one module per id, found through :mod:`.registry`; the contract they follow is
:mod:`.contract`, the lifecycle every run goes through is :mod:`.lifecycle`."""

from .config import PhenomenonConfig, build_config, param, training
from .context import RunContext
from .contract import ContractError, Phenomenon
from .registry import CATALOG, entry, get, implemented, make_config
from .verdict import Check, Result, Verdict, check

__all__ = [
    "CATALOG",
    "Check",
    "ContractError",
    "Phenomenon",
    "PhenomenonConfig",
    "Result",
    "RunContext",
    "Verdict",
    "build_config",
    "check",
    "entry",
    "get",
    "implemented",
    "make_config",
    "param",
    "training",
]
