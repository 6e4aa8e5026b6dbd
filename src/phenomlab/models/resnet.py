"""Deep residual networks in the large-depth regime, stacked over several initialisations.

``h_{k+1} = h_k + delta_L * sigma(A_k h_k + b_k)``, ``k = 0..L-1``, with ``delta_L = 1/L`` (neural-ODE scaling) or
``1/sqrt(L)``. Cohen, Cont, Rossier & Xu (2021), "Scaling Properties of Deep Residual Networks", ICML, arXiv
2105.12245; Marion, Fermanian, Biau & Vert, "Scaling ResNets in the Large-depth Regime", arXiv 2206.06929.

Two initialisations of the layer weights ``A_k`` (entries of variance ``1/width`` in both, so each layer alone has the
same distribution and only the correlation ACROSS layers differs):

- i.i.d.: ``A_k ~ N(0, 1/width)`` independently for every ``k``;
- smooth: ``A_k = A(k / L)`` with
  ``A(t) = (G_0 + sum_{j=1..J} (G_j cos(pi j t) + H_j sin(pi j t))) / sqrt((J+1) width)``, a random smooth path
  (``G_j, H_j`` i.i.d. standard Gaussian matrices), so ``A_{k+1} - A_k = A'(k/L)/L + O(1/L^2)``.

Everything is stacked over ``M`` independent models (a leading axis) so a depth's several initialisations train as
one batched computation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

_ACTS = {"tanh": torch.tanh, "relu": torch.relu}


def depth_scale(depth: int, scaling: str) -> float:
    """``delta_L``: ``1/L`` for ``scaling="1/L"``, ``1/sqrt(L)`` for ``"1/sqrt(L)"``."""
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    if scaling == "1/L":
        return 1.0 / depth
    if scaling == "1/sqrt(L)":
        return 1.0 / math.sqrt(depth)
    raise ConfigError(f"unknown depth scaling {scaling!r} (expected '1/L' or '1/sqrt(L)')")


def smooth_path(t: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``A(t) = (C_0 + sum_j (C_{2j-1} cos(pi j t) + C_{2j} sin(pi j t))) / sqrt(J+1)`` at times ``t`` ``[L]``.

    ``coeffs`` ``[M, 2J+1, d, d]`` (already scaled by ``1/sqrt(d)``); returns ``[M, L, d, d]``. With i.i.d. Gaussian
    coefficients every ``A(t)`` has the same entry variance as one coefficient (``cos^2 + sin^2 = 1``).
    """
    n_modes = (coeffs.shape[1] - 1) // 2
    basis = [torch.ones_like(t)]
    for j in range(1, n_modes + 1):
        basis += [torch.cos(math.pi * j * t), torch.sin(math.pi * j * t)]
    B = torch.stack(basis, 1) / math.sqrt(n_modes + 1)  # [L, 2J+1]
    return torch.einsum("lj,mjab->mlab", B.to(coeffs.dtype), coeffs)


def init_weights(
    n_models: int, depth: int, width: int, init: str, generator: torch.Generator, n_modes: int = 3
) -> torch.Tensor:
    """Layer weights ``[M, L, d, d]``: ``init="iid"`` or ``"smooth"`` (see the module docstring)."""
    if init == "iid":
        return torch.randn(n_models, depth, width, width, generator=generator) / math.sqrt(width)
    if init == "smooth":
        if n_modes < 1:
            raise ConfigError(f"n_modes must be >= 1, got {n_modes}")
        c = torch.randn(n_models, 2 * n_modes + 1, width, width, generator=generator) / math.sqrt(width)
        return smooth_path(torch.arange(depth, dtype=torch.float32) / depth, c)
    raise ConfigError(f"unknown init {init!r} (expected 'iid' or 'smooth')")


