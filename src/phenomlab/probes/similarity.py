"""Representation similarity: CKA (linear, RBF, unbiased, minibatch) and CCA family (CCA, SVCCA, PWCCA).

References
----------
- S. Kornblith, M. Norouzi, H. Lee, G. Hinton (2019), "Similarity of neural network
  representations revisited", ICML, arXiv 1905.00414 (CKA).
- L. Song, A. Smola, A. Gretton, J. Bedo, K. Borgwardt (2012), "Feature selection via dependence
  maximization", JMLR (unbiased HSIC estimator HSIC_1).
- T. Nguyen, M. Raghu, S. Kornblith (2021), "Do wide and deep networks learn the same things?",
  ICLR, arXiv 2010.15327 (minibatch CKA from accumulated unbiased HSIC).
- M. Raghu, J. Gilmer, J. Yosinski, J. Sohl-Dickstein (2017), "SVCCA", NeurIPS, arXiv 1706.05806.
- A. Morcos, M. Raghu, S. Bengio (2018), "Insights on representational similarity in neural networks
  with canonical correlation", NeurIPS, arXiv 1806.05759 (PWCCA).

Representations are ``[N, D]`` (examples x features; extra dimensions are flattened). HSIC notation:
``K = X X^T``, ``L = Y Y^T``, ``H = I - 11^T/N``; biased ``HSIC_0 = <HKH, HLH>`` (the ``(N-1)^-2`` factor cancels
in CKA); unbiased, with ``K~``, ``L~`` the Grams with zeroed diagonals,

    HSIC_1 = [tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((N-1)(N-2)) - 2/(N-2) 1^T K~ L~ 1] / (N(N-3)),

and ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor, check_same_length
from phenomlab.probes._threads import caller_threads, single_threaded

__all__ = [
    "linear_cka",
    "rbf_cka",
    "hsic1",
    "minibatch_cka",
    "MinibatchCKA",
    "cka_matrix",
    "cka_matrices",
    "cca",
    "cca_matrix",
    "cca_matrices",
    "svcca",
    "pwcca",
]


def _rep(x: Any, name: str, min_rows: int = 2) -> Tensor:
    t = as_float_tensor(x, name)
    if t.ndim < 2:
        raise PhenomlabError(f"{name} must be [N, D] (examples x features), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise PhenomlabError(f"{name} is empty (shape {tuple(t.shape)})")
    t = t.reshape(t.shape[0], -1)
    if t.shape[0] < min_rows:
        raise PhenomlabError(f"{name} needs at least {min_rows} examples, got {t.shape[0]}")
    return t


def _pair(x: Any, y: Any, min_rows: int = 2) -> tuple[Tensor, Tensor]:
    a, b = _rep(x, "X", min_rows), _rep(y, "Y", min_rows)
    check_same_length(a, b, ("X", "Y"))
    if b.dtype != a.dtype or b.device != a.device:
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(device=a.device, dtype=dtype)
    return a, b


def _center(t: Tensor) -> Tensor:
    """Column-centred ``t``; exactly zero for a constant column (a plain ``t - mean`` leaves rounding there)."""
    d = t - t[:1]
    return d - d.mean(0)


def _undefined(n: int = 1) -> None:
    msg = f"CKA is undefined (0/0) for {n} pair(s): a representation has zero variance; returning NaN"
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _ratio(num: Tensor, den: Tensor) -> float:
    # A constant representation has zero self-similarity: CKA is 0/0 there, reported as NaN.
    if not float(den) > 0.0:
        _undefined()
        return math.nan
    return float(num / den)


# ---------------------------------------------------------------------------------- unbiased HSIC


class _HsicStats:
    """Per-representation quantities for HSIC_1 with a linear kernel, in feature or Gram form.

    ``gram`` (zero diagonal ``K~``) is kept when N <= D (cheaper cross terms); otherwise the features
    ``x`` and the squared row norms ``a = diag(K)``. Both forms give ``r = K~ 1`` and ``s = 1^T K~ 1``.
    """

    def __init__(self, x: Tensor, use_gram: bool | None = None) -> None:
        n, d = x.shape
        # HSIC_1 is invariant to translating x (its U-statistic kills row/column-additive terms of K);
        # centring only improves the conditioning of the sums below.
        x = _center(x)
        if use_gram is None:
            use_gram = n <= d
        self.n = n
        self.x: Tensor | None = None
        self.gram: Tensor | None = None
        if use_gram:
            with caller_threads(2.0 * n * n * d):
                k = x @ x.T
            k.fill_diagonal_(0.0)
            self.gram = k
            self.r = k.sum(1)
        else:
            self.x = x
            self.a = x.square().sum(1)
            self.r = x @ x.sum(0) - self.a
        self.s = self.r.sum()

    def trace_with(self, other: _HsicStats) -> Tensor:
        """tr(K~ L~) = sum_{i != j} K_ij L_ij."""
        if self.gram is not None and other.gram is not None:
            return (self.gram * other.gram).sum()
        if self.gram is None and other.gram is None:
            assert self.x is not None and other.x is not None
            with caller_threads(2.0 * self.x.numel() * other.x.shape[1]):
                c = self.x.T @ other.x
            return c.square().sum() - (self.a * other.a).sum()
        g, f = (self, other) if self.gram is not None else (other, self)
        assert g.gram is not None and f.x is not None
        # <K~, Y Y^T> = tr(Y^T K~ Y) because K~ has a zero diagonal.
        with caller_threads(2.0 * g.gram.shape[0] * f.x.numel()):
            gy = g.gram @ f.x
        return (gy * f.x).sum()


def _hsic1_from(a: _HsicStats, b: _HsicStats, trace: Tensor | None = None) -> Tensor:
    n = a.n
    if trace is None:
        trace = a.trace_with(b)
    return (trace + a.s * b.s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a.r @ b.r)) / (n * (n - 3))


def _hsic1_gram(k: Tensor, lm: Tensor) -> Tensor:
    n = k.shape[0]
    k = k.clone()
    lm = lm.clone()
    k.fill_diagonal_(0.0)
    lm.fill_diagonal_(0.0)
    rk, rl = k.sum(1), lm.sum(1)
    return ((k * lm).sum() + rk.sum() * rl.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (rk @ rl)) / (n * (n - 3))


@single_threaded
def hsic1(x: Any, y: Any) -> float:
    """Unbiased HSIC estimator ``HSIC_1`` (Song et al. 2012) of linear-kernel Grams ``XX^T``, ``YY^T``.

    Needs N >= 4. Computed in O(N D_x D_y) feature form when D < N (``tr(K~L~) = ||X^T Y||_F^2 -
    sum_i |x_i|^2 |y_i|^2``), else from the N x N Grams.
    """
    a, b = _pair(x, y, min_rows=4)
    return float(_hsic1_from(_HsicStats(a), _HsicStats(b)))


# ---------------------------------------------------------------------------------- CKA


@single_threaded
def linear_cka(x: Any, y: Any, unbiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019, arXiv 1905.00414).

    Biased: ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred ``X_c, Y_c``
    (feature-space form, used when it is cheaper, i.e. when ``N (D_x D_y + D_x^2 + D_y^2) <= N^2 (D_x + D_y)``),
    else ``<HKH, HLH> / (||HKH|| ||HLH||)`` from the Grams. ``unbiased=True`` uses ``HSIC_1`` (Song et al.
    2012; Nguyen et al. 2021), needs N >= 4, and is also evaluated in feature form when D < N.
    Invariant to orthogonal transforms and isotropic scaling of either argument; CKA(X, X) = 1.
    For a constant representation (zero variance: every row equal) CKA is 0/0, undefined: the result
    is NaN with a ``RuntimeWarning`` (also for every other CKA variant here).
    """
    a, b = _pair(x, y, min_rows=4 if unbiased else 2)
    if unbiased:
        sa, sb = _HsicStats(a), _HsicStats(b)
        num = _hsic1_from(sa, sb)
        den = (_hsic1_from(sa, sa) * _hsic1_from(sb, sb)).clamp_min(0.0).sqrt()
        return _ratio(num, den)
    n, dx, dy = a.shape[0], a.shape[1], b.shape[1]
    a, b = _center(a), _center(b)
    with caller_threads(2.0 * n * min(dx * dy + dx * dx + dy * dy, n * (dx + dy))):
        if dx * dy + dx * dx + dy * dy <= n * (dx + dy):
            num = (b.T @ a).square().sum()
            den = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
        else:
            k, lm = a @ a.T, b @ b.T
            num = (k * lm).sum()
            den = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(lm)
    return _ratio(num, den)


