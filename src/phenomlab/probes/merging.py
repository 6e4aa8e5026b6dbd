"""Data-free merging of functionally equivalent hidden units of a ReLU MLP (Iterative Feature Merging).

Chen, Zhou & Yan 2023, "Going beyond neural network feature similarity: the network feature complexity and its
interpretation using category theory" (arXiv 2310.06756).

A ReLU MLP is given as its affine layers ``(W_1, b_1), ..., (W_{L+1}, b_{L+1})`` with ``h_l = relu(W_l h_{l-1} + b_l)``
and output ``W_{L+1} h_L + b_{L+1}``. Hidden unit ``i`` of layer ``l`` has the *incoming vector*
``v_i = [W_l[i], b_l[i]]`` and the *outgoing column* ``W_{l+1}[:, i]``. Because ``relu(c z) = c relu(z)`` for
``c > 0``, a unit with ``v_j = c v_i`` computes ``h_j = c h_i`` on every input: the two units are *functionally
equivalent* (the paper's term, for the positive-scaling transformation), and unit ``j`` can be removed after
``W_{l+1}[:, i] += c W_{l+1}[:, j]`` without changing the network's function. A unit with ``v_j = 0`` outputs 0
and is removed outright.

IFM (the paper's Algorithm 1, on MLPs): for each hidden layer in order, normalise the incoming vectors
``u_i = v_i / ||v_i||``; while the closest pair has ``||u_i - u_j|| < beta``, merge the smaller-norm unit of the
pair into the larger one with ``c = ||v_j|| / ||v_i||`` (exact when the two are parallel, an approximation
otherwise). Merging changes layer ``l + 1``'s incoming vectors, which is why the layers go in order. No data are
used. The number of units left per layer is the paper's *feature complexity* at threshold ``beta``.

:func:`prune_units_by_magnitude` is the control: remove a given number of units per layer with the smallest
``||v_i|| ||W_{l+1}[:, i]||`` (a data-free structured magnitude criterion, invariant to the positive rescaling
``v_i -> c v_i``, ``W_{l+1}[:, i] -> W_{l+1}[:, i] / c``), with no compensation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor

__all__ = [
    "mlp_affine_layers",
    "affine_relu_forward",
    "merge_equivalent_units",
    "prune_units_by_magnitude",
    "nearest_unit_distances",
]

Layers = list[tuple[Tensor, Tensor]]


def _check_layers(layers: Sequence[tuple[Tensor, Tensor]]) -> Layers:
    if len(layers) < 2:
        raise PhenomlabError(f"need at least 2 affine layers (one hidden layer), got {len(layers)}")
    # NaN weights make every distance comparison false, which used to delete a whole layer silently.
    layers = [
        (as_float_tensor(w, f"layer {k} weight"), as_float_tensor(b, f"layer {k} bias"))
        for k, (w, b) in enumerate(layers)
    ]
    for k, (w, b) in enumerate(layers):
        if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise PhenomlabError(
                f"layer {k}: weight must be [out, in] and bias [out], got {tuple(w.shape)}, {tuple(b.shape)}"
            )
        if k > 0 and w.shape[1] != layers[k - 1][0].shape[0]:
            raise PhenomlabError(
                f"layer {k} takes {w.shape[1]} inputs but layer {k - 1} has {layers[k - 1][0].shape[0]}"
            )
    return layers


def mlp_affine_layers(model: nn.Module) -> Layers:
    """Detached copies of the ``(weight, bias)`` of every ``nn.Linear`` of ``model`` in registration order (a bias of
    zeros where a layer has none). For :class:`phenomlab.models.MLP` with ReLU this is the net of the module docs."""
    out: Layers = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            w = m.weight.detach().clone()
            b = m.bias.detach().clone() if m.bias is not None else w.new_zeros(w.shape[0])
            out.append((w, b))
    return _check_layers(out)


def affine_relu_forward(layers: Sequence[tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
    """``W_{L+1} relu(... relu(W_1 x + b_1) ...) + b_{L+1}`` for a batch ``x`` of shape ``[n, in]``."""
    h = x.reshape(x.shape[0], -1)
    for k, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if k < len(layers) - 1:
            h = torch.relu(h)
    return h


def _incoming(w: Tensor, b: Tensor) -> Tensor:
    return torch.cat([w, b[:, None]], dim=1)


def _merge_layer(w: Tensor, b: Tensor, w_next: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    v = _incoming(w, b)
    r = v.norm(dim=1)
    alive = r > 0  # a zero incoming vector is a unit that outputs 0: removed with nothing to compensate
    w_next = w_next.clone()
    idx = torch.nonzero(alive).flatten()
    u = v[idx] / r[idx, None]
    d = torch.cdist(u, u)
    d.fill_diagonal_(float("inf"))
    keep = torch.ones(len(idx), dtype=torch.bool)
    while len(idx) > 1:
        flat = int(torch.argmin(d))
        a, c = divmod(flat, d.shape[1])
        if not d[a, c] < beta:
            break
        i, j = (a, c) if r[idx[a]] >= r[idx[c]] else (c, a)  # the larger unit survives, keeps its direction
        scale = r[idx[j]] / r[idx[i]]
        w_next[:, idx[i]] += scale * w_next[:, idx[j]]
        keep[j] = False
        d[j, :] = float("inf")
        d[:, j] = float("inf")
    kept = idx[keep]
    return w[kept], b[kept], w_next[:, kept]


def merge_equivalent_units(layers: Sequence[tuple[Tensor, Tensor]], beta: float) -> Layers:
    """Iterative Feature Merging (Chen, Zhou & Yan 2023, arXiv 2310.06756) of a ReLU MLP, without data.

    ``layers``: ``[(W_1, b_1), ..., (W_{L+1}, b_{L+1})]`` (see the module docs). Layer by layer from the input,
    while two units have normalised incoming vectors ``u_i = [W[i], b[i]] / ||[W[i], b[i]]||`` closer than
    ``beta`` in Euclidean distance, the smaller-norm unit ``j`` is merged into the larger ``i``:
    ``W_next[:, i] += (||v_j|| / ||v_i||) W_next[:, j]`` and unit ``j`` is deleted; units with a zero incoming
    vector are deleted. Exact (same function) for units that are positive multiples of one another.
    ``beta = 0`` merges only zero units. Returns new tensors; the inputs are not modified.
    """
    layers = _check_layers(layers)
    if not beta >= 0.0:
        raise PhenomlabError(f"beta must be >= 0, got {beta}")
    out = [(w.clone(), b.clone()) for w, b in layers]
    for k in range(len(out) - 1):
        w, b, w_next = _merge_layer(out[k][0], out[k][1], out[k + 1][0], beta)
        out[k] = (w, b)
        out[k + 1] = (w_next, out[k + 1][1])
    return out


def prune_units_by_magnitude(layers: Sequence[tuple[Tensor, Tensor]], n_remove: Sequence[int]) -> Layers:
    """Remove ``n_remove[l]`` units of hidden layer ``l`` with the smallest ``||[W_l[i], b_l[i]]|| ||W_{l+1}[:, i]||``
    (scored on the unpruned net, no compensation): the data-free structured magnitude-pruning control."""
    layers = _check_layers(layers)
    if len(n_remove) != len(layers) - 1:
        raise PhenomlabError(f"need one count per hidden layer ({len(layers) - 1}), got {len(n_remove)}")
    out = [(w.clone(), b.clone()) for w, b in layers]
    for k, n in enumerate(n_remove):
        w, b = out[k]
        w_next = out[k + 1][0]
        if not 0 <= n < w.shape[0]:
            raise PhenomlabError(f"layer {k}: cannot remove {n} of {w.shape[0]} units")
        score = _incoming(layers[k][0], layers[k][1]).norm(dim=1) * layers[k + 1][0].norm(dim=0)
        kept = torch.sort(torch.argsort(score, descending=True)[: w.shape[0] - n]).values
        out[k] = (w[kept], b[kept])
        out[k + 1] = (w_next[:, kept], out[k + 1][1])
    return out


def nearest_unit_distances(layers: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Per hidden layer, each unit's distance ``min_j ||u_i - u_j||`` to its nearest other unit in normalised
    incoming-vector space (``u = v / ||v||``; 0 for zero vectors' partners is not defined, so zero units get NaN)."""
    layers = _check_layers(layers)
    out = []
    for w, b in layers[:-1]:
        v = _incoming(w, b)
        r = v.norm(dim=1, keepdim=True)
        u = v / r
        d = torch.cdist(u, u)
        d.fill_diagonal_(float("inf"))
        out.append(d.min(dim=1).values)
    return out
