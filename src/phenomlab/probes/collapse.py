"""Neural collapse (NC1-NC4), class-distance normalised variance and nearest-class-centre probes.

References
----------
- V. Papyan, X.Y. Han, D. Donoho (2020), "Prevalence of neural collapse during the terminal phase
  of deep learning training", PNAS, arXiv 2008.08186 (NC1-NC4).
- T. Galanti, A. Gyorgy, M. Hutter (2022), "On the role of neural collapse in transfer learning",
  ICLR, arXiv 2112.15121 (CDNV, few-shot NCC error).

Notation: features ``X`` are ``[N, D]``, labels ``y`` are ``[N]`` with ``C`` distinct classes,
``mu_c`` the class means, ``mu_G`` the global (sample) mean and ``M`` the ``C x D`` matrix of centred
class means ``mu_c - mu_G``.

    Sw = 1/N sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T      Sb = 1/C sum_c (mu_c - mu_G)(mu_c - mu_G)^T

Every function is pure, takes numpy arrays or tensors of any float dtype (float64 included) on any
device, and computes from class sums (``index_add_``) and a handful of GEMMs: no Python loop runs
over samples, classes or pairs of classes. Labels may be any non-negative integers; they need not
be contiguous (classes are the sorted distinct label values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor, check_features_labels, check_same_length
from phenomlab.probes._threads import caller_threads, single_threaded
from phenomlab.probes.activations import collect

__all__ = [
    "class_means",
    "within_between_covariance",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "cdnv",
    "ncc_accuracy",
    "ncc_predict",
    "few_shot_ncc_error",
    "collapse_metrics",
    "NeuralCollapse",
    "neural_collapse",
]


@dataclass
class _Stats:
    x: Tensor  # [N, D]
    y: Tensor  # [N] contiguous class index 0..C-1
    classes: Tensor  # [C] original label values
    counts: Tensor  # [C] (float, x.dtype)
    means: Tensor  # [C, D]
    mu_g: Tensor  # [D]


def _encode_labels(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(classes, y, counts)``: sorted distinct label values, labels as 0..C-1 indices, class sizes."""
    hi = int(labels.max())
    if hi <= 4 * labels.numel() + 1024:
        # bincount + lookup table: O(N + max label), much cheaper than torch.unique's sort.
        full = torch.bincount(labels, minlength=hi + 1)
        present = full > 0
        classes = torch.nonzero(present).flatten()
        lookup = torch.cumsum(present.long(), 0) - 1
        return classes, lookup[labels], full[classes]
    classes, y, counts = torch.unique(labels, sorted=True, return_inverse=True, return_counts=True)
    return classes, y, counts


def _stats(features: Any, labels: Any, min_classes: int = 2) -> _Stats:
    x, labels_t = check_features_labels(features, labels, min_classes=min_classes)
    classes, y, counts_long = _encode_labels(labels_t)
    counts = counts_long.to(x.dtype)
    sums = torch.zeros(classes.numel(), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, y, x)
    means = sums / counts[:, None]
    mu_g = sums.sum(0) / x.shape[0]
    return _Stats(x, y, classes, counts, means, mu_g)


@single_threaded
def class_means(features: Any, labels: Any) -> tuple[Tensor, Tensor]:
    """Per-class means ``mu_c = 1/n_c sum_{i: y_i = c} x_i``.

    Returns ``(means [C, D], classes [C])`` where ``classes`` are the sorted distinct labels, i.e.
    ``means[k]`` is the mean of class ``classes[k]``.
    """
    s = _stats(features, labels, min_classes=1)
    return s.means, s.classes


def _residuals(s: _Stats) -> Tensor:
    # x_i - mu_{y_i}: subtracting before any product keeps precision when features have collapsed
    # (within-class spread << ||mu_c||), where expanding ||x||^2 - ||mu||^2 would cancel catastrophically.
    return s.x - s.means.index_select(0, s.y)