def _rbf_gram(x: Tensor, sigma_frac: float) -> Tensor:
    with caller_threads(2.0 * x.shape[0] * x.numel()):
        dots = x @ x.T
    sq = torch.diagonal(dots)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * dots).clamp_min_(0.0)
    # As Kornblith et al.'s reference code: sigma^2 = frac^2 * median of all N^2 squared distances
    # (diagonal zeros included), i.e. sigma = frac * median pairwise distance.
    med = torch.quantile(d2.flatten().to(torch.float64 if d2.numel() < 16_000_000 else d2.dtype), 0.5).to(d2.dtype)
    if float(med) <= 0.0:
        return torch.ones_like(d2)
    return torch.exp(-d2 / (2.0 * sigma_frac**2 * med))


def _center_gram(k: Tensor) -> Tensor:
    mr = k.mean(0)
    return k - mr[None, :] - mr[:, None] + mr.mean()


@single_threaded
def rbf_cka(x: Any, y: Any, sigma_frac: float = 0.5, unbiased: bool = False) -> float:
    """CKA with Gaussian RBF kernels (Kornblith et al. 2019, arXiv 1905.00414).

    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with ``sigma = sigma_frac * median pairwise distance``
    (median over all N^2 entries of the distance matrix, as in the authors' reference code).
    Biased HSIC by default; ``unbiased=True`` uses ``HSIC_1`` (N >= 4). O(N^2) memory. NaN (with a
    ``RuntimeWarning``) when a representation is constant, as :func:`linear_cka`.
    """
    if sigma_frac <= 0:
        raise PhenomlabError(f"sigma_frac must be > 0, got {sigma_frac}")
    a, b = _pair(x, y, min_rows=4 if unbiased else 2)
    if bool((a == a[:1]).all()) or bool((b == b[:1]).all()):
        _undefined()
        return math.nan
    k, lm = _rbf_gram(a, sigma_frac), _rbf_gram(b, sigma_frac)
    if unbiased:
        num = _hsic1_gram(k, lm)
        den = (_hsic1_gram(k, k) * _hsic1_gram(lm, lm)).clamp_min(0.0).sqrt()
        return _ratio(num, den)
    kc, lc = _center_gram(k), _center_gram(lm)
    num = (kc * lc).sum()
    den = torch.linalg.matrix_norm(kc) * torch.linalg.matrix_norm(lc)
    return _ratio(num, den)


