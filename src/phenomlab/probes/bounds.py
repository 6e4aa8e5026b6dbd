"""Norm-based Rademacher generalisation bounds: the sparse (filter-norm) bound next to the standard (Toeplitz) one.

Galanti, Xu, Galanti & Poggio, "Norm-based Generalization Bounds for (Compositionally) Sparse Neural Networks"
(arXiv 2301.12033; NeurIPS 2023). A ReLU network whose every neuron reads only ``d_l`` input *patches* (a conv
layer with kernel ``d_l``, a dense layer reading one patch: ``d_l = 1``) has a Rademacher complexity controlled by
the norms of the **filters** ``rho_l = ||w_l||_F`` (the ``[C_out, C_in, k]`` kernel, whatever the number of
positions it is applied at), times ``sqrt(d_l)`` per layer. The standard bound for the same network (Golowich,
Rakhlin & Shamir 2018, arXiv 1712.06541, Theorem 1 with Frobenius norms) sees each conv layer as its unfolded
**Toeplitz** matrix ``T_l`` (``[C_out * P_out, C_in * P_in]``), whose Frobenius norm is about ``sqrt(P_out)``
times the filter's.

With ``n`` training points, ``k`` classes, margin ``gamma``, ``delta = 1e-3``, ``L`` layers and
``rho~ = prod_l rho_l / gamma``, the bound on ``test error - train ramp loss at margin gamma`` is

- sparse:   ``2^1.5 (rho~ + 1)/n * (1 + sqrt(2 (L log(2 d_max) + log k))) * prod_l sqrt(d_l)
  * sqrt(max_j sum_i ||x_i[j]||^2) + 3 sqrt(log(2 (rho~ + 2)^2 / delta) / (2n))``,
  ``x_i[j]`` the input's channel vector at position ``j`` (a pixel), ``d_max = max_l d_l``;
- standard: ``2^1.5 (rho~_T + 1)/n * (1 + sqrt(2 (L log 2 + log k))) * sqrt(sum_i ||x_i||^2)
  + 3 sqrt(log(2 (rho~_T + 2)^2 / delta) / (2n))``, ``rho~_T = prod_l ||T_l||_F / gamma``.

The constants (``2^1.5``, ``rho + 1``, ``L log(2 d_max) + log k``, the union term with ``delta = 1e-3``) are
those of the paper's released evaluation code (``our_total_bound`` and ``golowich_total_bound`` in
github.com/lianegalanti/gen, ``utils.py``), where ``prod_l sqrt(d_l)`` is the product of the kernel side lengths
of 2-D convs. One deliberate difference: that code leaves the degree of the final dense layer out of
``prod_l sqrt(d_l)``; here every layer's degree counts (conservative: it only makes the sparse bound larger).

Architecture covered by :func:`network_bounds`: bias-free ``Conv1d`` layers (any kernel, stride, zero padding)
each followed by ReLU, then a global average over positions, then bias-free ``Linear`` layers with ReLU between.
The average pool and the first linear layer are one layer of degree ``P`` (the positions left) whose shared filter
is ``W / P``; both bounds then see the same ``||W||_F / sqrt(P)`` for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PhenomlabError
from ._checks import as_float_tensor, as_label_tensor, check_same_length
from ._params import eval_mode

__all__ = [
    "conv1d_output_length",
    "conv1d_toeplitz",
    "sparse_norm_bound",
    "toeplitz_norm_bound",
    "NetworkBounds",
    "network_bounds",
    "multiclass_margins",
]

#: the confidence level of the paper's code (``delta = 0.001``)
DELTA = 1e-3


def conv1d_output_length(length: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Number of positions a 1-D convolution produces: ``floor((length + 2 padding - kernel) / stride) + 1``."""
    if length <= 0 or kernel_size <= 0 or stride <= 0 or padding < 0:
        raise PhenomlabError(
            f"conv1d needs positive length/kernel/stride and padding >= 0, got {length}, {kernel_size}, {stride}, "
            f"{padding}"
        )
    out = (length + 2 * padding - kernel_size) // stride + 1
    if out <= 0:
        raise PhenomlabError(f"kernel {kernel_size} does not fit an input of length {length} with padding {padding}")
    return out


