"""Synthetic cause-effect pairs and quantile vectors of univariate samples, generated locally.

Pairs follow the bivariate structural causal models used as benchmarks of causal direction inference
(Hoyer et al. 2009; Zhang & Hyvarinen 2009; Mooij et al. 2016, arXiv 1412.3773):

- ``"an"`` (additive noise): ``Y = f(X) + E``;
- ``"pnl"`` (post-nonlinear): ``Y = g(f(X) + E)`` with ``g`` smooth and strictly increasing;
- ``"balanced"``: the post-nonlinear pair whose ``g`` is the monotone map that sends the marginal of
  ``f(X) + E`` onto a fresh mixture drawn from the same prior as the cause, so that cause and effect
  marginals are exchangeable (equal complexity in distribution) while the pair is still a genuine
  post-nonlinear causal model (Galanti, Nabati & Wolf 2020, arXiv 2002.10007: the univariate method
  rests on the effect being simpler than the cause);
- ``"inverted"``: the same construction with the marginals' roles swapped: the cause has the law of an
  additive-noise pair's *effect* (``f_0(X_0) + E_0``, ``X_0`` a prior mixture) and the effect is mapped onto a
  fresh mixture of the prior, the law of a *cause*. Where the univariate method works because effects are
  simpler than causes, it must call these pairs the wrong way round.

The cause ``X`` is a Gaussian mixture with 1-5 components (as in the ChaLearn pairs, Guyon et al.
2019), ``f`` a random smooth function (a draw of a Gaussian process with an RBF kernel, approximated by
random Fourier features, Rahimi & Recht 2007), ``E`` Gaussian with std ``noise`` times that of
``f(X)``. Both variables are standardised (zero mean, unit variance).

Nothing here is downloaded: no package in this environment ships the Tuebingen cause-effect pairs
inside its wheel (``cdt`` fetches them at run time), so real pairs are not used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError

__all__ = ["PAIR_KINDS", "CausePrior", "cause_effect_pairs", "quantile_vectors", "sample_mixture", "mixture_cdf"]

PAIR_KINDS = ("an", "pnl", "balanced", "inverted")


@dataclass(frozen=True)
class CausePrior:
    """Prior over cause marginals: ``K ~ U{1..max_components}`` components, means ``N(0, mean_std^2)``,
    stds ``U(std_low, std_high)``, weights ``Dirichlet(1)``."""

    max_components: int = 5
    mean_std: float = 2.0
    std_low: float = 0.2
    std_high: float = 1.0

    def draw(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One mixture ``(weights, means, stds)``."""
        k = int(torch.randint(1, self.max_components + 1, (1,), generator=g))
        w = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))  # Dirichlet(1) via normalised Exp(1)
        mu = torch.randn(k, generator=g, dtype=torch.float64) * self.mean_std
        sd = self.std_low + (self.std_high - self.std_low) * torch.rand(k, generator=g, dtype=torch.float64)
        return w / w.sum(), mu, sd