# ---------------------------------------------------------------------------------- minibatch CKA


class MinibatchCKA:
    """Accumulates minibatch linear CKA for every pair of layers (Nguyen, Raghu, Kornblith 2021).

    ``CKA_mb(i, j) = sum_b HSIC_1(K_i^b, L_j^b) / sqrt(sum_b HSIC_1(K_i^b, K_i^b) sum_b HSIC_1(L_j^b, L_j^b))``
    over minibatches ``b`` (arXiv 2010.15327, Eq. 3). Call :meth:`update` with the features of one batch
    (``{layer: [B, ...]}`` for each side, same examples), then :meth:`compute`. Batches with fewer than
    4 examples (``HSIC_1`` is undefined there) are skipped and counted in ``skipped``.
    """

    def __init__(self) -> None:
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self.cross: Tensor | None = None
        self.self_a: Tensor | None = None
        self.self_b: Tensor | None = None
        self.batches = 0
        self.skipped = 0

    @single_threaded
    def update(self, feats_a: Mapping[str, Any], feats_b: Mapping[str, Any]) -> None:
        xs = {k: _rep(v, f"feats_a[{k!r}]", 1) for k, v in feats_a.items()}
        ys = {k: _rep(v, f"feats_b[{k!r}]", 1) for k, v in feats_b.items()}
        if not xs or not ys:
            raise PhenomlabError("feats_a and feats_b must each hold at least one layer")
        if self.names_a is None:
            self.names_a, self.names_b = list(xs), list(ys)
        elif list(xs) != self.names_a or list(ys) != self.names_b:
            raise PhenomlabError("every update must pass the same layer names in the same order")
        n = {t.shape[0] for t in (*xs.values(), *ys.values())}
        if len(n) != 1:
            raise PhenomlabError(f"all layers of a batch must have the same number of examples, got {sorted(n)}")
        if n.pop() < 4:
            self.skipped += 1
            return
        ref = next(iter(xs.values()))
        dtype = torch.promote_types(ref.dtype, torch.float32)
        sa = [_HsicStats(t.to(device=ref.device, dtype=dtype)) for t in xs.values()]
        sb = [_HsicStats(t.to(device=ref.device, dtype=dtype)) for t in ys.values()]
        cross = torch.empty(len(sa), len(sb), dtype=dtype, device=ref.device)
        if all(s.gram is not None for s in (*sa, *sb)):
            # All-pairs tr(K~_i L~_j) as one GEMM of the flattened Grams.
            ga = torch.stack([s.gram.flatten() for s in sa])  # type: ignore[union-attr]
            gb = torch.stack([s.gram.flatten() for s in sb])  # type: ignore[union-attr]
            with caller_threads(2.0 * ga.numel() * gb.shape[0]):
                traces = ga @ gb.T
            for i, s in enumerate(sa):
                for j, t in enumerate(sb):
                    cross[i, j] = _hsic1_from(s, t, traces[i, j])
        else:
            for i, s in enumerate(sa):
                for j, t in enumerate(sb):
                    cross[i, j] = _hsic1_from(s, t)
        self_a = torch.stack([_hsic1_from(s, s) for s in sa])
        self_b = torch.stack([_hsic1_from(t, t) for t in sb])
        if self.cross is None:
            self.cross, self.self_a, self.self_b = cross, self_a, self_b
        else:
            assert self.self_a is not None and self.self_b is not None
            self.cross += cross
            self.self_a += self_a
            self.self_b += self_b
        self.batches += 1

    def compute(self) -> Tensor:
        """``[len(feats_a), len(feats_b)]`` CKA matrix; rows/columns in the order of the first update.

        An entry whose accumulated self-HSIC is zero (a layer constant within every batch) is NaN, with a
        ``RuntimeWarning``.
        """
        if self.cross is None or self.self_a is None or self.self_b is None:
            raise PhenomlabError("no batch with >= 4 examples was added")
        den = (self.self_a[:, None] * self.self_b[None, :]).clamp_min(0.0).sqrt()
        ok = den > 0
        if not bool(ok.all()):
            _undefined(int((~ok).sum()))
        return torch.where(ok, self.cross / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(den, math.nan))


