"""Multiplicative ("product-gate") networks, parameter-count matching, and stacked members of either family.

A multiplicative network (Ben-Shaul, Galanti, Dekel 2023, "Exploring the Approximation Capabilities of
Multiplicative Neural Networks for Smooth Functions", arXiv 2301.04605) connects intermediate neurons by
multiplications instead of (or besides) a fixed activation. The family here has, for ``l = 1..depth``,

    h_{l} = (A_l h_{l-1} + a_l) * (B_l h_{l-1} + b_l)        (elementwise product of two affine maps)

and a linear read-out ``y = W_out h_depth + c``. With biases every layer contains the affine terms, so the net
is exactly a polynomial of degree ``2**depth`` in the input whose monomials are shared through the
layers: the construction the paper uses to compute the Chebyshev/Taylor polynomials of the analytic kernel
``K`` of a generalised band-limited function without the ReLU "squaring" sub-networks (Yarotsky 2017).

:class:`StackedNets` holds ``M`` independent members of one family (ReLU MLP or multiplicative) as stacked
weights, ``forward(x) -> [N, M]`` (member ``m`` in column ``m``), so one call of the training engine with an
MSE loss against ``[N, M]`` targets trains ``M`` standalone nets: the engine's MSE is the sum over columns of
each column's mean squared error, so each member's gradient is its standalone gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import PhenomlabError
from .mlp import MLP

FAMILIES = ("relu", "mult")


def _check_sizes(in_dim: int, out_dim: int, width: int, depth: int) -> None:
    if in_dim <= 0 or out_dim <= 0 or width <= 0:
        raise PhenomlabError(f"network sizes must be positive: in={in_dim}, out={out_dim}, width={width}")
    if depth < 1:
        raise PhenomlabError(f"depth must be >= 1, got {depth}")


def mlp_param_count(in_dim: int, out_dim: int, width: int, depth: int) -> int:
    """Parameters of :class:`phenomlab.models.MLP` with biases: ``(in+1)w + (depth-1)(w+1)w + (w+1)out``."""
    _check_sizes(in_dim, out_dim, width, depth)
    return (in_dim + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out_dim


def multiplicative_param_count(in_dim: int, out_dim: int, width: int, depth: int) -> int:
    """Parameters of :class:`MultiplicativeNet`: two affine maps per layer, ``2[(in+1)w + (depth-1)(w+1)w]``
    plus the read-out ``(w+1)out``."""
    _check_sizes(in_dim, out_dim, width, depth)
    return 2 * ((in_dim + 1) * width + (depth - 1) * (width + 1) * width) + (width + 1) * out_dim


def param_count(family: str, in_dim: int, out_dim: int, width: int, depth: int) -> int:
    """Parameter count of ``family`` (``"relu"`` or ``"mult"``) at the given sizes."""
    if family not in FAMILIES:
        raise PhenomlabError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
    fn: Callable[[int, int, int, int], int] = mlp_param_count if family == "relu" else multiplicative_param_count
    return fn(in_dim, out_dim, width, depth)


def match_width(family: str, target: int, in_dim: int, out_dim: int, depth: int) -> int:
    """The width ``w >= 1`` whose parameter count for ``family`` is closest to ``target`` (ties: the smaller).

    The count grows strictly with ``w``, so the answer is one of the two widths around the real root.
    """
    if target <= 0:
        raise PhenomlabError(f"target parameter count must be positive, got {target}")
    lo, hi = 1, 1
    while param_count(family, in_dim, out_dim, hi, depth) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), or lo == hi == 1
        mid = (lo + hi) // 2
        if param_count(family, in_dim, out_dim, mid, depth) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: (abs(param_count(family, in_dim, out_dim, w, depth) - target), w))


class MultiplicativeNet(nn.Module):
    """``depth`` product layers ``h = a{l}(h) * b{l}(h)`` of ``width`` units, then ``out`` (see module doc).

    Init: weights N(0, 1/(2 fan_in)) and biases N(0, 1/2), so each factor's second moment is
    ``(E h^2 + 1) / 2`` and a layer maps second moment 1 to 1 (products of two independent unit-moment
    factors); with PyTorch's default Linear init the signal would shrink geometrically with depth.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        _check_sizes(in_dim, out_dim, width, depth)
        self.depth = depth
        self.width = width
        d = in_dim
        for i in range(1, depth + 1):
            for side in "ab":
                lin = nn.Linear(d, width)
                with torch.no_grad():
                    lin.weight.normal_(0.0, math.sqrt(0.5 / d))
                    lin.bias.normal_(0.0, math.sqrt(0.5))
                setattr(self, f"{side}{i}", lin)
            d = width
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"a{i}")(h) * getattr(self, f"b{i}")(h)
        return self.out(h)


