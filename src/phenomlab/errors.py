"""Exceptions that phenomlab raises for problems a user can fix.

Every error here is a ``ValueError`` subclass so callers that only know the
standard library still catch bad input; the CLI turns them into one line and
exit code 2.
"""

from __future__ import annotations


class PhenomlabError(ValueError):
    """Base class: bad input or an unusable setting, described in one line."""


class ConfigError(PhenomlabError):
    """An unknown, mistyped or out-of-range configuration value."""


class UnknownPhenomenon(PhenomlabError):
    """A phenomenon id that is not in the catalogue."""


class StoreError(PhenomlabError):
    """The run store cannot be opened or written (e.g. an unwritable directory)."""


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN/inf; carries the step where it happened."""

    def __init__(self, step: int, what: str = "loss", value: float | None = None) -> None:
        self.step = step
        self.what = what
        self.value = value
        super().__init__(f"training diverged at step {step}: {what} is {value!s} (not finite)")


class CheckpointError(PhenomlabError):
    """A checkpoint or cached partial result that cannot be loaded safely: corrupt, truncated, of another model,
    or not plain data (a crafted pickle is refused, never executed)."""

    @classmethod
    def unreadable(cls, path: object, exc: Exception) -> CheckpointError:
        why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
        return cls(f"checkpoint {path} cannot be loaded ({why}); delete it or rerun with --force")


class StoreDamaged(StoreError):
    """The run store's database is unreadable (truncated, overwritten, empty); ``phenomlab store rebuild``
    re-indexes the runs from their folders."""


class AmbiguousId(PhenomlabError):
    """A run or sweep id prefix that matches more than one entry (the message lists the candidates)."""


class InsufficientMemory(PhenomlabError):
    """A configuration whose tensors do not fit in this machine's memory (the run is stored as failed)."""
