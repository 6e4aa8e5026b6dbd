"""Seeded, vectorised augmentations for 1-D signals (mnist1d), for self-supervised learning.

Every function takes a batch ``x`` of shape ``[N, ..., L]`` (time on the last axis), draws one set of
parameters per sample (the first axis) from ``generator`` (a CPU ``torch.Generator``; ``None`` uses
torch's global generator) and returns a new tensor on ``x``'s device; ``x`` is never modified.
The same generator state gives the same views.

The transformations mirror the nuisances that generate MNIST-1D (Greydanus 2020, arXiv 2011.14439:
circular translation, amplitude scaling, noise, shear/dilation), so two views of one signal share
its class (the "template") and differ in what the class does not depend on:

* :func:`circular_shift`  ``x'[t] = x[(t - k) mod L]``, ``k ~ U{-s, ..., s}``
* :func:`translate`       ``x'[t] = x[t - k]`` with zero fill, ``k ~ U{-s, ..., s}``
* :func:`scale`           ``x' = a x``, ``a ~ U[low, high]``
* :func:`gaussian_noise`  ``x' = x + sigma * eps``, ``eps ~ N(0, I)``
* :func:`time_warp`       ``x'[t] = x(c + (t - c) / r)`` (linear interpolation, edge values outside),
  stretch ``r = exp(u)``, ``u ~ U[-log(1 + a), log(1 + a)]``, centre ``c ~ U[0, L - 1]``
* :func:`random_mask`     a contiguous segment of length ``~ U{0, ..., floor(f L)}`` set to 0
  (the mean of standardised inputs)

:class:`Augment1D` composes them in the order warp, shift, scale, mask, noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import PhenomlabError

__all__ = ["Augment1D", "circular_shift", "gaussian_noise", "random_mask", "scale", "time_warp", "translate"]


def _check(x: torch.Tensor) -> None:
    if x.ndim < 2:
        raise PhenomlabError(f"augmentations expect a batch [N, ..., L], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise PhenomlabError(f"augmentations expect float signals, got {x.dtype}")


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shape a length-N parameter vector to broadcast against ``x`` ([N, 1, ..., 1])."""
    return v.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _shift_index(
    x: torch.Tensor, max_shift: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if max_shift < 0:
        raise PhenomlabError(f"max_shift must be >= 0, got {max_shift}")
    n, length = x.shape[0], x.shape[-1]
    k = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    src = torch.arange(length).view(1, -1) - k.view(-1, 1)  # [N, L] source position of each output sample
    return src, k


def _gather_time(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[n, ..., t] = x[n, ..., idx[n, t]]`` for an index ``[N, L]`` (valid positions only)."""
    idx = idx.to(x.device).view(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1]).expand_as(x)
    return torch.gather(x, -1, idx)


def circular_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll each signal by ``k ~ U{-max_shift, ..., max_shift}`` steps (MNIST-1D translates circularly)."""
    _check(x)
    src, _ = _shift_index(x, max_shift, generator)
    return _gather_time(x, src % x.shape[-1])


def translate(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each signal by ``k ~ U{-max_shift, ..., max_shift}`` steps, filling vacated steps with 0."""
    _check(x)
    src, _ = _shift_index(x, max_shift, generator)
    valid = (src >= 0) & (src < x.shape[-1])
    out = _gather_time(x, src.clamp(0, x.shape[-1] - 1))
    return out * _gather_mask(valid, x)


def _gather_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.to(device=x.device, dtype=x.dtype).view(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])


def scale(x: torch.Tensor, low: float, high: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply each signal by an amplitude ``a ~ U[low, high]``."""
    _check(x)
    if not low <= high:
        raise PhenomlabError(f"scale needs low <= high, got [{low}, {high}]")
    return x * _per_sample(_uniform(x.shape[0], low, high, generator), x)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add i.i.d. ``N(0, std^2)`` noise to every entry."""
    _check(x)
    if std < 0:
        raise PhenomlabError(f"noise std must be >= 0, got {std}")
    return x + std * torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)


def time_warp(x: torch.Tensor, max_stretch: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stretch (r > 1) or compress (r < 1) each signal about a random centre, by linear interpolation.

    ``x'[t] = x(c + (t - c) / r)`` with ``log r ~ U[-log(1 + max_stretch), log(1 + max_stretch)]`` and
    ``c ~ U[0, L - 1]``; positions outside the signal take the edge value.
    """
    _check(x)
    if max_stretch < 0:
        raise PhenomlabError(f"max_stretch must be >= 0, got {max_stretch}")
    n, length = x.shape[0], x.shape[-1]
    m = math.log1p(max_stretch)
    r = torch.exp(_uniform(n, -m, m, generator))
    c = _uniform(n, 0.0, length - 1.0, generator)
    t = torch.arange(length, dtype=torch.float32).view(1, -1)
    pos = (c.view(-1, 1) + (t - c.view(-1, 1)) / r.view(-1, 1)).clamp(0, length - 1)
    lo = pos.floor().long().clamp(max=length - 1)
    hi = (lo + 1).clamp(max=length - 1)
    w = _gather_mask(pos - lo, x)  # interpolation weight, same shaping as a mask
    return (1 - w) * _gather_time(x, lo) + w * _gather_time(x, hi)


def random_mask(x: torch.Tensor, max_fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a contiguous segment of length ``~ U{0, ..., floor(max_fraction L)}`` at a random start."""
    _check(x)
    if not 0.0 <= max_fraction <= 1.0:
        raise PhenomlabError(f"max_fraction must be in [0, 1], got {max_fraction}")
    n, length = x.shape[0], x.shape[-1]
    seg = torch.floor(torch.rand(n, generator=generator) * (math.floor(max_fraction * length) + 1)).long()
    start = torch.floor(torch.rand(n, generator=generator) * (length - seg + 1)).long()
    t = torch.arange(length).view(1, -1)
    keep = (t < start.view(-1, 1)) | (t >= (start + seg).view(-1, 1))
    return x * _gather_mask(keep, x)


@dataclass(frozen=True)
class Augment1D:
    """A random view of 1-D signals: time warp, circular shift, scaling, masking, then noise.

    A magnitude of 0 (or ``scale_range=(1, 1)``) switches that transformation off. Defaults suit
    standardised MNIST-1D (length 40).
    """

    max_shift: int = 6
    scale_range: tuple[float, float] = (0.8, 1.2)
    noise_std: float = 0.1
    max_stretch: float = 0.15
    mask_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.max_shift < 0 or self.noise_std < 0 or self.max_stretch < 0:
            raise PhenomlabError(f"augmentation magnitudes must be >= 0: {self}")
        if not 0.0 <= self.mask_fraction <= 1.0:
            raise PhenomlabError(f"mask_fraction must be in [0, 1], got {self.mask_fraction}")
        lo, hi = self.scale_range
        if not 0.0 <= lo <= hi:
            raise PhenomlabError(f"scale_range must satisfy 0 <= low <= high, got {self.scale_range}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(x)
        if self.max_stretch > 0:
            x = time_warp(x, self.max_stretch, generator)
        if self.max_shift > 0:
            x = circular_shift(x, self.max_shift, generator)
        if self.scale_range != (1.0, 1.0):
            x = scale(x, *self.scale_range, generator=generator)
        if self.mask_fraction > 0:
            x = random_mask(x, self.mask_fraction, generator)
        if self.noise_std > 0:
            x = gaussian_noise(x, self.noise_std, generator)
        return x

    def views(self, x: torch.Tensor, n_views: int = 2, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """``n_views`` independent random views of the same batch."""
        return [self(x, generator) for _ in range(n_views)]