@single_threaded
def within_between_covariance(features: Any, labels: Any) -> tuple[Tensor, Tensor]:
    """Within- and between-class covariances ``(Sw, Sb)``, each ``[D, D]`` (Papyan et al. 2020).

    ``Sw = R^T R / N`` with ``R = X - mu_y`` (one GEMM), ``Sb = M^T M / C``.
    """
    s = _stats(features, labels)
    r = _residuals(s)
    with caller_threads(2.0 * r.shape[0] * r.shape[1] ** 2):
        sw = r.T @ r / s.x.shape[0]
    m = s.means - s.mu_g
    sb = m.T @ m / m.shape[0]
    return sw, sb


def _mean_space_eig(m: Tensor) -> tuple[Tensor, Tensor]:
    """Nonzero eigenpairs ``(lam, V)`` of the C x C Gram ``G = M M^T / C`` of the centred means.

    ``G`` and ``Sb = M^T M / C`` share their nonzero eigenvalues, and ``Sb``'s eigenvectors are
    ``u_k = M^T v_k / sqrt(C lam_k)``; hence ``Sb^+ = U U^T`` with ``U = M^T V diag(lam)^-1 / sqrt(C)``.
    The cutoff matches ``torch.linalg.pinv``'s default (``max(C, D) * eps * lam_max``): centring makes
    ``Sb`` rank <= C - 1 and that null direction must be dropped.
    """
    c, d = m.shape
    lam, v = torch.linalg.eigh(m @ m.T / c)
    rtol = max(c, d) * torch.finfo(m.dtype).eps
    keep = lam > rtol * lam.max().clamp_min(torch.finfo(m.dtype).tiny)
    return lam[keep], v[:, keep]


def _nc1_from(s: _Stats, r: Tensor, q: Tensor | None = None) -> float:
    # tr(Sw Sb^+) = tr(U^T Sw U) = 1/N ||R U||_F^2 with R U = (R M^T) V lam^-1 / sqrt(C): the N x C
    # product R M^T costs C/D of the D x D Sw GEMM, and the identity is exact.
    m = s.means - s.mu_g
    c = m.shape[0]
    lam, v = _mean_space_eig(m)
    if q is None:
        with caller_threads(2.0 * r.numel() * m.shape[0]):
            q = r @ m.T
    z = (q @ v) / (lam * c**0.5)
    return float(z.square().sum() / r.shape[0] / c)


@single_threaded
def nc1(features: Any, labels: Any) -> float:
    """NC1 = tr(Sw Sb^+) / C (Papyan, Han, Donoho 2020, arXiv 2008.08186).

    Within-class variability relative to between-class separation; 0 at full collapse.
    ``Sb^+`` is obtained from the eigendecomposition of the C x C Gram of the centred means
    (``Sb`` has rank <= C - 1), never from a D x D pseudo-inverse.
    """
    s = _stats(features, labels)
    return _nc1_from(s, _residuals(s))


def _nc2_from(s: _Stats) -> dict[str, float]:
    m = s.means - s.mu_g
    c = m.shape[0]
    norms = torch.linalg.vector_norm(m, dim=1)
    mn = m / norms.clamp_min(torch.finfo(m.dtype).tiny)[:, None]
    cos = mn @ mn.T
    off = cos[~torch.eye(c, dtype=torch.bool, device=m.device)]
    target = -1.0 / (c - 1)
    return {
        "equinorm_cv": float(norms.std(correction=0) / norms.mean()),
        "cos_mean": float(off.mean()),
        "cos_std": float(off.std(correction=0)) if off.numel() > 1 else 0.0,
        "max_angle_dev": float((off - target).abs().max()),
        "target": target,
    }


@single_threaded
def nc2(features: Any, labels: Any) -> dict[str, float]:
    """NC2: convergence of the centred class means to a simplex equiangular tight frame.

    With ``m_c = mu_c - mu_G`` (Papyan et al. 2020, arXiv 2008.08186):

    - ``equinorm_cv`` = std_c ||m_c|| / mean_c ||m_c|| (0 for equal norms),
    - ``cos_mean``, ``cos_std``: mean and std of cos(m_c, m_c') over c != c',
    - ``max_angle_dev`` = max_{c != c'} |cos(m_c, m_c') + 1/(C-1)|,
    - ``target`` = -1/(C-1), the simplex-ETF cosine.

    Standard deviations are population (``correction=0``).
    """
    return _nc2_from(_stats(features, labels))


