"""Aggregate runs across seeds: mean and 95% bootstrap confidence interval, verdict pass rate.

Used by ``phenomlab compare``, the HTML report and ``SweepResult.compare``. It reads stored rows only, so it
lives in the store package, which the report may import (the sweep package sits above the report)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .ids import canonical_json

#: fewest seeds for which a bootstrap interval is shown (with 2 it is just the two values' spread)
MIN_CI_N = 3


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (Efron & Tibshirani 1993): resample seeds with replacement.

    With one value the interval is that value; NaNs are dropped.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def run_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a finished run worth aggregating: its verdict's check values and the scalar
    entries of its result data."""
    out: dict[str, float] = {}
    for c in (row.get("verdict") or {}).get("checks", []):
        if c.get("value") is not None:
            out[c["name"]] = float(c["value"])
    for k, v in (row.get("result") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in out:
            out[k] = float(v)
    if row.get("duration"):
        out["seconds"] = float(row["duration"])
    return out


def group_key(row: Mapping[str, Any]) -> str:
    return canonical_json({"phenomenon": row["phenomenon"], "config": row["config"]})


def aggregate(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by (phenomenon, config), i.e. across seeds; per group: seeds, pass rate, and for each
    scalar ``{"mean", "lo", "hi", "n", "values"}``
    (``lo``/``hi`` NaN below ``MIN_CI_N`` values). ``varying`` names the config keys that differ between groups."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    configs = [g[0]["config"] for g in groups.values()]
    varying = sorted({k for c in configs for k in c if any(c2.get(k) != c.get(k) for c2 in configs)})
    out = []
    for group in groups.values():
        # values are listed in seed order, as the seeds are
        members = sorted(group, key=lambda m: m["seed"])
        finished = [m for m in members if m["status"] == "finished"]
        scalars: dict[str, list[float]] = {}
        for m in finished:
            for k, v in run_scalars(m).items():
                scalars.setdefault(k, []).append(v)
        stats = {}
        for k, vals in scalars.items():
            finite = [v for v in vals if not math.isnan(v)]
            lo, hi = bootstrap_ci(finite) if len(finite) >= MIN_CI_N else (math.nan, math.nan)
            mean = float(np.mean(finite)) if finite else math.nan
            stats[k] = {"mean": mean, "lo": lo, "hi": hi, "n": len(finite), "values": finite}
        passed = [bool(m["passed"]) for m in finished if m.get("passed") is not None]
        out.append(
            {
                "phenomenon": members[0]["phenomenon"],
                "config": members[0]["config"],
                "label": ", ".join(f"{k}={members[0]['config'].get(k)}" for k in varying) or "(all runs)",
                "seeds": [m["seed"] for m in members],
                "runs": [m["run_id"] for m in members],
                "finished": len(finished),
                "failed": sum(m["status"] == "failed" for m in members),
                "pass_rate": (sum(passed) / len(passed)) if passed else math.nan,
                "metrics": stats,
                "varying": varying,
            }
        )
    return out


def to_frame(groups: Sequence[Mapping[str, Any]]) -> Any:
    """The aggregate as a pandas DataFrame: one row per (group, metric); a group without metrics (every run failed)
    keeps one row with an empty metric, so its failures are not lost."""
    import pandas as pd

    # the columns this frame always had come first, so that a script reading them by position still works
    columns = [
        "group",
        "metric",
        "mean",
        "ci_lo",
        "ci_hi",
        "n",
        "pass_rate",
        "seeds",
        "phenomenon",
        "finished",
        "failed",
    ]
    records = []
    for g in groups:
        head = {"phenomenon": g["phenomenon"], "group": g["label"]}
        tail = {"pass_rate": g["pass_rate"], "seeds": len(g["seeds"]), "finished": g["finished"], "failed": g["failed"]}
        metrics = g["metrics"].items() or [(None, {"mean": None, "lo": None, "hi": None, "n": 0})]
        for name, s in metrics:
            records.append(
                {**head, "metric": name, "mean": s["mean"], "ci_lo": s["lo"], "ci_hi": s["hi"], "n": s["n"], **tail}
            )
    return pd.DataFrame.from_records(records, columns=columns)
