"""Matplotlib helpers shared by every phenomenon's ``plot``: headless backend, consistent saving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6) -> tuple[Any, Any]:
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel() if nrows * ncols > 1 else axes[0, 0]


def save(fig: Any, out_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``out_dir/name.png`` (150 dpi), close it, return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def loglog_fit(
    ax: Any,
    xs: Sequence[float],
    per_x: Sequence[Sequence[float]],
    slope: float | None,
    ci: tuple[float | None, float | None],
    color: str,
    label: str,
    *,
    marker: str = "o",
    ls: str = "-",
    mfc: str | None = None,
    s: float = 8,
    alpha: float = 0.4,
    band_alpha: float = 0.12,
) -> None:
    """Each x's values as faint points and their mean as a labelled marker; with ``slope``, the power law
    ``mean ~ x^slope`` (intercept fitted to the means in log-log) and, with ``ci``, its band: the lines through
    the geometric-mean point with the CI's slopes. ``mfc`` is the marker face colour (default ``color``)."""
    means = [float(np.mean(v)) for v in per_x]
    for x, v in zip(xs, per_x, strict=True):
        ax.scatter([x] * len(v), v, color=color, s=s, alpha=alpha)
    ax.plot(xs, means, marker, color=color, mfc=color if mfc is None else mfc, label=label)
    if slope is None:
        return
    b = float(np.polyfit(np.log(xs), np.log(means), 1)[1])
    grid = np.geomspace(min(xs), max(xs), 20)
    ax.plot(grid, np.exp(b) * grid**slope, ls, color=color, lw=1)
    lo, hi = ci
    if lo is not None and hi is not None:
        x0 = math.exp(float(np.mean(np.log(xs))))
        m0 = math.exp(b) * x0**slope
        ax.fill_between(grid, m0 * (grid / x0) ** lo, m0 * (grid / x0) ** hi, color=color, alpha=band_alpha)