def _classifier_rows(weight: Any, s: _Stats) -> Tensor:
    w = as_float_tensor(weight, "weight").to(device=s.x.device, dtype=s.x.dtype)
    c, d = s.means.shape
    if w.ndim != 2 or w.shape[1] != d:
        raise PhenomlabError(f"weight must be [K, D] with D = {d} (nn.Linear layout), got shape {tuple(w.shape)}")
    if w.shape[0] == c:
        return w
    if w.shape[0] > int(s.classes.max()):
        # Rows are indexed by label value: keep the rows of the classes present.
        return w.index_select(0, s.classes)
    raise PhenomlabError(f"weight has {w.shape[0]} rows but labels have {c} classes (max label {int(s.classes.max())})")


def _nc3_from(s: _Stats, weight: Any) -> float:
    w = _classifier_rows(weight, s)
    m = s.means - s.mu_g
    wn = w / torch.linalg.matrix_norm(w)
    mn = m / torch.linalg.matrix_norm(m)
    return float(torch.linalg.matrix_norm(wn - mn))


@single_threaded
def nc3(features: Any, labels: Any, weight: Any) -> float:
    """NC3 (self-duality) = || W/||W||_F - M/||M||_F ||_F (Papyan et al. 2020, arXiv 2008.08186).

    ``weight`` is the last-layer classifier in ``nn.Linear`` layout ``[K, D]``; with ``K = C`` row k
    belongs to the k-th sorted class, with ``K > max(label)`` row ``label`` is used. 0 when
    ``W`` is proportional to the centred class means; at most 2.
    """
    return _nc3_from(_stats(features, labels), weight)


def _ncc_scores(x: Tensor, means: Tensor, mu_g: Tensor) -> Tensor:
    # argmin_c ||x - mu_c||^2 = argmax_c <x - mu_G, mu_c - mu_G> - ||mu_c - mu_G||^2 / 2; centring at mu_G
    # keeps the scores at the between-class scale.
    m = means - mu_g
    with caller_threads(2.0 * x.numel() * m.shape[0]):
        p = (x - mu_g) @ m.T
    return p - 0.5 * m.square().sum(1)


@single_threaded
def ncc_predict(features: Any, means: Any, classes: Any | None = None) -> Tensor:
    """Nearest-class-centre prediction: ``argmin_c ||x - mu_c||_2`` (returns label values if ``classes``)."""
    x = as_float_tensor(features, "features")
    mu = as_float_tensor(means, "means").to(device=x.device, dtype=x.dtype)
    if x.ndim != 2 or mu.ndim != 2 or x.shape[1] != mu.shape[1]:
        raise PhenomlabError(
            f"features [N, D] and means [C, D] must share D, got {tuple(x.shape)} and {tuple(mu.shape)}"
        )
    pred = _ncc_scores(x, mu, mu.mean(0)).argmax(1)
    if classes is not None:
        pred = torch.as_tensor(classes, device=pred.device)[pred]
    return pred


def _logit_predictions(logits: Any, s: _Stats) -> Tensor:
    lg = as_float_tensor(logits, "logits")
    n = s.x.shape[0]
    if lg.ndim != 2:
        raise PhenomlabError(f"logits must be [N, K], got shape {tuple(lg.shape)}")
    if lg.shape[0] != n:
        raise PhenomlabError(f"features and logits have different lengths: {n} != {lg.shape[0]}")
    top = int(s.classes.max())
    if lg.shape[1] <= top:
        raise PhenomlabError(
            f"logits have {lg.shape[1]} columns but the labels go up to {top} (column c scores class c)"
        )
    return lg.argmax(1).to(s.x.device)


def _nc4_from(s: _Stats, r: Tensor, logits: Any, q: Tensor | None = None) -> float:
    net = _logit_predictions(logits, s)
    ncc = s.classes[_ncc_from_residuals(s, r, q).argmax(1)]
    return float((ncc == net).to(s.x.dtype).mean())


def _ncc_from_residuals(s: _Stats, r: Tensor, q: Tensor | None) -> Tensor:
    # x - mu_G = r + m_y, so <x - mu_G, m_c> = (R M^T)[i, c] + (M M^T)[y_i, c]: reuses the N x C
    # product already needed for NC1 instead of a second N x D x C GEMM.
    m = s.means - s.mu_g
    if q is None:
        with caller_threads(2.0 * r.numel() * m.shape[0]):
            q = r @ m.T
    gram = m @ m.T
    return q + gram.index_select(0, s.y) - 0.5 * torch.diagonal(gram)


