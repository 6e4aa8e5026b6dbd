"""Lyapunov exponents and moment growth rates of random linear maps, and of SGD linearised at a point.

References
----------
- V. Oseledets (1968), "A multiplicative ergodic theorem" (existence of the exponents).
- G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn (1980), "Lyapunov characteristic exponents for
  smooth dynamical systems...", Meccanica 15 (renormalisation and the QR / Gram-Schmidt method).
- L. Ziyin, B. Li, T. Galanti, M. Ueda (2023), "The probabilistic stability of stochastic gradient
  descent", arXiv 2303.13093: near a fixed point SGD is ``theta_{t+1} - theta* = (I - lr H_t)(theta_t -
  theta*)`` with a random minibatch Hessian ``H_t``; it converges *in probability* iff the largest
  Lyapunov exponent ``lim 1/T log ||prod_t (I - lr H_t) v||`` is negative, while the p-th moment
  ``E ||theta_T - theta*||^p`` diverges iff its growth rate is positive. For the 1-D map the exponent is
  ``E log|1 - lr h|`` and the p-th moment rate ``log E|1 - lr h|^p``; by Jensen the first is below the
  second, so a band of learning rates converges in probability while its second moment diverges.

Inputs: a sequence of Jacobians is a tensor ``[T, d, d]``, an iterable of ``[d, d]`` tensors, or
scalar factors ``[T]`` (the 1-D case, ``d = 1``). All arithmetic is float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor
from phenomlab.probes._params import ParamSpace, as_batches, rng_vector, select_rows
from phenomlab.probes.curvature import model_hvp

__all__ = [
    "lyapunov_exponent",
    "lyapunov_spectrum",
    "scalar_lyapunov",
    "moment_growth_rate",
    "scalar_moment_rate",
    "sgd_linear_jacobians",
    "sgd_lyapunov",
]


def _matrices(jacobians: Any) -> Iterator[Tensor]:
    """Yield float64 ``[d, d]`` matrices, checking that ``d`` is constant and entries are finite."""
    if isinstance(jacobians, (Tensor, np.ndarray)):
        J = as_float_tensor(jacobians, "jacobians").to(torch.float64)
        if J.ndim == 1:
            J = J[:, None, None]
        if J.ndim != 3 or J.shape[1] != J.shape[2]:
            raise PhenomlabError(f"jacobians must be [T, d, d] or scalar factors [T], got shape {tuple(J.shape)}")
        if J.shape[0] == 0:
            raise PhenomlabError("jacobians is empty (T = 0)")
        yield from J
        return
    d = None
    count = 0
    for i, m in enumerate(jacobians):
        t = as_float_tensor(m, f"jacobians[{i}]").to(torch.float64)
        if t.ndim == 0:
            t = t.reshape(1, 1)
        if t.ndim != 2 or t.shape[0] != t.shape[1]:
            raise PhenomlabError(f"jacobians[{i}] must be a square [d, d] matrix, got shape {tuple(t.shape)}")
        if d is None:
            d = t.shape[0]
        elif t.shape[0] != d:
            raise PhenomlabError(f"jacobians[{i}] is {t.shape[0]}x{t.shape[0]}, earlier ones are {d}x{d}")
        count += 1
        yield t
    if count == 0:
        raise PhenomlabError("jacobians is empty (T = 0)")


def _unit(v: Tensor) -> Tensor:
    r = torch.linalg.vector_norm(v)
    if not bool(torch.isfinite(r)) or float(r) == 0.0:
        raise PhenomlabError("v0 must be finite and non-zero")
    return v / r


def lyapunov_exponent(jacobians: Iterable[Tensor] | Tensor, v0: Tensor | None = None, seed: int = 0) -> float:
    """Largest Lyapunov exponent ``lambda_1 = 1/T sum_t log ||J_t u_{t-1}||``, ``u_t = J_t u_{t-1} / ||.||``.

    The renormalised product (Benettin et al. 1980) equals ``1/T log ||J_T ... J_1 u_0||`` without
    overflow; by Oseledets' theorem it converges to the top exponent for almost every ``u_0``
    (default: a seeded Gaussian unit vector). Scalar factors give ``mean_t log|a_t|`` exactly.
    Returns ``-inf`` if the product maps ``u_0`` to zero.
    """
    it = _matrices(jacobians)
    first = next(it)
    d = first.shape[0]
    if v0 is None:  # rng_vector draws on the CPU, so a seed gives one start vector on every device
        u = _unit(rng_vector(d, seed, torch.float64, first.device))
    else:
        v0 = as_float_tensor(v0, "v0").to(torch.float64).reshape(-1)
        if v0.numel() != d:
            raise PhenomlabError(f"v0 must have {d} entries, got {v0.numel()}")
        u = _unit(v0).to(first.device)
    total, T = 0.0, 0
    for J in _chain(first, it):
        w = J @ u
        r = float(torch.linalg.vector_norm(w))
        T += 1
        if r == 0.0:
            return float("-inf")
        total += math.log(r)
        u = w / r
    return total / T


def _chain(first: Tensor, rest: Iterator[Tensor]) -> Iterator[Tensor]:
    yield first
    yield from rest


def lyapunov_spectrum(
    jacobians: Iterable[Tensor] | Tensor, k: int | None = None, q0: Tensor | None = None, seed: int = 0
) -> Tensor:
    """The ``k`` largest Lyapunov exponents by the QR method (Benettin et al. 1980).

    ``Q_t R_t = J_t Q_{t-1}`` (thin QR, ``Q_0`` a ``d x k`` orthonormal frame) and
    ``lambda_i = 1/T sum_t log |(R_t)_{ii}|``: the volume growth of the leading ``i``-dimensional
    subspaces. ``q0`` defaults to a seeded random orthonormal frame (generic, so the estimates converge
    to the top-``k`` exponents); pass the identity for exact results on diagonal products. Returns a
    float64 tensor ``[k]`` sorted in decreasing order (``k`` defaults to ``d``).
    """
    it = _matrices(jacobians)
    first = next(it)
    d = first.shape[0]
    k = d if k is None else int(k)
    if not 1 <= k <= d:
        raise PhenomlabError(f"k must be in [1, d={d}], got {k}")
    if q0 is None:
        g = torch.Generator().manual_seed(int(seed))
        Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64).to(first.device))
    else:
        q = as_float_tensor(q0, "q0").to(first.device, torch.float64)
        if q.shape != (d, k):
            raise PhenomlabError(f"q0 must be [{d}, {k}], got {tuple(q.shape)}")
        Q, _ = torch.linalg.qr(q)
    sums = torch.zeros(k, dtype=torch.float64, device=first.device)
    T = 0
    for J in _chain(first, it):
        Q, R = torch.linalg.qr(J @ Q)
        sums += torch.log(torch.abs(torch.diagonal(R)))
        T += 1
    return torch.sort(sums / T, descending=True).values


def _lr_h(lr: Any, h_samples: Any) -> tuple[Tensor, Tensor, bool]:
    h = as_float_tensor(h_samples, "h_samples").to(torch.float64).reshape(-1)
    if h.numel() == 0:
        raise PhenomlabError("h_samples is empty")
    scalar = isinstance(lr, (int, float))
    lr_t = as_float_tensor(lr, "lr").to(h.device, torch.float64)
    return lr_t, h, scalar


def scalar_lyapunov(lr: float | Tensor, h_samples: Tensor) -> float | Tensor:
    """Lyapunov exponent ``E_h log|1 - lr h|`` of the 1-D linear SGD map ``x <- (1 - lr h_t) x``.

    Exact for i.i.d. curvatures ``h_t`` (the sample mean over ``h_samples`` estimates the expectation);
    SGD converges in probability iff it is negative (Ziyin et al. 2023, arXiv 2303.13093). ``lr`` may be
    a tensor of learning rates (result has its shape: one value per rate).
    """
    lr_t, h, scalar = _lr_h(lr, h_samples)
    val = torch.log(torch.abs(1.0 - lr_t[..., None] * h)).mean(-1)
    return float(val) if scalar else val


def scalar_moment_rate(lr: float | Tensor, h_samples: Tensor, p: float = 2.0) -> float | Tensor:
    """Growth rate ``log E_h |1 - lr h|^p`` of the p-th moment of the 1-D linear SGD map.

    ``E|x_T|^p = (E|1 - lr h|^p)^T |x_0|^p`` for i.i.d. ``h_t``, so the p-th moment diverges iff this is
    positive (for ``p = 2``: ``E (1 - lr h)^2 > 1``). Computed as a log-mean-exp of ``p log|1 - lr h|``.
    """
    if not p > 0:
        raise PhenomlabError(f"p must be > 0, got {p}")
    lr_t, h, scalar = _lr_h(lr, h_samples)
    logs = p * torch.log(torch.abs(1.0 - lr_t[..., None] * h))
    val = torch.logsumexp(logs, dim=-1) - math.log(h.numel())
    return float(val) if scalar else val


def moment_growth_rate(factors: Tensor, p: float = 2.0, v0: Tensor | None = None, seed: int = 0) -> float:
    """Per-step growth rate ``1/T log E ||prod_t J_t v0||^p`` of the p-th moment (Ziyin et al. 2023, arXiv 2303.13093).

    ``factors``:
      - ``[S, T]``: ``S`` independent trajectories of scalar factors: ``1/T log mean_s prod_t |a_st|^p``;
      - ``[S, T, d, d]``: ``S`` trajectories of matrices, applied to the unit vector ``v0`` (default a
        seeded Gaussian): ``1/T log mean_s ||J_{s,T} ... J_{s,1} v0||^p``;
      - ``[T]``: i.i.d. draws of one scalar factor, for which ``E|prod|^p = (E|a|^p)^T`` and the rate
        is ``log mean_t |a_t|^p`` (as :func:`scalar_moment_rate`).
    Positive means the p-th moment diverges. The mean over trajectories is a log-sum-exp of log-norms,
    so long products neither overflow nor underflow. Note that with few trajectories the estimate is
    dominated by the typical ones and is biased low (the moment is carried by rare large products).
    """
    if not p > 0:
        raise PhenomlabError(f"p must be > 0, got {p}")
    F = as_float_tensor(factors, "factors").to(torch.float64)
    if F.numel() == 0:
        raise PhenomlabError("factors is empty")
    if F.ndim == 1:
        logs = p * torch.log(torch.abs(F))
        return float(torch.logsumexp(logs, 0) - math.log(F.numel()))
    if F.ndim == 2:
        S, T = F.shape
        logs = p * torch.log(torch.abs(F)).sum(1)
    elif F.ndim == 4 and F.shape[2] == F.shape[3]:
        S, T, d = F.shape[0], F.shape[1], F.shape[2]
        if v0 is None:
            u0 = _unit(rng_vector(d, seed, torch.float64, F.device))
        else:
            u0 = _unit(as_float_tensor(v0, "v0").to(torch.float64).reshape(-1)).to(F.device)
            if u0.numel() != d:
                raise PhenomlabError(f"v0 must have {d} entries, got {u0.numel()}")
        U = u0.expand(S, d).clone()
        lognorm = torch.zeros(S, dtype=torch.float64, device=F.device)
        for t in range(T):
            U = torch.einsum("sij,sj->si", F[:, t], U)
            r = torch.linalg.vector_norm(U, dim=1)
            lognorm += torch.log(r)
            U = U / torch.where(r > 0, r, torch.ones_like(r))[:, None]
        logs = p * lognorm
    else:
        raise PhenomlabError(
            f"factors must be [T] i.i.d. scalars, [S, T] scalar trajectories or [S, T, d, d] matrices, "
            f"got shape {tuple(F.shape)}"
        )
    if T == 0:
        raise PhenomlabError("factors has T = 0 steps")
    return float((torch.logsumexp(logs, 0) - math.log(S)) / T)


def sgd_linear_jacobians(H_batches: Tensor | Iterable[Tensor], lr: float) -> Tensor:
    """Jacobians ``I - lr H_t`` of the SGD map linearised at a fixed point, one per minibatch Hessian.

    ``H_batches``: ``[T, d, d]`` (or an iterable of ``[d, d]``) returns ``[T, d, d]``; scalar curvatures
    ``[T]`` return the factors ``1 - lr h_t`` as ``[T]``.
    """
    if isinstance(H_batches, (Tensor, np.ndarray)):
        H = as_float_tensor(H_batches, "H_batches")
        if H.ndim == 1:
            return 1.0 - lr * H
        if H.ndim != 3 or H.shape[1] != H.shape[2]:
            raise PhenomlabError(f"H_batches must be [T, d, d] or [T], got shape {tuple(H.shape)}")
    else:
        mats = list(_matrices(H_batches))
        H = torch.stack(mats)
    eye = torch.eye(H.shape[1], dtype=H.dtype, device=H.device)
    return eye - lr * H


def sgd_lyapunov(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Any], Tensor],
    dataset: Any,
    lr: float,
    batch_size: int,
    steps: int,
    seed: int = 0,
    v0: Tensor | None = None,
    burn_in: int = 0,
) -> float:
    """Largest Lyapunov exponent of SGD linearised around the model's current parameters ``theta*``.

    The deviation ``u = theta - theta*`` evolves as ``u_{t+1} = (I - lr H_{B_t}) u_t`` (Ziyin et al. 2023,
    arXiv 2303.13093), ``H_B`` the Hessian of the mean loss on minibatch ``B_t`` (drawn uniformly without
    replacement within a step, seeded). Each step is one Hessian-vector product (Pearlmutter 1994) and a
    renormalisation (Benettin et al. 1980); the estimate is ``1/(T - burn_in) sum log ||(I - lr H_B) u||``
    over the steps after ``burn_in`` (the first steps align ``u`` with the top Oseledets direction).
    ``dataset`` is one ``(inputs, targets)`` pair (``inputs`` a tensor or a mapping of keyword tensors).
    Negative: SGD started near ``theta*`` is attracted to it in probability. The model's parameters are
    not changed.
    """
    if not (isinstance(dataset, (tuple, list)) and len(dataset) >= 2 and isinstance(dataset[0], (Tensor, Mapping))):
        raise PhenomlabError("dataset must be an (inputs, targets) pair (inputs a tensor or a mapping of tensors)")
    if not lr > 0:
        raise PhenomlabError(f"lr must be > 0, got {lr}")
    if steps < 1 or not 0 <= burn_in < steps:
        raise PhenomlabError(f"need steps >= 1 and 0 <= burn_in < steps, got steps={steps}, burn_in={burn_in}")
    space = ParamSpace(model)
    batches = as_batches((dataset[0], dataset[1]), space.device)
    ((X, Y, _),) = batches
    N = batches.total
    if not 1 <= batch_size <= N:
        raise PhenomlabError(f"batch_size must be in [1, {N}], got {batch_size}")
    g = torch.Generator().manual_seed(int(seed))
    if v0 is None:
        u = _unit(rng_vector(space.n, seed, space.dtype, space.device))
    else:
        u = _unit(space.check_vector(v0, "v0"))
    total, count = 0.0, 0
    for t in range(steps):
        idx = torch.randperm(N, generator=g)[:batch_size].to(space.device)
        hv = model_hvp(model, loss_fn, (select_rows(X, idx), Y[idx]), cache=True)(u)
        w = u - lr * hv
        r = float(torch.linalg.vector_norm(w))
        if r == 0.0:
            return float("-inf")
        if t >= burn_in:
            total += math.log(r)
            count += 1
        u = w / r
    return total / count