def minibatch_cka(x: Any, y: Any | None = None, batch_size: int | None = None) -> float:
    """Minibatch linear CKA from unbiased HSIC accumulated over batches (Nguyen et al. 2021, arXiv 2010.15327).

    Either ``minibatch_cka(pairs)`` with an iterable of ``(X_b, Y_b)`` batches, or
    ``minibatch_cka(X, Y, batch_size)`` which splits the rows in order. A final batch with fewer than 4
    rows is skipped. With a single batch this equals ``linear_cka(X, Y, unbiased=True)``.
    """
    if y is not None:
        if batch_size is None:
            raise PhenomlabError("batch_size is required when X and Y are given as tensors")
        return float(cka_matrix({"X": x}, {"Y": y}, batch_size=batch_size)[0, 0])
    acc = MinibatchCKA()
    for xb, yb in x:
        acc.update({"x": xb}, {"y": yb})
    return float(acc.compute()[0, 0])


def _layers(feats_a: Mapping[str, Any], feats_b: Mapping[str, Any]) -> tuple[list[Tensor], list[Tensor], int]:
    if not feats_a or not feats_b:
        raise PhenomlabError("feats_a and feats_b must each hold at least one layer")
    xs = [_rep(v, f"feats_a[{k!r}]") for k, v in feats_a.items()]
    ys = [_rep(v, f"feats_b[{k!r}]") for k, v in feats_b.items()]
    n = {t.shape[0] for t in (*xs, *ys)}
    if len(n) != 1:
        raise PhenomlabError(f"all layers must have the same number of examples, got {sorted(n)}")
    return xs, ys, n.pop()