@single_threaded
def nc4(features: Any, labels: Any, logits: Any) -> float:
    """NC4: fraction of samples where the nearest-class-centre rule agrees with ``argmax(logits)``.

    Papyan et al. 2020 (arXiv 2008.08186). Class centres are the class means of ``features``;
    ``logits`` columns are indexed by label value.
    """
    s = _stats(features, labels)
    return _nc4_from(s, _residuals(s), logits)


def _cdnv_from(s: _Stats, r: Tensor, reduce: str) -> float | Tensor:
    c = s.means.shape[0]
    # vector_norm streams over r without materialising r**2.
    sq_res = torch.linalg.vector_norm(r, dim=1).square()
    var = torch.zeros(c, dtype=s.x.dtype, device=s.x.device).index_add_(0, s.y, sq_res) / s.counts
    # Pairwise ||mu_i - mu_j||^2 from the differences themselves: the Gram form |a|^2 + |b|^2 - 2 a.b cancels
    # catastrophically in float32 when two means are close relative to their norms (it returned inf).
    d2 = torch.cdist(s.means, s.means, compute_mode="donot_use_mm_for_euclid_dist").square()
    eye = torch.eye(c, dtype=torch.bool, device=s.x.device)
    d2 = d2.masked_fill(eye, 1.0)
    mat = (var[:, None] + var[None, :]) / (2.0 * d2)
    mat = mat.masked_fill(eye, 0.0)
    if reduce == "none":
        return mat
    return float(mat.sum() / (c * (c - 1)))


@single_threaded
def cdnv(features: Any, labels: Any, reduce: str = "mean") -> float | Tensor:
    """Class-distance normalised variance (Galanti, Gyorgy, Hutter 2022, arXiv 2112.15121).

    ``V(i, j) = (Var_i + Var_j) / (2 ||mu_i - mu_j||^2)`` with ``Var_c = 1/n_c sum_{y=c} ||x - mu_c||^2``.
    ``reduce="mean"`` averages over ordered pairs i != j (a float); ``reduce="none"`` returns the
    ``[C, C]`` matrix (zero diagonal, where it is undefined). Coinciding means give ``inf`` (``nan`` when both
    classes also have zero variance, 0 / 0).
    """
    if reduce not in ("mean", "none"):
        raise PhenomlabError(f"reduce must be 'mean' or 'none', got {reduce!r}")
    s = _stats(features, labels)
    return _cdnv_from(s, _residuals(s), reduce)


@single_threaded
def ncc_accuracy(features: Any, labels: Any, test_features: Any | None = None, test_labels: Any | None = None) -> float:
    """Accuracy of the nearest-class-centre classifier ``argmin_c ||x - mu_c||``.

    Centres are the class means of ``(features, labels)``; accuracy is measured on
    ``(test_features, test_labels)`` if given, else on the first set (Galanti et al. 2022,
    arXiv 2202.09028 / 2112.15121). Test labels unseen in the first set count as errors.
    """
    s = _stats(features, labels, min_classes=1)
    if (test_features is None) != (test_labels is None):
        raise PhenomlabError("give both test_features and test_labels, or neither")
    if test_features is None:
        pred = _ncc_scores(s.x, s.means, s.mu_g).argmax(1)
        return float((pred == s.y).to(s.x.dtype).mean())
    xt, yt = check_features_labels(test_features, test_labels, min_classes=1)
    if xt.shape[1] != s.x.shape[1]:
        raise PhenomlabError(f"test_features have dimension {xt.shape[1]}, features have {s.x.shape[1]}")
    xt = xt.to(device=s.x.device, dtype=s.x.dtype)
    pred = s.classes[_ncc_scores(xt, s.means, s.mu_g).argmax(1)]
    return float((pred == yt.to(pred.device)).to(s.x.dtype).mean())


