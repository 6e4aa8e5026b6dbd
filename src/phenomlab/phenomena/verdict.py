"""What a phenomenon's ``signature`` returns: numeric checks and the verdict they make, and the run's result."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass
class Check:
    """One numeric criterion of a signature: ``value op threshold``."""

    name: str
    value: float | None
    op: str
    threshold: float
    passed: bool
    description: str = ""

    def __str__(self) -> str:
        v = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name} = {v} (need {self.op} {self.threshold:.4g})"


def check(name: str, value: float | None, op: str, threshold: float, description: str = "") -> Check:
    """Build a :class:`Check` whose ``passed`` is computed here from the measured value.

    A missing value (None/NaN: the event never happened) fails.
    """
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}")
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and _OPS[op](value, threshold)
    return Check(name, None if value is None else float(value), op, float(threshold), bool(ok), description)


@dataclass
class Verdict:
    """Did the signature appear? ``passed`` is the conjunction of the checks."""

    checks: list[Check]
    summary: str = ""
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary, "checks": [dataclasses.asdict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        return cls([Check(**c) for c in d["checks"]], d.get("summary", ""))

    def __str__(self) -> str:
        head = "PASSED" if self.passed else "NOT REPRODUCED"
        lines = [f"verdict: {head}" + (f" - {self.summary}" if self.summary else "")]
        lines += [f"  {c}" for c in self.checks]
        return "\n".join(lines)


@dataclass
class Result:
    """What a run produced: the JSON-able ``data`` its signature and plot read, plus identity."""

    phenomenon: str
    config: dict[str, Any]
    seed: int
    data: dict[str, Any]
    run_id: str | None = None
    verdict: Verdict | None = None
    figures: list[str] = field(default_factory=list)
    cached: bool = False
    duration: float | None = None
    run_dir: str | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.verdict is None else self.verdict.passed

    def __getitem__(self, key: str) -> Any:
        return self.data[key]
