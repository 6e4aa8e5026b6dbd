"""Contrastive-learning pieces as pure functions on tensors: the InfoNCE loss and von Mises-Fisher sampling.

InfoNCE: van den Oord, Li, Vinyals 2018 (arXiv 1807.03748); in the normalised-feature form analysed by
Zimmermann, Sharma, Schneider, Bethge, Brendel 2021, "Contrastive Learning Inverts the Data Generating Process"
(ICML 2021, arXiv 2102.08850). vMF sampling: Wood 1994, "Simulation of the von Mises Fisher distribution"
(Communications in Statistics - Simulation and Computation 23(1)).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

__all__ = ["info_nce", "sample_vmf", "vmf_mean_cosine"]


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives: ``L = 1/M sum_i [-a_i.p_i / tau + log sum_j exp(a_i.p_j / tau)]``.

    ``anchors`` and ``positives`` are ``[M, n]`` feature rows (normalise them first for the hypersphere form of
    Zimmermann et al. 2021, arXiv 2102.08850, eq. 1); row ``i`` of ``positives`` is the positive of anchor ``i``
    and the other ``M - 1`` rows are its negatives (they are drawn from the marginal, independently of anchor
    ``i``). This is the cross-entropy of the ``M``-way classification of the positive among the batch.
    """
    if anchors.ndim != 2 or anchors.shape != positives.shape:
        raise ConfigError(
            f"info_nce needs two [M, n] feature batches of one shape, got {tuple(anchors.shape)} and "
            f"{tuple(positives.shape)}"
        )
    if len(anchors) < 2:
        raise ConfigError(f"info_nce needs at least 2 pairs (one positive, >= 1 negative), got {len(anchors)}")
    if not tau > 0:
        raise ConfigError(f"info_nce temperature must be > 0, got {tau}")
    logits = anchors @ positives.T / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def _wood_cosines(n: int, kappa: float, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """``size`` draws of ``t = mu.z`` for ``z ~ vMF(mu, kappa)`` on ``S^(n-1)`` by Wood's rejection sampler."""
    m = n - 1
    b = m / (math.sqrt(4 * kappa**2 + m**2) + 2 * kappa)  # = (-2k + sqrt(4k^2 + m^2)) / m, stable for large k
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + m * math.log(1 - x0**2)
    out = torch.empty(size, dtype=torch.float64)
    todo = torch.arange(size)
    while len(todo):
        k = len(todo)
        # Beta(m/2, m/2) as (1 + first coordinate of a uniform point on S^(n-1)) / 2: generator-driven, unlike
        # torch's Beta sampler
        xi = torch.randn(k, n, generator=generator, dtype=torch.float64)
        zb = (1 + xi[:, 0] / xi.norm(dim=1)) / 2
        w = (1 - (1 + b) * zb) / (1 - (1 - b) * zb)
        u = torch.rand(k, generator=generator, dtype=torch.float64)
        ok = kappa * w + m * torch.log1p(-x0 * w) - c >= torch.log(u)
        out[todo[ok]] = w[ok]
        todo = todo[~ok]
    return out


def sample_vmf(mu: torch.Tensor, kappa: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw ``z_i ~ vMF(mu_i, kappa)`` per row of ``mu`` (``[M, n]``, unit rows), density ``~ exp(kappa mu.z)``
    on the sphere ``S^(n-1)``.

    Wood 1994: the cosine ``t = mu.z`` by rejection (density ``~ exp(kappa t) (1 - t^2)^((n-3)/2)``), then
    ``z = t mu + sqrt(1 - t^2) v`` with ``v`` uniform on the unit sphere orthogonal to ``mu``. Randomness comes
    only from ``generator``. Returns ``[M, n]`` in ``mu``'s dtype and device. ``kappa = 0`` is the uniform law.
    """
    if mu.ndim != 2 or mu.shape[1] < 2:
        raise ConfigError(f"sample_vmf needs mean directions as [M, n] rows with n >= 2, got {tuple(mu.shape)}")
    if not kappa >= 0 or math.isinf(kappa):
        raise ConfigError(f"vMF concentration kappa must be finite and >= 0, got {kappa}")
    size, n = mu.shape
    mu64 = mu.detach().to("cpu", torch.float64)
    if not torch.allclose(mu64.norm(dim=1), torch.ones(size, dtype=torch.float64), atol=1e-4):
        raise ConfigError("sample_vmf mean directions must be unit vectors")
    if kappa == 0:
        v = torch.randn(size, n, generator=generator, dtype=torch.float64)
        return (v / v.norm(dim=1, keepdim=True)).to(mu.device, mu.dtype)
    t = _wood_cosines(n, kappa, size, generator)
    v = torch.randn(size, n, generator=generator, dtype=torch.float64)
    v = v - (v * mu64).sum(1, keepdim=True) * mu64
    v = v / v.norm(dim=1, keepdim=True)
    z = t[:, None] * mu64 + (1 - t**2).clamp_min(0).sqrt()[:, None] * v
    return z.to(mu.device, mu.dtype)


def vmf_mean_cosine(n: int, kappa: float, points: int = 20001) -> float:
    """``E[mu.z]`` for ``z ~ vMF(mu, kappa)`` on ``S^(n-1)``, the expected positive-pair cosine, by quadrature.

    With ``t = cos(theta)`` the density of the angle is ``~ exp(kappa cos theta) sin(theta)^(n-2)`` on ``[0, pi]``, a
    smooth function whose even periodic extension makes the trapezoid rule converge geometrically (closed form:
    ``I_{n/2}(kappa) / I_{n/2-1}(kappa)``, Bessel functions of the first kind).
    """
    if n < 2:
        raise ConfigError(f"vmf_mean_cosine needs n >= 2, got {n}")
    theta = torch.linspace(0, math.pi, points, dtype=torch.float64)
    logw = kappa * (torch.cos(theta) - 1) + (n - 2) * torch.log(torch.sin(theta).clamp_min(1e-300))
    w = torch.exp(logw - logw.max())
    w[0] /= 2
    w[-1] /= 2
    return float((torch.cos(theta) * w).sum() / w.sum())
