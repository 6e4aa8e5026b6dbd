"""How well learned units recover hidden attributes: the mean best correlation.

Ali, Galanti, Zheltonozhskiy, Baskin, Wolf 2021 (arXiv 2103.11888) score a representation by matching every
ground-truth attribute to the learned feature that correlates with it best:
``MBC = (1/k) sum_i max_j |corr(u_j, a_i)|`` over examples, ``corr`` Pearson's correlation, ``u_j`` unit ``j``
and ``a_i`` attribute ``i``. A constant unit (or attribute) has correlation 0 by convention.
"""

from __future__ import annotations

import torch

from ..errors import PhenomlabError

__all__ = ["best_correlations", "correlation_matrix", "mean_best_correlation"]


def correlation_matrix(units: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """``C[j, i] = corr(units[:, j], attributes[:, i])`` (Pearson, over rows); 0 where either is constant."""
    if units.ndim != 2 or attributes.ndim != 2 or len(units) != len(attributes):
        raise PhenomlabError(
            f"need units (n, m) and attributes (n, k) with the same n; got {tuple(units.shape)}, "
            f"{tuple(attributes.shape)}"
        )
    if len(units) < 2:
        raise PhenomlabError("correlation needs at least 2 examples")
    u = units.double() - units.double().mean(0)
    a = attributes.double() - attributes.double().mean(0)
    nu, na = u.norm(dim=0), a.norm(dim=0)
    cov = u.T @ a
    denom = nu[:, None] * na[None, :]
    # a constant column has norm ~0 (up to rounding): define its correlation as 0
    tiny = 1e-9 * len(units) ** 0.5
    ok = (nu[:, None] > tiny) & (na[None, :] > tiny)
    return torch.where(ok, cov / denom.clamp(min=1e-300), torch.zeros_like(cov))


def best_correlations(units: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """``(k,)``: for each attribute, ``max_j |corr(u_j, a_i)|``."""
    return correlation_matrix(units, attributes).abs().max(dim=0).values


def mean_best_correlation(units: torch.Tensor, attributes: torch.Tensor) -> float:
    """``(1/k) sum_i max_j |corr(u_j, a_i)|``."""
    return float(best_correlations(units, attributes).mean())