@single_threaded
def few_shot_ncc_error(
    features: Any,
    labels: Any,
    shots: int = 5,
    ways: int | None = None,
    episodes: int = 100,
    queries: int | None = None,
    seed: int = 0,
) -> float:
    """Mean few-shot nearest-class-centre error over random episodes (Galanti et al. 2022, arXiv 2112.15121).

    Each episode draws ``ways`` classes (default: all eligible), ``shots`` support samples per class
    whose mean is the class centre, and classifies ``queries`` other samples per class (default:
    all remaining) by the nearest centre among the episode's classes. Eligible classes have at
    least ``shots + (queries or 1)`` samples. Returns the error averaged over episodes (each episode
    weighs its queries equally). Deterministic given ``seed``.
    """
    if shots < 1:
        raise PhenomlabError(f"shots must be >= 1, got {shots}")
    if episodes < 1:
        raise PhenomlabError(f"episodes must be >= 1, got {episodes}")
    if queries is not None and queries < 1:
        raise PhenomlabError(f"queries must be >= 1 or None, got {queries}")
    s = _stats(features, labels)
    x, y = s.x, s.y
    n, c = x.shape[0], s.counts.numel()
    need = shots + (queries if queries is not None else 1)
    eligible = torch.nonzero(s.counts >= need).flatten().cpu()
    if ways is None:
        ways = max(eligible.numel(), 2)
    if ways < 2:
        raise PhenomlabError(f"ways must be >= 2, got {ways}")
    if eligible.numel() < ways:
        raise PhenomlabError(f"only {eligible.numel()} classes have >= {need} samples; cannot draw {ways} ways")
    gen = torch.Generator().manual_seed(seed)
    counts_long = s.counts.long().cpu()
    starts = torch.cumsum(counts_long, 0) - counts_long
    y_cpu = y.cpu()
    errors = []
    for _ in range(episodes):
        chosen = eligible[torch.randperm(eligible.numel(), generator=gen)[:ways]]
        # Rank of each sample within its class under a random permutation: stable sort by class of
        # a random permutation, then subtract each class's start offset.
        perm = torch.randperm(n, generator=gen)
        order = perm[torch.sort(y_cpu[perm], stable=True).indices]
        rank = torch.empty(n, dtype=torch.long)
        rank[order] = torch.arange(n) - starts[y_cpu[order]]
        in_episode = torch.zeros(c, dtype=torch.bool)
        in_episode[chosen] = True
        member = in_episode[y_cpu]
        support = member & (rank < shots)
        query = member & (rank >= shots)
        if queries is not None:
            query &= rank < shots + queries
        local = torch.full((c,), -1, dtype=torch.long)
        local[chosen] = torch.arange(ways)
        sup_idx = torch.nonzero(support).flatten().to(x.device)
        q_idx = torch.nonzero(query).flatten().to(x.device)
        local_d = local.to(x.device)
        centres = torch.zeros(ways, x.shape[1], dtype=x.dtype, device=x.device)
        centres.index_add_(0, local_d[y[sup_idx]], x.index_select(0, sup_idx))
        centres /= shots
        # Centring at the episode's mean centre keeps the scores at the between-class scale.
        mid = centres.mean(0)
        xq = x.index_select(0, q_idx) - mid
        cc = centres - mid
        with caller_threads(2.0 * xq.numel() * cc.shape[0]):
            dots = xq @ cc.T
        # Full squared distances, so that ties break exactly as a direct argmin of distances would.
        d2 = xq.square().sum(1, keepdim=True) - 2.0 * dots + cc.square().sum(1)
        pred = d2.argmin(1)
        errors.append((pred != local_d[y[q_idx]]).to(x.dtype).mean())
    return float(torch.stack(errors).mean())


