"""Small statistics and formatting shared by the phenomenon modules' signatures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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


def fmt_ci(v: float | None, lo: float | None, hi: float | None, spec: str = ".3f") -> str:
    """``v [lo, hi]``: a value and its confidence interval, each through :func:`fmt`."""
    return f"{fmt(v, spec)} [{fmt(lo, spec)}, {fmt(hi, spec)}]"


def loglog_slope(xs: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Least-squares slope of ``log(values)`` on ``log(xs)``; None with < 2 points or a value missing or <= 0."""
    if len(xs) < 2 or any(v is None or not v > 0 for v in values):
        return None
    return slope(np.log(xs).tolist(), np.log(values).tolist())


def loglog_slope_ci(
    xs: Sequence[float], per_group: Sequence[Sequence[float | None]], n_boot: int, level: float, seed: int = 0
) -> tuple[float | None, tuple[float | None, float | None]]:
    """Slope of log(mean of each group) on log(x), and its two-sided ``level`` percentile-bootstrap CI: each
    group's members (seeds, initialisations) are resampled with replacement, ``n_boot`` times
    (``numpy.random.default_rng(seed)``). (None, (None, None)) when a value is missing or the slope is undefined."""
    if any(v is None for vs in per_group for v in vs):
        return None, (None, None)
    point = loglog_slope(xs, [float(np.mean(v)) for v in per_group])
    if point is None:
        return None, (None, None)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        b = loglog_slope(xs, [float(np.mean(rng.choice(v, size=len(v)))) for v in per_group])
        if b is not None:
            boots.append(b)
    a = (1 - level) / 2
    return point, (float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)))


def grid_optimum(exponents: Sequence[float], losses: Sequence[float]) -> float | None:
    """The loss-optimal exponent on a log grid (e.g. log2 of a learning rate): the grid minimum, refined by the
    vertex of the parabola through it and its two neighbours (kept within half a grid step); None if no loss is
    finite."""
    if not any(math.isfinite(v) for v in losses):
        return None
    i = int(np.argmin([v if math.isfinite(v) else math.inf for v in losses]))
    if 0 < i < len(losses) - 1 and all(math.isfinite(v) for v in losses[i - 1 : i + 2]):
        a, b, c = losses[i - 1 : i + 2]
        curv = a - 2 * b + c
        if curv > 0:
            return exponents[i] + max(-0.5, min(0.5, 0.5 * (a - c) / curv))
    return float(exponents[i])


def lr_drift(exponents: Sequence[float], losses_per_width: Sequence[Sequence[float]]) -> tuple[float | None, list]:
    """``2^(max - min)`` of the per-width :func:`grid_optimum` of log2 learning rates (how far the best learning
    rate moves across widths; Yang et al. 2021, arXiv 2203.03466, muTransfer), and the per-width optima; None
    when a width has no finite loss."""
    opts = [grid_optimum(exponents, losses) for losses in losses_per_width]
    if any(o is None for o in opts):
        return None, opts
    return 2.0 ** (max(opts) - min(opts)), opts
