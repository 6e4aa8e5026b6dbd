"""Generative-model metrics on features and class probabilities: FID, IS and their class-conditional forms.

References
----------
- M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter (2017), "GANs trained by a two
  time-scale update rule converge to a local Nash equilibrium", NeurIPS, arXiv 1706.08500 (FID).
- T. Salimans, I. Goodfellow, W. Zaremba, V. Cheung, A. Radford, X. Chen (2016), "Improved techniques
  for training GANs", NeurIPS, arXiv 1606.03498 (Inception Score).
- Y. Benny, T. Galanti, S. Benaim, L. Wolf (2021), "Evaluation metrics for conditional image
  generation", IJCV 129, arXiv 2004.12361 (BCIS / WCIS, BCFID / WCFID).

No feature extractor is bundled (nothing is downloaded): pass features / class probabilities from any
network, e.g. a classifier trained on the real data. All arithmetic is float64.

Class-conditional definitions (Benny et al.), with ``p(c)`` the class frequencies of the samples:

- ``p(y|c) = E_{x|c} p(y|x)``, ``p(y) = sum_c p(c) p(y|c)``;
  ``BCIS = exp(E_c KL(p(y|c) || p(y)))`` (between-class: are the generated classes distinct?),
  ``WCIS = exp(E_c E_{x|c} KL(p(y|x) || p(y|c)))`` (within-class diversity), and exactly
  ``IS = BCIS * WCIS`` since the KL terms add up (chain rule of mutual information).
- With class means ``mu_c`` and covariances ``S_c`` of each feature set: ``BCFID`` is the Frechet
  distance between the Gaussians fitted to the class means, ``N(E_c mu_c, Cov_c(mu_c))``, of the real and
  the generated data; ``WCFID = E_c d^2(N(mu_c^r, S_c^r), N(mu_c^g, S_c^g))`` is the per-class FID
  averaged over the classes (weights: the real class frequencies). Both are zero when the class-wise
  Gaussians coincide, and ``FID <= BCFID + WCFID`` (the paper's upper bound) for population moments when
  both sets share the class distribution ``p(c)``, as in conditional generation: the covariance splits
  into ``sum_c p(c) S_c + S_B`` and the squared Bures distance (the trace part of ``d^2``) is jointly convex
  and positively homogeneous, hence subadditive over that split.
- Finite samples (unbiased covariances), equal class counts ``n`` in both sets, ``K`` classes, ``N = K n``:
  the total covariance is ``((N-K) W + N S_B) / (N-1)`` with ``W`` the mean class covariance, so exactly
  ``FID <= N/(N-1) BCFID + (N-K)/(N-1) WCFID``; when every class of both sets has the same mean and the
  classes of each set share one covariance, ``BCFID = 0`` and ``FID = (N-K)/(N-1) WCFID`` exactly (both
  tested in tests/probes/test_generative.py).
- For a good conditional generator BCIS is high (up to the number of classes) and WCIS low (near 1: each
  class is classified consistently). ``IS`` depends on the pooled samples only, so it cannot tell a
  class-consistent generator from one that ignores the class (``BCIS`` falls as ``WCIS`` rises); ``FID``,
  ``IS``, ``BCIS``, ``WCIS`` and ``BCFID`` are all blind to a permutation of the class labels; only
  ``WCFID`` compares each class with the same real class.

These definitions satisfy the two relations the paper states between its metrics and the unconditional ones
(a product for IS, an upper bound for FID); both are tested, the bound in its exact finite-sample form.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor, as_label_tensor, check_2d, check_same_length
from phenomlab.probes._threads import one_thread

__all__ = ["frechet_distance", "fid", "inception_score", "conditional_scores", "conditional_fid", "gaussian_stats"]


def _check_psd(evals: Tensor, name: str) -> None:
    # Rounding leaves eigenvalues of a PSD matrix at -1e-16 relative; clipping a clearly negative one would
    # return a distance between Gaussians that do not exist.
    top = float(evals.abs().max()) if evals.numel() else 0.0
    if evals.numel() and float(evals.min()) < -1e-6 * max(top, 1e-300):
        raise PhenomlabError(f"{name} is not positive semi-definite (eigenvalue {float(evals.min()):.3g})")


def _sqrt_psd(S: Tensor, name: str = "S") -> Tensor:
    evals, evecs = torch.linalg.eigh(S)
    _check_psd(evals, name)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def _check_cov(S: Any, name: str, d: int) -> Tensor:
    t = as_float_tensor(S, name).to(torch.float64)
    if t.shape != (d, d):
        raise PhenomlabError(f"{name} must be [{d}, {d}] to match the mean, got shape {tuple(t.shape)}")
    scale = float(t.abs().max()) if t.numel() else 0.0
    if not torch.allclose(t, t.T, rtol=0, atol=1e-8 * max(scale, 1e-300)):
        raise PhenomlabError(f"{name} must be symmetric")
    return (t + t.T) / 2


def frechet_distance(mu1: Tensor, S1: Tensor, mu2: Tensor, S2: Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between ``N(mu1, S1)`` and ``N(mu2, S2)``.

    ``d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})`` (Heusel et al. 2017,
    arXiv 1706.08500). The last trace equals ``tr((S1 S2)^{1/2})`` but is computed from the symmetric PSD
    matrix ``S1^{1/2} S2 S1^{1/2}`` by two eigendecompositions in float64, with eigenvalues clipped at 0:
    no complex ``sqrtm`` of the non-symmetric ``S1 S2`` and no imaginary parts to discard. Returns a
    float >= 0 (up to rounding).
    """
    m1 = as_float_tensor(mu1, "mu1").to(torch.float64).reshape(-1)
    m2 = as_float_tensor(mu2, "mu2").to(torch.float64).reshape(-1)
    if m1.shape != m2.shape:
        raise PhenomlabError(f"mu1 and mu2 have different dimensions: {m1.numel()} != {m2.numel()}")
    d = m1.numel()
    if d == 0:
        raise PhenomlabError("mu1 is empty")
    A = _check_cov(S1, "S1", d)
    B = _check_cov(S2, "S2", d).to(A.device)
    m2 = m2.to(m1.device)
    with one_thread(A):
        A_h = _sqrt_psd(A, "S1")
        M = A_h @ B @ A_h
        ev = torch.linalg.eigvalsh((M + M.T) / 2)
    # S1^{1/2} S2 S1^{1/2} is PSD when S2 is; this catches a non-PSD S2 at no extra cost (unless S1 is singular).
    _check_psd(ev, "S2")
    cross = ev.clamp_min(0).sqrt().sum()
    val = float((m1 - m2).pow(2).sum() + torch.trace(A) + torch.trace(B) - 2 * cross)
    # Mathematically >= 0; rounding can leave a tiny negative value for (nearly) identical Gaussians.
    return max(val, 0.0)