def conv1d_toeplitz(weight: torch.Tensor, length: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """The explicit matrix ``T`` of a bias-free zero-padded ``Conv1d``: ``conv1d(x).flatten() == T @ x.flatten()``.

    ``weight`` is ``[C_out, C_in, k]``; ``T`` is ``[C_out * P_out, C_in * length]`` with rows ordered
    (out channel, position) and columns (in channel, position), as ``Tensor.flatten`` orders them.
    ``T[(o, p), (c, j)] = weight[o, c, j - p * stride + padding]`` where that tap exists, else 0.
    """
    if weight.ndim != 3:
        raise PhenomlabError(f"conv1d weight must be [C_out, C_in, k], got shape {tuple(weight.shape)}")
    c_out, c_in, k = weight.shape
    p_out = conv1d_output_length(length, k, stride, padding)
    t = weight.new_zeros(c_out, p_out, c_in, length)
    for p in range(p_out):
        start = p * stride - padding
        lo, hi = max(start, 0), min(start + k, length)
        if lo < hi:
            t[:, p, :, lo:hi] = weight[:, :, lo - start : hi - start]
    return t.reshape(c_out * p_out, c_in * length)


def _log_term(depth: int, d_max: int, n_classes: int) -> float:
    return 1.0 + math.sqrt(2.0 * (depth * math.log(2.0 * d_max) + math.log(n_classes)))


def _union_term(rho: float, n: int, delta: float) -> float:
    return 3.0 * math.sqrt(math.log(2.0 * (rho + 2.0) ** 2 / delta) / (2.0 * n))


def _check_common(norms: Sequence[float], n: int, n_classes: int, margin: float, delta: float) -> None:
    if not norms:
        raise PhenomlabError("a bound needs at least one layer norm")
    if any(not math.isfinite(v) or v < 0 for v in norms):
        raise PhenomlabError(f"layer norms must be finite and >= 0, got {list(norms)}")
    if n <= 0 or n_classes < 2:
        raise PhenomlabError(f"need n > 0 training points and >= 2 classes, got n={n}, n_classes={n_classes}")
    if not margin > 0 or not 0 < delta < 1:
        raise PhenomlabError(f"margin must be > 0 and delta in (0, 1), got margin={margin}, delta={delta}")


def sparse_norm_bound(
    filter_norms: Sequence[float],
    degrees: Sequence[int],
    max_patch_sq_sum: float,
    n: int,
    n_classes: int,
    margin: float = 1.0,
    delta: float = DELTA,
) -> float:
    """The paper's filter-norm bound on ``test error - train ramp loss`` (formula in the module docstring).

    ``filter_norms[l] = ||w_l||_F``, ``degrees[l] = d_l`` (patches each neuron of layer ``l`` reads),
    ``max_patch_sq_sum = max_j sum_i ||x_i[j]||^2`` over input positions ``j``.
    """
    _check_common(filter_norms, n, n_classes, margin, delta)
    if len(degrees) != len(filter_norms) or any(int(d) < 1 for d in degrees):
        raise PhenomlabError(f"need one degree >= 1 per layer, got {list(degrees)} for {len(filter_norms)} layers")
    if not max_patch_sq_sum >= 0:
        raise PhenomlabError(f"max_patch_sq_sum must be >= 0, got {max_patch_sq_sum}")
    rho = math.prod(filter_norms) / margin
    deg = math.prod(math.sqrt(d) for d in degrees)
    main = 2.0**1.5 * (rho + 1.0) / n * _log_term(len(degrees), max(degrees), n_classes)
    return main * deg * math.sqrt(max_patch_sq_sum) + _union_term(rho, n, delta)


def toeplitz_norm_bound(
    toeplitz_norms: Sequence[float],
    input_sq_sum: float,
    n: int,
    n_classes: int,
    margin: float = 1.0,
    delta: float = DELTA,
) -> float:
    """The standard (Golowich et al. 2018) bound with the paper's constants, from ``||T_l||_F`` of each layer.

    ``input_sq_sum = sum_i ||x_i||^2``. Formula in the module docstring (``d_max = 1``: no patch structure).
    """
    _check_common(toeplitz_norms, n, n_classes, margin, delta)
    if not input_sq_sum >= 0:
        raise PhenomlabError(f"input_sq_sum must be >= 0, got {input_sq_sum}")
    rho = math.prod(toeplitz_norms) / margin
    main = 2.0**1.5 * (rho + 1.0) / n * _log_term(len(toeplitz_norms), 1, n_classes)
    return main * math.sqrt(input_sq_sum) + _union_term(rho, n, delta)


def multiclass_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``f(x)_y - max_{c != y} f(x)_c`` per example (negative where misclassified): the multiclass margin of
    Bartlett, Foster, Telgarsky 2017 (arXiv 1706.08498)."""
    y = as_label_tensor(y, "y", device=logits.device)
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise PhenomlabError(f"logits must be [N, classes] with y [N], got {tuple(logits.shape)}, {tuple(y.shape)}")
    if y.numel() and int(y.max()) >= logits.shape[1]:
        raise PhenomlabError(f"y holds class {int(y.max())} but the logits have {logits.shape[1]} classes")
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


@dataclass(frozen=True)
class NetworkBounds:
    """Both bounds for one trained network, with the pieces they are made of."""

    sparse: float
    toeplitz: float
    margin: float
    ramp_loss: float
    filter_norms: tuple[float, ...]
    toeplitz_norms: tuple[float, ...]
    degrees: tuple[int, ...]

    @property
    def ratio(self) -> float:
        """``toeplitz / sparse``: how many times tighter the sparse bound is."""
        return self.toeplitz / self.sparse


def _layers(model: nn.Module) -> tuple[list[nn.Conv1d], list[nn.Linear]]:
    convs: list[nn.Conv1d] = []
    linears: list[nn.Linear] = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            if linears:
                raise PhenomlabError("network_bounds covers conv layers first, then linear layers")
            convs.append(m)
        elif isinstance(m, nn.Linear):
            linears.append(m)
        elif isinstance(m, (nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.AvgPool1d, nn.BatchNorm1d)):
            raise PhenomlabError(f"network_bounds does not cover {type(m).__name__} layers")
        else:
            continue
        if m.bias is not None:
            raise PhenomlabError(f"network_bounds covers bias-free layers; {type(m).__name__} has a bias")
        if isinstance(m, nn.Conv1d) and (m.dilation != (1,) or m.groups != 1 or m.padding_mode != "zeros"):
            raise PhenomlabError("network_bounds covers plain zero-padded Conv1d (no dilation, groups or modes)")
    if not linears:
        raise PhenomlabError("network_bounds needs at least one Linear layer after the average pool")
    return convs, linears


def _covered_forward(convs: list[nn.Conv1d], linears: list[nn.Linear], x: torch.Tensor) -> torch.Tensor:
    """The logits of the architecture the bounds describe, from ``convs`` and ``linears`` alone (float64)."""
    h = x
    for conv in convs:
        w = conv.weight.detach().double().to(h.device)
        h = torch.relu(F.conv1d(h, w, stride=conv.stride, padding=conv.padding))
    h = h.mean(-1) if convs else h.flatten(1)
    for i, lin in enumerate(linears):
        w = lin.weight.detach().double().to(h.device)
        if h.shape[-1] != w.shape[1]:
            raise PhenomlabError(
                f"Linear layer {i} reads {w.shape[1]} features but the layer before gives {h.shape[-1]}: "
                "network_bounds covers conv1d -> ReLU -> average pool -> linear"
            )
        h = h @ w.T
        if i < len(linears) - 1:
            h = torch.relu(h)
    return h


@torch.no_grad()
def network_bounds(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    margin_quantile: float = 0.1,
    delta: float = DELTA,
) -> NetworkBounds:
    """Sparse and Toeplitz bounds of ``model`` (conv1d stack -> ReLU -> average pool -> linear stack) on ``(x, y)``.

    ``x`` is ``[N, L]`` or ``[N, C, L]``: the training set. The margin ``gamma`` is the ``margin_quantile``
    quantile of the training margins (Jiang et al. 2020, arXiv 1912.02178, use the 10th percentile), so that
    ``rho / gamma`` is invariant to rescaling the layers; ``ramp_loss`` is the training ramp loss at ``gamma``.
    Each conv layer's Toeplitz norm is the Frobenius norm of its explicit :func:`conv1d_toeplitz` matrix.
    The model runs on its own device (``x`` is moved there).
    """
    x = as_float_tensor(x, "x")
    y = as_label_tensor(y, "y", device=x.device)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise PhenomlabError(f"x must be [N, L] or [N, C, L], got shape {tuple(x.shape)}")
    check_same_length(x, y, ("x", "y"))
    if not 0 < margin_quantile < 1:
        raise PhenomlabError(f"margin_quantile must be in (0, 1), got {margin_quantile}")
    convs, linears = _layers(model)
    x = x.detach().double()
    length = x.shape[-1]
    filter_norms: list[float] = []
    toeplitz_norms: list[float] = []
    degrees: list[int] = []
    for conv in convs:
        w = conv.weight.detach().double()
        (k,), (s,), (p,) = conv.kernel_size, conv.stride, conv.padding
        filter_norms.append(float(w.norm()))
        toeplitz_norms.append(float(conv1d_toeplitz(w, length, s, p).norm()))
        degrees.append(int(k))
        length = conv1d_output_length(length, k, s, p)
    for i, lin in enumerate(linears):
        w = lin.weight.detach().double()
        if i == 0 and convs:
            # average pool + first linear = one layer of degree P whose filter W/P is shared over the P positions
            # (its Toeplitz matrix [W/P, ..., W/P] has norm sqrt(P) ||W/P||_F: the two bounds agree on it)
            filter_norms.append(float(w.norm()) / length)
            toeplitz_norms.append(float(w.norm()) / math.sqrt(length))
            degrees.append(length)
        else:
            filter_norms.append(float(w.norm()))
            toeplitz_norms.append(float(w.norm()))
            degrees.append(1)
    # eval mode: an active Dropout would make the margins, hence gamma and both bounds, random
    with eval_mode(model), torch.no_grad():
        # run where the model lives (inputs moved there, as the other probes do); margins where the labels are
        p0 = next(model.parameters())
        logits = model(x.to(device=p0.device, dtype=p0.dtype)).double().to(x.device)
    # The bounds are computed from the layers alone; a model whose forward differs (a flatten instead of the
    # pool, a max pool, another activation, a skip) would get a bound for a network it is not.
    want = _covered_forward(convs, linears, x)
    scale = float(want.abs().max()) if want.numel() else 1.0
    if not torch.allclose(logits, want, rtol=1e-4, atol=1e-5 * max(scale, 1e-30)):
        raise PhenomlabError(
            "the model's output differs from conv1d -> ReLU -> average pool -> linear (ReLU between linears) built "
            "from its layers: network_bounds covers only that architecture"
        )
    margins = multiclass_margins(logits, y)
    gamma = float(torch.quantile(margins, margin_quantile))
    if not gamma > 0:
        raise PhenomlabError(f"the {margin_quantile} quantile of the training margins is {gamma:.3g} <= 0")
    ramp = float(torch.clamp(1.0 - margins / gamma, 0.0, 1.0).mean())
    n, n_classes = x.shape[0], logits.shape[1]
    max_patch = float((x**2).sum(1).sum(0).max())  # max over positions j of sum_i ||x_i[:, j]||^2
    total = float((x**2).sum())
    return NetworkBounds(
        sparse=sparse_norm_bound(filter_norms, degrees, max_patch, n, n_classes, gamma, delta),
        toeplitz=toeplitz_norm_bound(toeplitz_norms, total, n, n_classes, gamma, delta),
        margin=gamma,
        ramp_loss=ramp,
        filter_norms=tuple(filter_norms),
        toeplitz_norms=tuple(toeplitz_norms),
        degrees=tuple(degrees),
    )
