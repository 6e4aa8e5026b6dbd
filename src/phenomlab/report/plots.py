"""Figures the report draws from stored runs: each deciding number of a sweep against the swept value."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .figures import new_figure, plt


def checks_of(row: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """A finished run's verdict checks by name (empty for a run without a verdict)."""
    return {c["name"]: c for c in (row.get("verdict") or {}).get("checks", [])}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def deciding_number_figures(rows: Sequence[Mapping[str, Any]], key: str) -> list[tuple[str, bytes]]:
    """One PNG per verdict check: its value in every run against the run's ``key`` config value.

    Each seed is a dot; the line is the mean over seeds at each value and the band spans the seeds' minimum to
    maximum; the check's threshold is dashed. Non-numeric values of ``key`` are placed at evenly spaced positions.
    """
    values = sorted({_hashable(r["config"].get(key)) for r in rows}, key=_order)
    numeric = all(_is_number(v) for v in values)
    pos = {v: (float(v) if numeric else float(i)) for i, v in enumerate(values)}
    names = list(dict.fromkeys(n for r in rows for n in checks_of(r)))
    figures = []
    for name in names:
        by_value: dict[Any, list[float]] = {}
        threshold = op = None
        for r in rows:
            c = checks_of(r).get(name)
            if c is None or c.get("value") is None or not math.isfinite(c["value"]):
                continue
            by_value.setdefault(_hashable(r["config"].get(key)), []).append(float(c["value"]))
            threshold, op = c["threshold"], c["op"]
        if not by_value:
            continue
        fig, ax = new_figure(width=4.6, height=3.2)
        xs = sorted(by_value, key=_order)
        for v in xs:
            ax.scatter([pos[v]] * len(by_value[v]), by_value[v], s=14, color="C0", alpha=0.6, zorder=3)
        means = [sum(by_value[v]) / len(by_value[v]) for v in xs]
        x = [pos[v] for v in xs]
        ax.plot(x, means, color="C0", label="mean over seeds")
        ax.fill_between(x, [min(by_value[v]) for v in xs], [max(by_value[v]) for v in xs], color="C0", alpha=0.15)
        if threshold is not None:
            ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"threshold ({op} {threshold:.3g})")
        if not numeric:
            ax.set_xticks(x, [str(v) for v in xs])
        elif all(v > 0 for v in xs) and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        figures.append((name, buf.getvalue()))
    return figures


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _order(v: Any) -> tuple[int, Any]:
    return (0, v) if _is_number(v) else (1, str(v))
