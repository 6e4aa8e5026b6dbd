"""Small statistics and formatting shared by the phenomenon modules' signatures."""

from __future__ import annotations

import math
from collections.abc import Sequence


def spearman(x: Sequence[float], y: Sequence[float], min_points: int = 2) -> float | None:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties; Spearman 1904).

    None when undefined: fewer than ``min_points`` pairs, or either side constant.
    """
    from scipy.stats import spearmanr

    if len(x) < max(min_points, 2) or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = float(spearmanr(list(x), list(y)).statistic)
    return None if math.isnan(rho) else rho


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``y`` on ``x``: ``sum (x - mean x)(y - mean y) / sum (x - mean x)^2``."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def fmt(v: float | None, spec: str = ".3f") -> str:
    """``v`` formatted with ``spec``, or ``n/a`` for a value that was never measured."""
    return "n/a" if v is None else format(v, spec)