def cka_matrix(
    feats_a: Mapping[str, Any],
    feats_b: Mapping[str, Any],
    kernel: str = "linear",
    unbiased: bool = False,
    batch_size: int | None = None,
    sigma_frac: float = 0.5,
) -> Tensor:
    """CKA (Kornblith et al. 2019, arXiv 1905.00414) between every layer of ``feats_a`` (rows) and ``feats_b``.

    ``feats_*`` map layer names to ``[N, ...]`` features of the same N examples (e.g. the output of
    :func:`phenomlab.probes.features`). ``kernel`` is ``"linear"`` or ``"rbf"``; with
    ``batch_size`` the linear minibatch estimator (unbiased HSIC, :class:`MinibatchCKA`) is used instead.
    The matrix is float64 on the CPU whichever path computed it and wherever the features live.
    """
    if kernel not in ("linear", "rbf"):
        raise PhenomlabError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    xs, ys, n = _layers(feats_a, feats_b)
    if batch_size is not None:
        if kernel != "linear":
            raise PhenomlabError("minibatch CKA is implemented for the linear kernel only")
        if batch_size < 4:
            raise PhenomlabError(f"batch_size must be >= 4 (HSIC_1 needs 4 examples), got {batch_size}")
        acc = MinibatchCKA()
        for start in range(0, n, batch_size):
            acc.update(
                {k: v[start : start + batch_size] for k, v in zip(feats_a, xs, strict=True)},
                {k: v[start : start + batch_size] for k, v in zip(feats_b, ys, strict=True)},
            )
        return acc.compute().to("cpu", torch.float64)
    fn = linear_cka if kernel == "linear" else rbf_cka
    kw: dict[str, Any] = {"unbiased": unbiased}
    if kernel == "rbf":
        kw["sigma_frac"] = sigma_frac
    if kernel == "linear" and not unbiased:
        return _linear_cka_matrix(xs, ys)
    out = torch.empty(len(xs), len(ys), dtype=torch.float64)
    for i, xa in enumerate(xs):
        for j, yb in enumerate(ys):
            out[i, j] = fn(xa, yb, **kw)
    return out