def resnet_forward(h: torch.Tensor, A: torch.Tensor, b: torch.Tensor, delta: float, act: str = "tanh") -> torch.Tensor:
    """``h_L`` of ``h_{k+1} = h_k + delta * sigma(A_k h_k + b_k)``: ``h`` ``[M, n, d]``, ``A`` ``[M, L, d, d]``,
    ``b`` ``[M, L, d]``; returns ``[M, n, d]``."""
    if act not in _ACTS:
        raise ConfigError(f"unknown activation {act!r} (expected one of {sorted(_ACTS)})")
    sigma = _ACTS[act]
    for k in range(A.shape[1]):
        h = h + delta * sigma(torch.baddbmm(b[:, k, None, :], h, A[:, k].transpose(1, 2)))
    return h


def roughness(A: torch.Tensor) -> torch.Tensor:
    """``max_k ||A_{k+1} - A_k||_F`` per model: ``A`` ``[M, L, ...]`` -> ``[M]`` (needs ``L >= 2``)."""
    return (A[:, 1:] - A[:, :-1]).flatten(2).norm(dim=2).amax(1)


def rms_roughness(A: torch.Tensor) -> torch.Tensor:
    """``sqrt(mean_k ||A_{k+1} - A_k||_F^2)`` per model (``k = 0..L-2``): ``[M, L, ...]`` -> ``[M]``.

    The root-mean-square step between consecutive layers: ``sqrt(QV / (L - 1))`` with ``QV`` the quadratic variation
    of the weights over the layer index, and ``sqrt(L * QV)`` is the ``H^1`` statistic Cohen et al. (2021, arXiv
    2105.12245) regress on depth. For samples ``A_k = A(k/L)`` of a smooth path it falls as ``1/L``; for i.i.d. layers
    it stays constant. Unlike :func:`roughness` (the max) it is not dominated by a few layers.
    """
    return (A[:, 1:] - A[:, :-1]).flatten(2).pow(2).sum(2).mean(1).sqrt()


def max_layer_norm(A: torch.Tensor) -> torch.Tensor:
    """``max_k ||A_k||_F`` per model, ``[M, L, ...]`` -> ``[M]`` (of ``A(T) - A(0)``: the largest increment)."""
    return A.flatten(2).norm(dim=2).amax(1)


class StackedResNet(nn.Module):
    """``M`` residual nets ``x -> w . h_L``, ``h_0 = C x``, trained parameters ``A``, ``b`` (``C``, ``w`` Gaussian).

    The embedding ``C`` ``[M, d, d_in]`` (entries ``N(0, 1/d_in)``) and read-out ``w`` ``[M, d]`` (``N(0, 1/d)``) are
    fixed random buffers, so the trained weights are exactly the residual blocks' (the objects the depth-scaling papers
    study). Forward: ``[n, d_in]`` (shared) or ``[M, n, d_in]`` -> ``[M, n]``.
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        depth: int,
        n_models: int = 1,
        init: str = "iid",
        scaling: str = "1/L",
        act: str = "tanh",
        generator: torch.Generator | None = None,
        n_modes: int = 3,
    ) -> None:
        super().__init__()
        if min(in_dim, width, n_models) < 1:
            raise ConfigError(f"in_dim, width and n_models must be >= 1, got {in_dim}, {width}, {n_models}")
        if act not in _ACTS:
            raise ConfigError(f"unknown activation {act!r} (expected one of {sorted(_ACTS)})")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.delta = depth_scale(depth, scaling)
        self.act = act
        self.A = nn.Parameter(init_weights(n_models, depth, width, init, g, n_modes))
        self.b = nn.Parameter(torch.zeros(n_models, depth, width))
        self.register_buffer("C", torch.randn(n_models, width, in_dim, generator=g) / math.sqrt(in_dim))
        self.register_buffer("w", torch.randn(n_models, width, generator=g) / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.matmul(x, self.C.transpose(1, 2))  # [M, n, d]
        hL = resnet_forward(h0, self.A, self.b, self.delta, self.act)
        return torch.einsum("mnd,md->mn", hL, self.w)