def gaussian_stats(feats: Tensor, name: str = "features") -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (``N - 1``) of ``[N, D]`` features, in float64."""
    x = check_2d(feats, name).to(torch.float64)
    if x.shape[0] < 2:
        raise PhenomlabError(f"{name} needs at least 2 samples for a covariance, got {x.shape[0]}")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def fid(feats1: Tensor, feats2: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N1, D]`` and ``[N2, D]`` (FID).

    Means and unbiased covariances, then :func:`frechet_distance` (Heusel et al. 2017, arXiv 1706.08500).
    FID is biased upwards for finite samples (the bias falls like ``1/N``); compare values computed
    with equal sample sizes.
    """
    mu1, S1 = gaussian_stats(feats1, "feats1")
    mu2, S2 = gaussian_stats(feats2, "feats2")
    if mu1.numel() != mu2.numel():
        raise PhenomlabError(f"feats1 and feats2 have different dimensions: {mu1.numel()} != {mu2.numel()}")
    return frechet_distance(mu1, S1, mu2, S2)


def _check_probs(probs: Any) -> Tensor:
    p = check_2d(probs, "probs").to(torch.float64)
    if bool((p < 0).any()):
        raise PhenomlabError("probs must be non-negative class probabilities")
    sums = p.sum(1)
    if not torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=1e-4):
        raise PhenomlabError(
            f"probs rows must sum to 1 (got sums in [{float(sums.min()):.4g}, {float(sums.max()):.4g}])"
        )
    return p / sums[:, None]


def _kl_rows(p: Tensor, q: Tensor) -> Tensor:
    # sum_y p log(p / q) with 0 log 0 = 0; q > 0 wherever p > 0 because q averages rows containing p.
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


def inception_score(probs: Tensor) -> float:
    """Inception Score ``IS = exp(E_x KL(p(y|x) || p(y)))``, ``p(y) = E_x p(y|x)`` (Salimans et al. 2016).

    ``probs`` is ``[N, K]``, rows the classifier's ``p(y|x)`` on generated samples. Ranges from 1 to ``K``.
    Computed on the whole set (the original 10-split average is left to the caller).
    """
    p = _check_probs(probs)
    py = p.mean(0, keepdim=True)
    return float(torch.exp(_kl_rows(p, py).mean()))