def _linear_cka_stats(ts: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """Each layer centred, with its self-norm ``||X_c^T X_c||_F``: computed once per net, not once per pair."""

    def self_norm(t: Tensor) -> Tensor:
        with caller_threads(2.0 * t.numel() * min(t.shape)):
            if t.shape[1] <= t.shape[0]:
                return torch.linalg.matrix_norm(t.T @ t)
            return torch.linalg.matrix_norm(t @ t.T)

    centred = [_center(t) for t in ts]
    return [(t, self_norm(t)) for t in centred]


def _linear_cka_from(sa: list[tuple[Tensor, Tensor]], sb: list[tuple[Tensor, Tensor]]) -> Tensor:
    out = torch.empty(len(sa), len(sb), dtype=torch.float64)
    for i, (a, na) in enumerate(sa):
        for j, (b, nb) in enumerate(sb):
            dtype = torch.promote_types(a.dtype, b.dtype)
            a2, b2 = a.to(dtype), b.to(device=a.device, dtype=dtype)
            with caller_threads(
                2.0 * a.shape[0] * min(a.shape[1] * b.shape[1], a.shape[0] * (a.shape[1] + b.shape[1]))
            ):
                # ||Y^T X||_F^2 = <XX^T, YY^T>: pick the cheaper side.
                if a.shape[1] * b.shape[1] <= a.shape[0] * (a.shape[1] + b.shape[1]):
                    num = (b2.T @ a2).square().sum()
                else:
                    num = ((a2 @ a2.T) * (b2 @ b2.T)).sum()
            out[i, j] = _ratio(num, na * nb)
    return out


@single_threaded
def _linear_cka_matrix(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    return _linear_cka_from(_linear_cka_stats(xs), _linear_cka_stats(ys))


def _net_pairs(n: int, pairs: Iterable[tuple[int, int]] | None) -> list[tuple[int, int]]:
    out = list(itertools.permutations(range(n), 2)) if pairs is None else [(int(a), int(b)) for a, b in pairs]
    for a, b in out:
        if not (0 <= a < n and 0 <= b < n) or a == b:
            raise PhenomlabError(f"pairs must hold two different net indices in [0, {n}), got ({a}, {b})")
    return out


def _nets(feats: Sequence[Mapping[str, Any]]) -> list[list[Tensor]]:
    if len(feats) < 2:
        raise PhenomlabError(f"need the features of at least 2 nets, got {len(feats)}")
    # every net's layers must hold the same examples as net 0's
    return [_layers(f, feats[0])[0] for f in feats]


@single_threaded
def cka_matrices(
    feats: Sequence[Mapping[str, Any]], pairs: Iterable[tuple[int, int]] | None = None
) -> dict[tuple[int, int], Tensor]:
    """Linear CKA matrices (:func:`cka_matrix`, biased; Kornblith et al. 2019, arXiv 1905.00414) between the layers of
    several nets, e.g. one architecture trained from different seeds: ``{(a, b): cka_matrix(feats[a], feats[b])}``
    for every ordered pair of nets (or the given ``pairs``), equal to it bit for bit. Each net's centred layers and
    self-norms are computed once instead of once per pair (cost: docs/PROBES.md)."""
    nets = _nets(feats)
    todo = _net_pairs(len(nets), pairs)
    stats = {k: _linear_cka_stats(nets[k]) for k in sorted({k for p in todo for k in p})}
    return {(a, b): _linear_cka_from(stats[a], stats[b]) for a, b in todo}


# ---------------------------------------------------------------------------------- CCA family


def _orthobasis(x: Tensor, tol: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """Left singular vectors of the centred ``x`` spanning its numerical range, with s and V^T."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        raise PhenomlabError("representation is constant (rank 0); CCA is undefined")
    if tol is None:
        tol = max(x.shape) * torch.finfo(x.dtype).eps
    keep = s > tol * s[0]
    return u[:, keep], s[keep], vh[keep]


@single_threaded
def cca(x: Any, y: Any, tol: float | None = None) -> Tensor:
    """Canonical correlations between the columns of ``X`` and ``Y`` (descending, in [0, 1]).

    Hotelling 1936; applied to network representations by Raghu et al. 2017 (SVCCA, arXiv 1706.05806).

    The cosines of the principal angles between the centred column spaces: with ``U_x, U_y``
    orthonormal bases (SVD, directions with ``s_i <= tol * s_max`` dropped, default ``max(N, D) * eps``),
    ``rho = svdvals(U_x^T U_y)``; there are ``min(rank X, rank Y)`` of them.
    """
    a, b = _pair(x, y)
    ux, _, _ = _orthobasis(_center(a), tol)
    uy, _, _ = _orthobasis(_center(b), tol)
    return torch.linalg.svdvals(ux.T @ uy).clamp_(0.0, 1.0)


def _cca_bases(ts: list[Tensor], tol: float | None) -> list[Tensor]:
    # float64 throughout: the bases of wide layers lose the small canonical correlations in float32
    return [_orthobasis(_center(t.double()), tol)[0] for t in ts]


def _cca_from(ua: list[Tensor], ub: list[Tensor]) -> Tensor:
    out = torch.empty(len(ua), len(ub), dtype=torch.float64)
    for i, a in enumerate(ua):
        for j, b in enumerate(ub):
            out[i, j] = float(torch.linalg.svdvals(a.T @ b.to(a.device)).clamp_(0.0, 1.0).mean())
    return out


@single_threaded
def cca_matrix(feats_a: Mapping[str, Any], feats_b: Mapping[str, Any], tol: float | None = None) -> Tensor:
    """Mean canonical correlation ``rho_bar`` (the mean of :func:`cca`) between every layer of ``feats_a`` (rows)
    and every layer of ``feats_b`` (columns), each layer's orthonormal basis computed once.

    ``rho_bar`` is invariant to invertible linear maps of either representation, so it is 1 for any two layers
    whose width reaches the number of examples (Kornblith, Norouzi, Lee, Hinton 2019, arXiv 1905.00414, Thm 1):
    keep N well above the widths compared.
    """
    xs, ys, _ = _layers(feats_a, feats_b)
    return _cca_from(_cca_bases(xs, tol), _cca_bases(ys, tol))


@single_threaded
def cca_matrices(
    feats: Sequence[Mapping[str, Any]], pairs: Iterable[tuple[int, int]] | None = None, tol: float | None = None
) -> dict[tuple[int, int], Tensor]:
    """Mean-CCA matrices between the layers of several nets: ``{(a, b): cca_matrix(feats[a], feats[b])}`` for every
    ordered pair (or the given ``pairs``), equal to it bit for bit, with each net's orthonormal bases (an SVD per
    layer, the dominant cost) computed once instead of once per pair."""
    nets = _nets(feats)
    todo = _net_pairs(len(nets), pairs)
    bases = {k: _cca_bases(nets[k], tol) for k in sorted({k for p in todo for k in p})}
    return {(a, b): _cca_from(bases[a], bases[b]) for a, b in todo}


def _svd_reduce(x: Tensor, keep: float | int) -> Tensor:
    u, s, _ = _orthobasis(_center(x), None)
    if isinstance(keep, bool) or keep <= 0:
        raise PhenomlabError(f"keep must be a variance fraction in (0, 1] or a positive int, got {keep!r}")
    if isinstance(keep, int):
        k = min(keep, s.numel())
    elif keep <= 1.0:
        frac = torch.cumsum(s.square(), 0) / s.square().sum()
        k = int(torch.searchsorted(frac, torch.tensor(keep, dtype=frac.dtype, device=frac.device) - 1e-12)) + 1
        k = min(k, s.numel())
    else:
        raise PhenomlabError(f"a float keep must lie in (0, 1], got {keep}")
    return u[:, :k] * s[:k]


@single_threaded
def svcca(x: Any, y: Any, keep: float | int = 0.99) -> float:
    """SVCCA similarity (Raghu et al. 2017, arXiv 1706.05806): mean canonical correlation after SVD reduction.

    Each centred representation is projected on its top singular directions: the fewest explaining a
    fraction ``keep`` of the variance (float) or the top ``keep`` (int); then CCA between the two.
    """
    a, b = _pair(x, y)
    ra, rb = _svd_reduce(a, keep), _svd_reduce(b, keep)
    return float(cca(ra, rb).mean())


@single_threaded
def pwcca(x: Any, y: Any, tol: float | None = None) -> float:
    """Projection-weighted CCA (Morcos, Raghu, Bengio 2018, arXiv 1806.05759).

    ``PWCCA = sum_i alpha_i rho_i / sum_i alpha_i`` with ``alpha_i = sum_j |<h_i, x_j>|``: ``h_i`` the
    i-th (unit-norm) canonical variate of ``X`` and ``x_j`` the j-th centred neuron (column) of ``X``.
    Asymmetric: weights come from the first argument, as in the authors' code.
    """
    a, b = _pair(x, y)
    a = _center(a)
    ux, _, _ = _orthobasis(a, tol)
    uy, _, _ = _orthobasis(_center(b), tol)
    p, rho, _ = torch.linalg.svd(ux.T @ uy, full_matrices=False)
    h = ux @ p  # canonical variates of X, orthonormal columns, aligned with rho
    alpha = (h.T @ a).abs().sum(1)
    alpha = alpha[: rho.numel()]
    return float((alpha * rho.clamp(0.0, 1.0)).sum() / alpha.sum())