class StackedNets(nn.Module):
    """``n_members`` independent scalar-output nets of one ``family`` (``"relu"``: :class:`MLP`, ``"mult"``:
    :class:`MultiplicativeNet`), each initialised as the standalone net would be; ``forward(x) -> [N, M]``.

    Weights are stored as ``[M, fan_in, fan_out]`` tensors (``w{l}`` and, for ``"mult"``, ``v{l}`` for the second
    factor; ``c{l}``/``e{l}`` their biases; ``wo``/``co`` the read-out). :meth:`member` returns member ``m`` as a
    standalone module with the same weights (the exact-equivalence test compares the two).
    """

    def __init__(self, family: str, n_members: int, in_dim: int, width: int, depth: int) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise PhenomlabError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
        if n_members < 1:
            raise PhenomlabError(f"n_members must be >= 1, got {n_members}")
        _check_sizes(in_dim, 1, width, depth)
        self.family, self.n_members, self.in_dim, self.width, self.depth = family, n_members, in_dim, width, depth
        nets = [self._standalone() for _ in range(n_members)]
        for i in range(1, depth + 1):
            first = "fc" if family == "relu" else "a"
            self._stack(f"w{i}", f"c{i}", [getattr(n, f"{first}{i}") for n in nets])
            if family == "mult":
                self._stack(f"v{i}", f"e{i}", [getattr(n, f"b{i}") for n in nets])
        self._stack("wo", "co", [n.out for n in nets])

    def _standalone(self) -> nn.Module:
        if self.family == "relu":
            return MLP(self.in_dim, 1, width=self.width, depth=self.depth)
        return MultiplicativeNet(self.in_dim, 1, width=self.width, depth=self.depth)

    def _stack(self, w: str, b: str, layers: list[nn.Linear]) -> None:
        self.register_parameter(w, nn.Parameter(torch.stack([lin.weight.detach().T for lin in layers]).clone()))
        self.register_parameter(b, nn.Parameter(torch.stack([lin.bias.detach() for lin in layers])[:, None].clone()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1).unsqueeze(0).expand(self.n_members, -1, -1)  # [M, N, d]
        for i in range(1, self.depth + 1):
            p = torch.baddbmm(getattr(self, f"c{i}"), h, getattr(self, f"w{i}"))
            if self.family == "relu":
                h = torch.relu(p)
            else:
                h = p * torch.baddbmm(getattr(self, f"e{i}"), h, getattr(self, f"v{i}"))
        return torch.baddbmm(self.co, h, self.wo).squeeze(-1).T  # [N, M]

    @torch.no_grad()
    def member(self, m: int) -> nn.Module:
        """Member ``m`` as a standalone :class:`MLP` / :class:`MultiplicativeNet` holding a copy of its weights (on
        the stack's device, in its dtype)."""
        if not 0 <= m < self.n_members:
            raise PhenomlabError(f"member index {m} out of range [0, {self.n_members})")
        net = self._standalone().to(self.wo)
        for i in range(1, self.depth + 1):
            first = "fc" if self.family == "relu" else "a"
            pairs = [(first, "w", "c")] + ([("b", "v", "e")] if self.family == "mult" else [])
            for name, w, b in pairs:
                lin = getattr(net, f"{name}{i}")
                lin.weight.copy_(getattr(self, f"{w}{i}")[m].T)
                lin.bias.copy_(getattr(self, f"{b}{i}")[m, 0])
        net.out.weight.copy_(self.wo[m].T)
        net.out.bias.copy_(self.co[m, 0])
        return net