def conditional_scores(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Between- and within-class Inception Scores of class-conditional samples (Benny et al. 2021, arXiv 2004.12361).

    ``probs`` ``[N, K]``: the classifier's ``p(y|x)`` on samples generated for class ``labels[i]``;
    ``p(c)`` is the frequency of each conditioning label. Returns ``{"BCIS", "WCIS", "IS"}`` with
    ``BCIS = exp(sum_c p(c) KL(p(y|c) || p(y)))``, ``WCIS = exp(sum_c p(c) E_{x|c} KL(p(y|x) || p(y|c)))``
    and ``IS = BCIS * WCIS`` (an identity, up to float rounding).
    """
    p = _check_probs(probs)
    y = as_label_tensor(labels, "labels", device=p.device)
    check_same_length(p, y, ("probs", "labels"))
    classes, inv, counts = torch.unique(y, return_inverse=True, return_counts=True)
    C, N = classes.numel(), p.shape[0]
    sums = torch.zeros(C, p.shape[1], dtype=torch.float64, device=p.device).index_add_(0, inv, p)
    pyc = sums / counts[:, None].to(torch.float64)  # p(y|c)
    pc = counts.to(torch.float64) / N
    py = (pc[:, None] * pyc).sum(0, keepdim=True)  # equals the mean of all rows
    between = (pc * _kl_rows(pyc, py)).sum()
    within = _kl_rows(p, pyc[inv]).mean()  # = sum_c p(c) E_{x|c} KL
    total = _kl_rows(p, py).mean()
    return {"BCIS": float(torch.exp(between)), "WCIS": float(torch.exp(within)), "IS": float(torch.exp(total))}


def _class_stats(x: Tensor, y: Tensor, classes: Tensor, name: str) -> tuple[Tensor, list[Tensor]]:
    means, covs = [], []
    for c in classes.tolist():
        xc = x[y == c]
        if xc.shape[0] < 2:
            raise PhenomlabError(f"{name}: class {c} has {xc.shape[0]} sample(s); each class needs at least 2")
        mu, S = gaussian_stats(xc, name)
        means.append(mu)
        covs.append(S)
    return torch.stack(means), covs


def conditional_fid(feats_real: Tensor, labels_real: Tensor, feats_fake: Tensor, labels_fake: Tensor) -> dict[str, Any]:
    """Between- and within-class FID (Benny et al. 2021, arXiv 2004.12361), plus the plain FID.

    Classes are those of ``labels_real``; every one must appear at least twice in each set, and ``labels_fake``
    may hold no other class.
    ``BCFID = d^2(N(mu_B^r, S_B^r), N(mu_B^g, S_B^g))`` where ``mu_B = sum_c p(c) mu_c`` and
    ``S_B = sum_c p(c) (mu_c - mu_B)(mu_c - mu_B)^T`` are the weighted mean and covariance of the class
    means; ``WCFID = sum_c p(c) d^2(N(mu_c^r, S_c^r), N(mu_c^g, S_c^g))``, ``p(c)`` the real class
    frequencies, ``d^2`` :func:`frechet_distance`. Returns ``{"BCFID", "WCFID", "FID", "per_class"}``
    with ``per_class`` a dict ``class -> FID of that class`` and ``FID`` computed on all samples.
    """
    xr = check_2d(feats_real, "feats_real").to(torch.float64)
    xf = check_2d(feats_fake, "feats_fake").to(torch.float64)
    if xr.shape[1] != xf.shape[1]:
        raise PhenomlabError(f"feats_real and feats_fake have different dimensions: {xr.shape[1]} != {xf.shape[1]}")
    yr = as_label_tensor(labels_real, "labels_real", device=xr.device)
    yf = as_label_tensor(labels_fake, "labels_fake", device=xf.device)
    check_same_length(xr, yr, ("feats_real", "labels_real"))
    check_same_length(xf, yf, ("feats_fake", "labels_fake"))
    classes, counts = torch.unique(yr, return_counts=True)
    missing = sorted(set(classes.tolist()) - set(torch.unique(yf).tolist()))
    if missing:
        raise PhenomlabError(f"labels_fake lacks real classes {missing}")
    extra = sorted(set(torch.unique(yf).tolist()) - set(classes.tolist()))
    if extra:
        # such samples would enter the plain FID but no class term: the three numbers would describe different sets
        raise PhenomlabError(f"labels_fake have classes absent from labels_real: {extra}")
    if classes.numel() < 2:
        raise PhenomlabError("labels_real have a single class; BCFID needs at least 2 classes")
    pc = counts.to(torch.float64) / counts.sum()
    fake_counts = torch.stack([(yf == c).sum() for c in classes]).to(torch.float64)
    pc_fake = fake_counts / fake_counts.sum()

    Mr, Sr = _class_stats(xr, yr, classes, "feats_real")
    Mf, Sf = _class_stats(xf, yf, classes, "feats_fake")

    def between(M: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        mu = (w[:, None] * M).sum(0)
        D = M - mu
        return mu, (w[:, None] * D).T @ D

    mbr, sbr = between(Mr, pc)
    mbf, sbf = between(Mf, pc_fake)
    bcfid = frechet_distance(mbr, sbr, mbf, sbf)
    per_class = {int(c): frechet_distance(Mr[i], Sr[i], Mf[i], Sf[i]) for i, c in enumerate(classes.tolist())}
    wcfid = float(sum(float(pc[i]) * per_class[int(c)] for i, c in enumerate(classes.tolist())))
    total = fid(xr, xf)
    if not math.isfinite(bcfid) or not math.isfinite(wcfid):
        raise PhenomlabError("conditional FID is not finite; check the features")
    return {"BCFID": bcfid, "WCFID": wcfid, "FID": total, "per_class": per_class}