def sample_mixture(mix: tuple[torch.Tensor, torch.Tensor, torch.Tensor], n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` samples of the Gaussian mixture ``(weights, means, stds)``."""
    w, mu, sd = mix
    c = torch.multinomial(w, n, replacement=True, generator=g)
    return mu[c] + sd[c] * torch.randn(n, generator=g, dtype=torch.float64)


def mixture_cdf(mix: tuple[torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """CDF ``sum_k w_k Phi((x - mu_k) / sd_k)`` of a Gaussian mixture at ``x``."""
    w, mu, sd = mix
    z = (x[..., None] - mu) / sd
    return (w * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).sum(-1)


def _mixture_icdf(mix: tuple[torch.Tensor, torch.Tensor, torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    # bisection on the monotone CDF: 60 halvings of a bracket 40 stds wide reach float64 resolution
    w, mu, sd = mix
    lo = torch.full_like(u, float((mu - 20 * sd).min()))
    hi = torch.full_like(u, float((mu + 20 * sd).max()))
    for _ in range(60):
        mid = (lo + hi) / 2
        below = mixture_cdf(mix, mid) < u
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def _standardise(v: torch.Tensor) -> torch.Tensor:
    return (v - v.mean()) / v.std()


def _random_function(g: torch.Generator, n_features: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # f(x) = sum_j a_j cos(w_j x + b_j), w_j ~ N(0, 1/l^2), l ~ U(0.5, 2): an RBF-kernel GP draw (RFF)
    ell = 0.5 + 1.5 * float(torch.rand(1, generator=g))
    om = torch.randn(n_features, generator=g, dtype=torch.float64) / ell
    ph = 2 * math.pi * torch.rand(n_features, generator=g, dtype=torch.float64)
    a = torch.randn(n_features, generator=g, dtype=torch.float64)
    return a, om, ph


def _apply(fn: tuple[torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    a, om, ph = fn
    return (a * torch.cos(x[..., None] * om + ph)).sum(-1)


def _monotone(g: torch.Generator, z: torch.Tensor) -> torch.Tensor:
    # g(z) = a_0 z + sum_j a_j tanh(w_j (z - c_j)), all a, w > 0: smooth and strictly increasing
    a0 = 0.1 + 0.4 * float(torch.rand(1, generator=g))
    a = 0.5 + torch.rand(3, generator=g, dtype=torch.float64)
    w = 0.5 + 2.5 * torch.rand(3, generator=g, dtype=torch.float64)
    c = torch.randn(3, generator=g, dtype=torch.float64)
    return a0 * z + (a * torch.tanh(w * (z[..., None] - c))).sum(-1)


def cause_effect_pairs(
    kind: str,
    n_pairs: int,
    n_samples: int,
    seed: int,
    noise: tuple[float, float] = (0.1, 0.4),
    prior: CausePrior | None = None,
    n_mc: int = 4000,
) -> torch.Tensor:
    """``[n_pairs, 2, n_samples]`` float64: row 0 the standardised cause, row 1 the standardised effect.

    ``noise = (low, high)``: the noise std of each pair is drawn from ``U(low, high)`` times the std of
    ``f(X)``. ``n_mc`` cause samples estimate the effect CDF of a ``"balanced"`` pair,
    ``F(y) = E_X Phi((y - f(X)) / s)``, which the pair's ``g`` maps onto the fresh mixture.
    """
    if kind not in PAIR_KINDS:
        raise ConfigError(f"unknown pair kind {kind!r}; choose from {list(PAIR_KINDS)}")
    if n_pairs < 1 or n_samples < 2:
        raise ConfigError(f"need n_pairs >= 1 and n_samples >= 2, got {n_pairs} and {n_samples}")
    if not 0.0 < noise[0] <= noise[1]:
        raise ConfigError(f"noise range must satisfy 0 < low <= high, got {noise}")
    prior = prior or CausePrior()
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n_pairs, 2, n_samples, dtype=torch.float64)
    for i in range(n_pairs):
        draw = _cause_law(prior, kind == "inverted", noise, n_samples, g)
        x = draw(n_samples)
        fn = _random_function(g)
        fx = _apply(fn, x)
        loc, scale = fx.mean(), fx.std()
        s = noise[0] + (noise[1] - noise[0]) * float(torch.rand(1, generator=g))
        z = (fx - loc) / scale + s * torch.randn(n_samples, generator=g, dtype=torch.float64)
        if kind == "an":
            y = z
        elif kind == "pnl":
            y = _monotone(g, z)
        else:
            # the CDF of z = f(X) + E, averaged over fresh cause samples, then the target mixture's inverse CDF
            xm = draw(n_mc)
            fm = (_apply(fn, xm) - loc) / scale
            u = torch.cat([_normal_cdf((zc[:, None] - fm) / s).mean(1) for zc in z.split(512)])
            y = _mixture_icdf(prior.draw(g), u.clamp(1e-12, 1 - 1e-12))
        out[i, 0], out[i, 1] = _standardise(x), _standardise(y)
    return out


def _cause_law(
    prior: CausePrior, effect_like: bool, noise: tuple[float, float], n_ref: int, g: torch.Generator
) -> Callable[[int], torch.Tensor]:
    """A sampler of one pair's cause: a prior mixture, or (``effect_like``) an additive-noise effect
    ``(f_0(X_0) - m) / d + s_0 N(0, 1)`` of a prior mixture ``X_0``, with ``m``, ``d`` fixed from ``n_ref`` draws
    so that later calls sample the same law."""
    mix = prior.draw(g)
    if not effect_like:
        return lambda n: sample_mixture(mix, n, g)
    fn = _random_function(g)
    f_ref = _apply(fn, sample_mixture(mix, n_ref, g))
    loc, scale = f_ref.mean(), f_ref.std()
    s = noise[0] + (noise[1] - noise[0]) * float(torch.rand(1, generator=g))

    def draw(n: int) -> torch.Tensor:
        fx = (_apply(fn, sample_mixture(mix, n, g)) - loc) / scale
        return fx + s * torch.randn(n, generator=g, dtype=torch.float64)

    return draw


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def quantile_vectors(v: torch.Tensor, n_vectors: int, subsample: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``[..., n_vectors, k]``: quantile vectors of the samples ``v`` (``[..., n]``).

    Each vector draws ``subsample`` of the ``n`` samples without replacement, sorts them and keeps the
    order statistics at ranks ``round((j + 1/2) m / k - 1/2)``, ``j = 0..k-1`` (the empirical
    ``(j + 1/2)/k`` quantiles of the subsample; Galanti, Nabati & Wolf 2020, arXiv 2002.10007, Sec. 3).
    """
    n = v.shape[-1]
    if not 1 <= k <= subsample <= n:
        raise ConfigError(f"need 1 <= k <= subsample <= n, got k={k}, subsample={subsample}, n={n}")
    lead = v.shape[:-1]
    flat = v.reshape(-1, n)
    pos = torch.round((torch.arange(k, dtype=torch.float64) + 0.5) * subsample / k - 0.5).long()
    out = torch.empty(flat.shape[0], n_vectors, k, dtype=v.dtype, device=v.device)
    for i, row in enumerate(flat):  # one variable at a time keeps the [n_vectors, n] permutations small
        idx = torch.rand(n_vectors, n, generator=g).argsort(-1)[:, :subsample]
        out[i] = row[idx].sort(-1).values[:, pos]
    return out.reshape(*lead, n_vectors, k)
