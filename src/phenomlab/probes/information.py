"""Binned mutual-information estimates for the information plane.

References
----------
- R. Shwartz-Ziv, N. Tishby (2017), "Opening the black box of deep neural networks via information",
  arXiv 1703.00810 (binning each unit, I(X;T) and I(T;Y) per layer).
- A.M. Saxe, Y. Bansal, J. Dapello, M. Advani, A. Kolchinsky, B.D. Tracey, D.D. Cox (2018),
  "On the information bottleneck theory of deep learning", ICLR (binning of ReLU vs tanh units).
- S.S. Lorenzen, C. Igel, M. Nielsen (2021), "Information bottleneck: exact analysis of (quantized) neural
  networks", arXiv 2106.12912 (:func:`quantize`, :func:`quantized_mutual_information`: exact MI when the
  activations themselves are discrete).

All quantities are plug-in (empirical) estimates in bits. Binning makes the hidden layer ``T`` a
discrete variable; each binned row of activations is one symbol.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor, as_label_tensor, check_same_length
from phenomlab.probes._threads import single_threaded

__all__ = [
    "entropy_of_rows",
    "discretize",
    "binned_mutual_information",
    "quantize",
    "dequantize",
    "quantized_mutual_information",
]

_LOG2 = math.log(2.0)


def _entropy_from_inverse(inverse: Tensor, n_symbols: int) -> float:
    counts = torch.bincount(inverse, minlength=n_symbols).to(torch.float64)
    counts = counts[counts > 0]
    p = counts / counts.sum()
    # + 0.0 turns the -0.0 of a single symbol into 0.0
    return float(-(p * torch.log(p)).sum() / _LOG2) + 0.0


def _row_symbols(t: Tensor) -> tuple[Tensor, int]:
    """Integer symbol per distinct row of ``t`` (``[N]``) and the number of distinct rows."""
    if t.ndim == 1:
        t = t[:, None]
    t = t.reshape(t.shape[0], -1)
    _, inverse = torch.unique(t, dim=0, return_inverse=True)
    return inverse, int(inverse.max()) + 1 if inverse.numel() else 0


@single_threaded
def entropy_of_rows(t: Any) -> float:
    """Shannon entropy (bits) of the empirical distribution of the distinct rows of ``t``.

    ``H = -sum_s p_s log2 p_s`` with ``p_s`` the fraction of rows equal to row-pattern ``s``. A 1-D
    input is treated as one symbol per entry.
    """
    x = torch.as_tensor(t) if not isinstance(t, Tensor) else t
    if x.numel() == 0:
        raise PhenomlabError("cannot take the entropy of an empty tensor")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        # NaN != NaN: each NaN row would count as a symbol of its own
        raise PhenomlabError("t contains NaN/inf")
    inv, k = _row_symbols(x.detach())
    return _entropy_from_inverse(inv, k)


def discretize(activations: Any, n_bins: int = 30, bounds: tuple[float, float] | None = None) -> Tensor:
    """Bin every unit into ``n_bins`` equal-width bins over ``bounds`` (default: the layer's min and max).

    Returns integer bin indices in ``[0, n_bins)``; values outside ``bounds`` go to the end bins.
    One common grid for all units of the layer, as in Shwartz-Ziv & Tishby's code.
    """
    if n_bins < 1:
        raise PhenomlabError(f"n_bins must be >= 1, got {n_bins}")
    a = as_float_tensor(activations, "activations")
    if a.ndim < 1:
        raise PhenomlabError("activations must be at least 1-D [N, ...]")
    a = a.reshape(a.shape[0], -1)
    if bounds is None:
        lo, hi = float(a.min()), float(a.max())
    else:
        lo, hi = float(bounds[0]), float(bounds[1])
        if not hi > lo:
            raise PhenomlabError(f"bounds must satisfy low < high, got {bounds}")
    if hi == lo:
        return torch.zeros_like(a, dtype=torch.long)
    width = (hi - lo) / n_bins
    return torch.floor((a - lo) / width).long().clamp_(0, n_bins - 1)


@single_threaded
def binned_mutual_information(
    activations: Any, x_ids: Any | None, y: Any, n_bins: int = 30, bounds: tuple[float, float] | None = None
) -> tuple[float, float]:
    """``(I(X;T), I(T;Y))`` in bits for a layer ``T`` binned into ``n_bins`` per unit (Shwartz-Ziv & Tishby 2017).

    Each row of ``activations`` (``[N, ...]``, one row per sample) is discretised with :func:`discretize`
    and the binned row is one symbol ``t``. With ``x_ids`` identifying the input of each row (``None``:
    every row is a distinct input) and ``y`` the labels:

    - ``I(X;T) = H(T) - H(T|X)``. When every input is distinct, ``T`` is a deterministic function of ``X``,
      so ``H(T|X) = 0`` and ``I(X;T) = H(T)``; repeated ``x_ids`` (e.g. the same input under dropout
      noise) are handled by the general formula ``H(T|X) = H(X, T) - H(X)``.
    - ``I(T;Y) = H(T) - H(T|Y)`` with ``H(T|Y) = H(T, Y) - H(Y)``.
    """
    a = as_float_tensor(activations, "activations")
    if a.ndim < 1 or a.shape[0] == 0:
        raise PhenomlabError("activations must be a non-empty [N, ...] tensor")
    a = a.reshape(a.shape[0], -1)
    labels = as_label_tensor(y, "y", device=a.device)
    check_same_length(a, labels, ("activations", "y"))
    t_sym, nt = _row_symbols(discretize(a, n_bins, bounds))
    h_t = _entropy_from_inverse(t_sym, nt)
    if x_ids is None:
        h_t_given_x = 0.0
    else:
        xi = as_label_tensor(x_ids, "x_ids", device=a.device)
        check_same_length(a, xi, ("activations", "x_ids"))
        x_sym, nx = _row_symbols(xi)
        xt_sym, nxt = _row_symbols(torch.stack([x_sym, t_sym], 1))
        h_t_given_x = _entropy_from_inverse(xt_sym, nxt) - _entropy_from_inverse(x_sym, nx)
    y_sym, ny = _row_symbols(labels)
    ty_sym, nty = _row_symbols(torch.stack([t_sym, y_sym], 1))
    h_t_given_y = _entropy_from_inverse(ty_sym, nty) - _entropy_from_inverse(y_sym, ny)
    # Clip tiny negative values from floating-point differences of equal entropies.
    return max(h_t - h_t_given_x, 0.0), max(h_t - h_t_given_y, 0.0)


def _levels(n_bits: int) -> int:
    if not 1 <= n_bits <= 16:
        raise PhenomlabError(f"n_bits must be in [1, 16], got {n_bits}")
    return 2**n_bits


def _bounds(bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = float(bounds[0]), float(bounds[1])
    if not hi > lo:
        raise PhenomlabError(f"bounds must satisfy low < high, got {bounds}")
    return lo, hi


def quantize(activations: Any, n_bits: int, bounds: tuple[float, float]) -> Tensor:
    """Uniform ``n_bits`` fixed-point codes of ``activations`` on ``bounds = (lo, hi)`` (Lorenzen et al. 2021).

    ``code = round((a - lo) / delta)`` clipped to ``[0, 2**n_bits - 1]``, with ``delta = (hi - lo) / (2**n_bits - 1)``,
    so ``lo`` and ``hi`` are representable exactly. Returns integer codes of the same shape.
    """
    levels = _levels(n_bits)
    lo, hi = _bounds(bounds)
    a = as_float_tensor(activations, "activations")
    delta = (hi - lo) / (levels - 1)
    return torch.round((a - lo) / delta).clamp_(0, levels - 1).long()


def dequantize(codes: Tensor, n_bits: int, bounds: tuple[float, float]) -> Tensor:
    """The real values ``lo + code * delta`` that :func:`quantize`'s codes stand for (the quantised activation)."""
    levels = _levels(n_bits)
    lo, hi = _bounds(bounds)
    return lo + codes.to(torch.get_default_dtype()) * ((hi - lo) / (levels - 1))


@single_threaded
def quantized_mutual_information(codes: Any, y: Any) -> tuple[float, float]:
    """Exact ``(I(X;T), I(T;Y))`` in bits for a deterministic net with discrete activations (Lorenzen et al. 2021).

    ``codes`` (``[N, ...]`` integers) are the quantised activations of a layer ``T`` for each of ``N`` distinct,
    equiprobable inputs ``X`` (the whole finite input set, e.g. all ``2**12`` inputs), ``y`` their labels. Because
    ``T = f(X)`` is a deterministic function of a uniform ``X`` with a finite range, ``H(T|X) = 0`` and

    - ``I(X;T) = H(T) = -sum_t p(t) log2 p(t)``, ``p(t)`` = the fraction of inputs mapped to code row ``t``;
    - ``I(T;Y) = H(T) - H(T|Y)`` with ``H(T|Y) = H(T, Y) - H(Y)``.

    No binning of a continuous variable happens here: the numbers are the exact mutual informations of the
    quantised net under the uniform distribution on the input set, not estimates.
    """
    c = torch.as_tensor(codes) if not isinstance(codes, Tensor) else codes
    if c.ndim < 1 or c.shape[0] == 0:
        raise PhenomlabError("codes must be a non-empty [N, ...] tensor")
    if c.is_floating_point() or c.is_complex() or c.dtype == torch.bool:
        raise PhenomlabError(f"codes must be integer quantisation codes, got dtype {c.dtype}")
    c = c.reshape(c.shape[0], -1)
    labels = as_label_tensor(y, "y", device=c.device)
    check_same_length(c, labels, ("codes", "y"))
    t_sym, nt = _row_symbols(c)
    h_t = _entropy_from_inverse(t_sym, nt)
    y_sym, ny = _row_symbols(labels)
    ty_sym, nty = _row_symbols(torch.stack([t_sym, y_sym], 1))
    h_t_given_y = _entropy_from_inverse(ty_sym, nty) - _entropy_from_inverse(y_sym, ny)
    return h_t, max(h_t - h_t_given_y, 0.0)
