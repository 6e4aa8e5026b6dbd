"""Coordinate check: the typical size of each layer's activations against width during the first steps.

The muP diagnostic of Yang et al. 2022 (Tensor Programs V, arXiv 2203.03466, Fig. 5): under a parametrisation
that admits a width limit, the mean absolute coordinate ``mean_i |h_i|`` of every layer's output stays O(1) as
width grows, at init and after a few optimiser steps; under standard parametrisation with a width-independent
learning rate the output-layer (and later hidden) coordinates grow with width after training starts. Rows are
tidy (one per width, step, layer), as in the ``mup`` package's coord check; :func:`coord_slopes` summarises them as
the log-log slope of the size against width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._params import model_device
from phenomlab.probes.activations import features

__all__ = ["coord_check", "coord_sizes", "coord_slopes"]


def coord_sizes(model: nn.Module, x: Tensor, layers: Sequence[str]) -> dict[str, float]:
    """``mean |h|`` over all examples and coordinates of each named module's output (eval mode, no grad)."""
    return {name: float(f.abs().mean()) for name, f in features(model, x, list(layers)).items()}


def coord_check(
    models: Mapping[int, nn.Module],
    data: tuple[Tensor, Tensor],
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    layers: Sequence[str],
    steps: int = 3,
    loss: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy,
) -> list[dict[str, Any]]:
    """Coordinate check (Yang et al. 2022, Tensor Programs V, arXiv 2203.03466): train each ``{width: model}``
    for ``steps`` full-batch steps on ``data`` and return rows of the coordinate sizes.

    Each row is ``{"width", "step", "layer", "l1"}``; step 0 is at init, step t after t optimiser steps.
    ``optimizer(model)`` builds each model's optimiser (e.g. ``models.parametrisation.make_optimizer`` with the
    parametrisation's per-layer learning rates). The models are trained in place, each on its own device (``data`` is
    moved there).
    """
    if steps < 0:
        raise PhenomlabError(f"steps must be >= 0, got {steps}")
    if not models:
        raise PhenomlabError("coord_check needs at least one model")
    x0, y0 = data
    rows: list[dict[str, Any]] = []
    for width, model in models.items():
        opt = optimizer(model)
        dev = model_device(model)  # the data goes where each model lives, as in the other probes
        x, y = (x0.to(dev), y0.to(dev)) if dev is not None else (x0, y0)
        for step in range(steps + 1):
            rows += [
                {"width": width, "step": step, "layer": k, "l1": v} for k, v in coord_sizes(model, x, layers).items()
            ]
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            value = loss(model(x), y)
            if not torch.isfinite(value):
                raise PhenomlabError(f"coord_check: the loss of width {width} is {float(value)} at step {step}")
            value.backward()
            opt.step()
    return rows


def coord_slopes(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (layer, step), the least-squares slope of ``log l1`` against ``log width`` over the rows' widths.

    ~0 means the coordinates are width-independent (muP's prediction); ~0.5 or 1 means they grow as sqrt(n) or n.
    """
    groups: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in rows:
        if r["l1"] <= 0:
            raise PhenomlabError(f"coord size must be positive for a log-log slope, got {r['l1']} ({r['layer']})")
        groups.setdefault((r["layer"], r["step"]), []).append((math.log(r["width"]), math.log(r["l1"])))
    out = []
    for (layer, step), pts in groups.items():
        if len({p[0] for p in pts}) < 2:
            raise PhenomlabError(f"a slope needs at least two widths ({layer}, step {step})")
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)
        out.append({"layer": layer, "step": step, "slope": slope})
    return out