@single_threaded
def collapse_metrics(
    features: Any, labels: Any, weight: Any | None = None, logits: Any | None = None
) -> dict[str, Any]:
    """NC1, NC2, CDNV, NCC accuracy and (when given ``weight`` / ``logits``) NC3 / NC4 in one pass.

    Definitions in :func:`nc1` ... :func:`nc4` and :func:`cdnv` (Papyan, Han, Donoho 2020, arXiv 2008.08186;
    Galanti, Gyorgy, Hutter 2022, arXiv 2112.15121).

    Shares the class sums, the residuals ``X - mu_y`` and a single ``N x C`` product ``R M^T``
    between all metrics; each value equals the corresponding standalone function's.
    """
    s = _stats(features, labels)
    r = _residuals(s)
    m = s.means - s.mu_g
    with caller_threads(2.0 * r.numel() * m.shape[0]):
        q = r @ m.T
    out: dict[str, Any] = {"nc1": _nc1_from(s, r, q), "nc2": _nc2_from(s)}
    out["nc3"] = _nc3_from(s, weight) if weight is not None else None
    scores = _ncc_from_residuals(s, r, q)
    pred = scores.argmax(1)
    out["ncc_accuracy"] = float((pred == s.y).to(s.x.dtype).mean())
    if logits is not None:
        net = _logit_predictions(logits, s)
        out["nc4"] = float((s.classes[pred] == net).to(s.x.dtype).mean())
    else:
        out["nc4"] = None
    out["cdnv"] = _cdnv_from(s, r, "mean")
    return out


@dataclass
class NeuralCollapse:
    """Neural-collapse measurements of one layer (see :func:`neural_collapse`)."""

    layer: str
    nc1: float
    nc2: dict[str, float]
    nc3: float | None
    nc4: float | None
    cdnv: float
    ncc_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _find_classifier(model: nn.Module, dim: int, n_out: int | None) -> Tensor | None:
    found = None
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod.in_features == dim and (n_out is None or mod.out_features == n_out):
            found = mod.weight
    return found


def neural_collapse(
    model: nn.Module,
    data: tuple[Any, Any],
    layer: str,
    classifier: str | Tensor | None = None,
    batch_size: int | None = None,
) -> NeuralCollapse:
    """Measure NC1-NC4, CDNV and NCC accuracy of ``model``'s ``layer`` on ``data = (inputs, labels)``.

    Neural collapse (Papyan, Han, Donoho 2020, arXiv 2008.08186): ``NC1 = tr(Sw Sb^+) / C`` (:func:`nc1`), NC2 the
    centred class means' distance from a simplex equiangular tight frame (:func:`nc2`), ``NC3 = ||W/||W||_F -
    M/||M||_F||_F`` (:func:`nc3`), NC4 the agreement of the network's argmax with the nearest-class-centre rule
    (:func:`nc4`); CDNV as in :func:`cdnv` (Galanti, Gyorgy, Hutter 2022, arXiv 2112.15121). ``layer`` is a
    module name (``model.named_modules()``); ``inputs`` a tensor, a mapping of tensors or an iterable of batches,
    as in :func:`~phenomlab.probes.features`. NC4 compares with the model's output when it is ``[N, K]`` logits
    with ``K > max(label)``. NC3 uses ``classifier``: a module name (its ``.weight``), a ``[K, D]`` weight tensor,
    or ``None`` to use the last ``nn.Linear`` with ``in_features = D`` (and ``out_features = K`` when logits
    exist); NC3 is ``None`` if no classifier is found.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise PhenomlabError("data must be a tuple (inputs, labels)")
    inputs, labels = data
    if isinstance(inputs, Tensor):
        check_same_length(inputs, labels, ("inputs", "labels"))
    feats, out = collect(model, inputs, [layer], batch_size=batch_size, return_output=True)
    x = feats[layer]
    # a mapping (Hugging Face style) or an iterable of batches has no len() of rows: compare after the pass
    check_same_length(x, labels, ("inputs", "labels"))
    logits = None
    lab = torch.as_tensor(labels)
    if out is not None and out.ndim == 2 and out.shape[0] == x.shape[0] and out.shape[1] > int(lab.max()):
        logits = out
    if classifier is None:
        weight = _find_classifier(model, x.shape[1], None if logits is None else logits.shape[1])
    elif isinstance(classifier, str):
        mods = dict(model.named_modules())
        if classifier not in mods or not isinstance(getattr(mods[classifier], "weight", None), Tensor):
            raise PhenomlabError(f"classifier {classifier!r} is not a module with a weight; modules: {list(mods)[1:]}")
        weight = mods[classifier].weight
    else:
        weight = classifier
    if weight is not None:
        weight = weight.detach()
    return NeuralCollapse(layer=layer, **collapse_metrics(x, labels, weight=weight, logits=logits))
