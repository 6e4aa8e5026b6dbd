"""Training in a random d-dimensional subspace of parameter space: ``theta = theta0 + P z``, only ``z`` trained.

Li, Farkhoor, Liu & Yosinski, "Measuring the Intrinsic Dimension of Objective Landscapes", ICLR 2018
(arXiv 1804.08838). ``theta0`` (the D parameters of a freshly initialised net) and the D x d projection ``P`` are
frozen; ``z`` in R^d starts at 0, so training starts at the ordinary initialisation. Two projections, both with
columns of unit L2 norm (the paper's normalisation):

- dense: ``P_ij ~ N(0, 1)``, then each column divided by its norm (exactly unit norm; memory D*d floats);
- Fastfood (Le, Sarlos & Smola 2013, the paper's choice for large D and d): with ``L = 2^ceil(log2 D)``,
  ``P z = (H G Pi H B [z; 0])[:D] / (||G|| sqrt(D))``, where ``H`` is the unnormalised L x L Walsh-Hadamard matrix
  (entries +-1), ``B`` a random +-1 diagonal, ``Pi`` a random permutation and ``G`` a Gaussian diagonal. Before the
  truncation to D rows each column has norm exactly ``sqrt(L)``, hence exactly 1 when ``D = L`` and 1 in
  expectation over the truncation otherwise. Memory O(L), time O(L log L) per product.

:class:`SubspaceModel` wraps any buffer-free module with :func:`torch.func.functional_call`: its only parameter is
``z``, so the ordinary training loop (``ctx.train``) trains it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import PhenomlabError
from ..probes._params import stateless_call

PROJECTIONS = ("auto", "dense", "fastfood")
#: ``projection="auto"`` picks the dense matrix while D*d is at most this many entries (32 MB in float32)
DENSE_MAX_ENTRIES = 2**23


def dense_projection(D: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A D x d matrix of N(0, 1) entries with each column scaled to unit L2 norm (Li et al. 2018, Sec. 2)."""
    _check_dims(D, d)
    p = torch.randn(D, d, generator=generator)
    return p / p.norm(dim=0, keepdim=True)


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """``x @ H`` over the last axis, H the unnormalised Sylvester Walsh-Hadamard matrix (H_1 = [1], H_2n =
    [[H_n, H_n], [H_n, -H_n]]; symmetric), by log2(n) butterflies; n must be a power of two."""
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise PhenomlabError(f"the Hadamard transform needs a power-of-two length, got {n}")
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


def _check_dims(D: int, d: int) -> None:
    if D <= 0 or d <= 0:
        raise PhenomlabError(f"subspace dimensions must be positive, got D={D}, d={d}")
    if d > D:
        raise PhenomlabError(f"subspace dimension d={d} exceeds the number of parameters D={D}")


class DenseProjection(nn.Module):
    """``z -> P z`` with ``P`` from :func:`dense_projection`; ``P`` is regenerated from ``seed`` (not saved)."""

    def __init__(self, D: int, d: int, seed: int = 0) -> None:
        super().__init__()
        self.D, self.d = D, d
        # not in the state dict: a checkpoint holds z and theta0 only, P is a pure function of the seed
        self.register_buffer("P", dense_projection(D, d, torch.Generator().manual_seed(seed)), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.P @ z

    def matrix(self) -> torch.Tensor:
        return self.P


class FastfoodProjection(nn.Module):
    """``z -> (H G Pi H B [z; 0])[:D] / (||G|| sqrt(D))``, the Fastfood transform (Le, Sarlos & Smola 2013) as
    used for large models by Li et al. 2018; see the module docstring. Regenerated from ``seed`` (not saved)."""

    def __init__(self, D: int, d: int, seed: int = 0) -> None:
        super().__init__()
        _check_dims(D, d)
        self.D, self.d = D, d
        self.L = 1 << max(0, math.ceil(math.log2(D)))
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randint(0, 2, (self.L,), generator=g).float() * 2 - 1, persistent=False)
        self.register_buffer("perm", torch.randperm(self.L, generator=g), persistent=False)
        gauss = torch.randn(self.L, generator=g)
        self.register_buffer("G", gauss, persistent=False)
        self.scale = 1.0 / (float(gauss.norm()) * math.sqrt(D))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(*z.shape[:-1], self.L, dtype=z.dtype, device=z.device)
        x[..., : self.d] = z
        x = hadamard_transform(self.B * x)
        x = hadamard_transform(self.G * x[..., self.perm])
        return x[..., : self.D] * self.scale

    def matrix(self) -> torch.Tensor:
        """The explicit D x d matrix (the transform of the identity's columns; for tests and small D)."""
        eye = torch.eye(self.d, device=self.G.device, dtype=self.G.dtype)
        return self.forward(eye).T


def make_projection(D: int, d: int, kind: str = "auto", seed: int = 0) -> DenseProjection | FastfoodProjection:
    """The projection ``kind`` names; ``"auto"``: dense while D*d <= :data:`DENSE_MAX_ENTRIES`, else Fastfood."""
    if kind not in PROJECTIONS:
        raise PhenomlabError(f"unknown projection {kind!r}; choose one of {list(PROJECTIONS)}")
    _check_dims(D, d)
    if kind == "dense" or (kind == "auto" and D * d <= DENSE_MAX_ENTRIES):
        return DenseProjection(D, d, seed)
    return FastfoodProjection(D, d, seed)


class SubspaceModel(nn.Module):
    """``base`` evaluated at ``theta0 + P z``: the only trainable parameter is ``z`` (d numbers, zero at start).

    ``theta0`` is ``base``'s parameters at construction (a buffer, saved with ``z``); ``base`` itself is kept out
    of the module tree, so neither ``parameters()`` nor the optimiser ever sees its D weights. Modules with buffers
    (batch norm running statistics) are refused: those would change outside the subspace. Li et al. 2018
    (arXiv 1804.08838).
    """

    def __init__(self, base: nn.Module, d: int, projection: str = "auto", seed: int = 0) -> None:
        super().__init__()
        if any(True for _ in base.buffers()):
            raise PhenomlabError("SubspaceModel needs a module without buffers (batch norm statistics would escape z)")
        named = [(n, p) for n, p in base.named_parameters()]
        if not named:
            raise PhenomlabError("SubspaceModel needs a module with parameters")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        theta0 = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        self.D, self.d = theta0.numel(), int(d)
        # the base's device and float dtype: a float64 model gets a float64 P (drawn in float32, cast exactly)
        self.projection = make_projection(self.D, self.d, projection, seed).to(theta0)
        self.register_buffer("theta0", theta0)
        self.z = nn.Parameter(torch.zeros(self.d, device=theta0.device, dtype=theta0.dtype))
        object.__setattr__(self, "_base", base)  # not a submodule: its parameters must stay invisible

    @property
    def kind(self) -> str:
        return "dense" if isinstance(self.projection, DenseProjection) else "fastfood"

    def theta(self) -> torch.Tensor:
        """The full parameter vector ``theta0 + P z`` (differentiable in ``z``)."""
        return self.theta0 + self.projection(self.z)

    def parameters_dict(self, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``base``'s parameters by name, as views of ``theta`` (default :meth:`theta`)."""
        flat = self.theta() if theta is None else theta
        parts = torch.split(flat, self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stateless_call(self._base, self.parameters_dict(), (x,))
