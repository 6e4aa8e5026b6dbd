import math

import numpy as np
import pytest
import scipy.linalg
import torch

from phenomlab.probes.generative import (
    conditional_fid,
    conditional_scores,
    fid,
    frechet_distance,
    gaussian_stats,
    inception_score,
)


def _rand_psd(d: int, g: torch.Generator) -> torch.Tensor:
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_closed_forms():
    g = torch.Generator().manual_seed(0)
    d = 6
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    s1 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    s2 = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    # diagonal: ||mu1 - mu2||^2 + sum (sqrt(s1) - sqrt(s2))^2
    exp = float(((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum())
    assert math.isclose(frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)), exp, rel_tol=1e-10)
    # commuting (shared eigenvectors)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    S1, S2 = (Q * s1) @ Q.T, (Q * s2) @ Q.T
    assert math.isclose(frechet_distance(mu1, S1, mu2, S2), exp, rel_tol=1e-9)
    # general: against scipy's sqrtm of S1 S2
    A, B = _rand_psd(d, g), _rand_psd(d, g)
    ref = float(((mu1 - mu2) ** 2).sum() + A.trace() + B.trace()) - 2 * float(
        np.trace(scipy.linalg.sqrtm(A.numpy() @ B.numpy())).real
    )
    assert math.isclose(frechet_distance(mu1, A, mu2, B), ref, rel_tol=1e-9)
    # symmetric in its arguments and zero on identical Gaussians
    assert math.isclose(frechet_distance(mu2, B, mu1, A), ref, rel_tol=1e-9)
    assert frechet_distance(mu1, A, mu1, A) < 1e-10
    # rank-deficient covariances are fine
    P = torch.zeros(d, d, dtype=torch.float64)
    P[0, 0] = 1.0
    assert math.isclose(frechet_distance(mu1, P, mu1, P), 0.0, abs_tol=1e-10)


def test_fid_samples_converge_to_closed_form():
    g = torch.Generator().manual_seed(1)
    d = 4
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    A, B = _rand_psd(d, g), _rand_psd(d, g)
    exact = frechet_distance(mu1, A, mu2, B)
    errs = []
    for n in (500, 50_000):
        x1 = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(A).T + mu1
        x2 = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(B).T + mu2
        errs.append(abs(fid(x1, x2) - exact))
    assert errs[1] < 0.02 * exact and errs[1] < errs[0]
    x = torch.randn(100, d, generator=g, dtype=torch.float64)
    assert fid(x, x) < 1e-10
    mu, S = gaussian_stats(x)
    assert torch.allclose(S, torch.cov(x.T), atol=1e-12) and torch.allclose(mu, x.mean(0))


def test_inception_score_bounds():
    K = 5
    assert math.isclose(inception_score(torch.full((20, K), 1.0 / K)), 1.0, rel_tol=1e-12)
    onehot = torch.eye(K).repeat(4, 1)
    assert math.isclose(inception_score(onehot), K, rel_tol=1e-12)
    assert math.isclose(inception_score(torch.eye(K)[[0] * 10]), 1.0, rel_tol=1e-12)  # one class only


def test_is_equals_bcis_times_wcis():
    g = torch.Generator().manual_seed(2)
    for C, K, N in [(3, 5, 90), (10, 10, 500)]:
        logits = torch.randn(N, K, generator=g, dtype=torch.float64) * 2
        labels = torch.randint(0, C, (N,), generator=g)
        logits[torch.arange(N), labels % K] += 2.0  # class-dependent predictions
        probs = logits.softmax(1)
        s = conditional_scores(probs, labels)
        assert math.isclose(s["IS"], s["BCIS"] * s["WCIS"], rel_tol=1e-12)
        assert math.isclose(s["IS"], inception_score(probs), rel_tol=1e-12)
        assert s["BCIS"] >= 1.0 - 1e-12 and s["WCIS"] >= 1.0 - 1e-12
    # perfect, confident, class-distinct generation: BCIS = C, WCIS = 1
    C = 4
    labels = torch.arange(C).repeat(5)
    s = conditional_scores(torch.eye(C)[labels], labels)
    assert math.isclose(s["BCIS"], C, rel_tol=1e-12) and math.isclose(s["WCIS"], 1.0, rel_tol=1e-12)
    # every class generates the same mixture: no between-class information
    probs = torch.full((20, C), 0.0)
    probs[torch.arange(20), torch.arange(20) % C] = 1.0
    s = conditional_scores(probs, torch.arange(20) // C)  # each class holds every prediction once
    assert math.isclose(s["BCIS"], 1.0, rel_tol=1e-12) and math.isclose(s["WCIS"], C, rel_tol=1e-12)


def _two_class_data(g: torch.Generator, n: int, collapse: bool):
    """Class 0: mixture of two modes at +-3 e1; class 1: one mode at 6 e2. ``collapse`` keeps one mode of class 0."""
    d = 3
    e1, e2 = torch.eye(d, dtype=torch.float64)[0], torch.eye(d, dtype=torch.float64)[1]
    if collapse:
        sign = torch.ones(n, 1, dtype=torch.float64)
    else:
        sign = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    c0 = 3 * sign * e1 + torch.randn(n, d, generator=g, dtype=torch.float64)
    c1 = 6 * e2 + torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.cat([c0, c1]), torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])


def test_conditional_fid_mode_dropping():
    g = torch.Generator().manual_seed(3)
    n = 4000
    xr, yr = _two_class_data(g, n, collapse=False)
    xg, yg = _two_class_data(g, n, collapse=False)
    xc, yc = _two_class_data(g, n, collapse=True)
    good = conditional_fid(xr, yr, xg, yg)
    bad = conditional_fid(xr, yr, xc, yc)
    assert good["WCFID"] < 0.1 and good["BCFID"] < 0.1
    assert bad["WCFID"] > 20 * max(good["WCFID"], 0.05)
    assert bad["per_class"][0] > 20 * good["per_class"][0]
    assert bad["per_class"][1] < 0.1  # the intact class is unaffected
    for r in (good, bad):
        assert r["FID"] <= r["BCFID"] + r["WCFID"] + 1e-2  # the upper bound, up to sampling error
    # per-class FID matches a direct computation
    assert math.isclose(bad["per_class"][0], fid(xr[yr == 0], xc[yc == 0]), rel_tol=1e-12)
    w = float((yr == 0).double().mean())
    assert math.isclose(bad["WCFID"], w * bad["per_class"][0] + (1 - w) * bad["per_class"][1], rel_tol=1e-12)


def test_bcfid_closed_form():
    # class means only (zero within-class spread is not allowed, so use tiny noise)
    g = torch.Generator().manual_seed(4)
    means_r = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    means_g = means_r * 2.0
    lab = torch.arange(3).repeat_interleave(200)
    xr = means_r[lab] + 1e-3 * torch.randn(600, 2, generator=g, dtype=torch.float64)
    xg = means_g[lab] + 1e-3 * torch.randn(600, 2, generator=g, dtype=torch.float64)
    mu_r, mu_g = means_r.mean(0), means_g.mean(0)
    Sr = (means_r - mu_r).T @ (means_r - mu_r) / 3
    Sg = (means_g - mu_g).T @ (means_g - mu_g) / 3
    exp = frechet_distance(mu_r, Sr, mu_g, Sg)
    assert math.isclose(conditional_fid(xr, lab, xg, lab)["BCFID"], exp, rel_tol=1e-3)


def test_bad_inputs():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="different dimensions"):
        fid(x, torch.randn(10, 4))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fid(bad, x)
    with pytest.raises(ValueError, match="at least 2"):
        fid(x[:1], x)
    with pytest.raises(ValueError, match="2-D"):
        fid(x[0], x)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="match the mean"):
        frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))
    # a covariance with a negative eigenvalue used to be clipped into a distance of 0
    with pytest.raises(ValueError, match="S1 is not positive semi-definite"):
        frechet_distance(torch.zeros(2), -torch.eye(2), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="S2 is not positive semi-definite"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.diag(torch.tensor([1.0, -0.5])))
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # PSD with a zero eigenvalue: accepted
    assert frechet_distance(torch.zeros(2), singular, torch.zeros(2), singular) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(torch.ones(4, 3))
    with pytest.raises(ValueError, match="non-negative"):
        inception_score(torch.tensor([[1.5, -0.5], [0.5, 0.5]]))
    probs = torch.full((6, 2), 0.5)
    with pytest.raises(ValueError, match="different lengths"):
        conditional_scores(probs, torch.tensor([0, 1, 0]))
    yr = torch.tensor([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="lacks real classes"):
        conditional_fid(torch.randn(6, 2), yr, torch.randn(6, 2), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        conditional_fid(torch.randn(6, 2), yr, torch.randn(6, 2), torch.tensor([0, 0, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="different lengths"):
        conditional_fid(torch.randn(6, 2), yr[:5], torch.randn(6, 2), yr)


def test_conditional_scores_brute_force_loops():
    # BCIS / WCIS by explicit loops over classes and samples, natural log, against the vectorised probe
    g = torch.Generator().manual_seed(5)
    N, K, C = 60, 4, 3
    probs = (torch.randn(N, K, generator=g, dtype=torch.float64) * 1.5).softmax(1)
    labels = torch.randint(0, C, (N,), generator=g)
    P, y = probs.tolist(), labels.tolist()
    py = [sum(P[i][k] for i in range(N)) / N for k in range(K)]
    between = within = 0.0
    for c in range(C):
        rows = [P[i] for i in range(N) if y[i] == c]
        pyc = [sum(r[k] for r in rows) / len(rows) for k in range(K)]
        between += len(rows) / N * sum(pyc[k] * math.log(pyc[k] / py[k]) for k in range(K))
        within += sum(sum(r[k] * math.log(r[k] / pyc[k]) for k in range(K)) for r in rows) / N
    s = conditional_scores(probs, labels)
    assert math.isclose(s["BCIS"], math.exp(between), rel_tol=1e-12)
    assert math.isclose(s["WCIS"], math.exp(within), rel_tol=1e-12)
    # invariant under a relabelling of the conditioning classes (blind to class swaps)
    s2 = conditional_scores(probs, (labels + 1) % C)
    assert all(math.isclose(s[k], s2[k], rel_tol=1e-12) for k in s)


def test_fid_bound_exact_finite_sample():
    # equal class counts n in both sets: FID <= N/(N-1) BCFID + (N-K)/(N-1) WCFID for any samples
    g = torch.Generator().manual_seed(6)
    worst = 0.0
    for trial in range(60):
        K, n, d = 2 + trial % 4, 3 + trial % 7, 1 + trial % 5
        N = K * n
        lab = torch.arange(K).repeat_interleave(n)
        scale_r = torch.rand(K, 1, 1, generator=g, dtype=torch.float64) * 3
        scale_f = torch.rand(K, 1, 1, generator=g, dtype=torch.float64) * 3
        zr = torch.randn(K, n, d, generator=g, dtype=torch.float64).pow(3) * scale_r  # heavy-tailed, not Gaussian
        zf = torch.randn(K, n, d, generator=g, dtype=torch.float64) * scale_f
        xr = (zr + 2 * torch.randn(K, 1, d, generator=g, dtype=torch.float64)).reshape(N, d)
        xf = (zf + 2 * torch.randn(K, 1, d, generator=g, dtype=torch.float64)).reshape(N, d)
        r = conditional_fid(xr, lab, xf, lab)
        bound = N / (N - 1) * r["BCFID"] + (N - K) / (N - 1) * r["WCFID"]
        assert r["FID"] <= bound * (1 + 1e-9) + 1e-12
        worst = max(worst, r["FID"] / bound)
    assert worst < 1.0
    # equality case: every class has the same points, centred (S_B = 0 and all S_c equal in each set)
    K, n, d = 3, 8, 4
    N = K * n
    zr = torch.randn(n, d, generator=g, dtype=torch.float64)
    zf = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    zr, zf = zr - zr.mean(0), zf - zf.mean(0)  # equal means too, so BCFID = 0
    lab = torch.arange(K).repeat_interleave(n)
    r = conditional_fid(zr.repeat(K, 1), lab, zf.repeat(K, 1), lab)
    assert r["BCFID"] < 1e-12
    assert math.isclose(r["FID"], (N - K) / (N - 1) * r["WCFID"], rel_tol=1e-10)
    assert math.isclose(r["WCFID"], fid(zr, zf), rel_tol=1e-12)


def test_class_swap_moves_only_wcfid():
    # condition c generates real class c+1: pooled features and class means unchanged, per-class FID large
    g = torch.Generator().manual_seed(7)
    K, n, d = 4, 50, 3
    means = torch.randn(K, d, generator=g, dtype=torch.float64) * 5
    lab = torch.arange(K).repeat_interleave(n)
    xr = means[lab] + torch.randn(K * n, d, generator=g, dtype=torch.float64)
    xg = means[lab] + torch.randn(K * n, d, generator=g, dtype=torch.float64)
    good, swap = conditional_fid(xr, lab, xg, lab), conditional_fid(xr, lab, xg, (lab + 1) % K)
    assert math.isclose(good["FID"], swap["FID"], rel_tol=1e-12)
    assert math.isclose(good["BCFID"], swap["BCFID"], rel_tol=1e-9, abs_tol=1e-12)
    assert swap["WCFID"] > 50 * good["WCFID"]


def test_conditional_fid_rejects_fake_classes_absent_from_real():
    from phenomlab.errors import PhenomlabError

    g = torch.Generator().manual_seed(0)
    xr, yr = _two_class_data(g, 50, collapse=False)
    xf, yf = _two_class_data(g, 50, collapse=False)
    yf = yf.clone()
    yf[:5] = 7  # a class the real set does not have: it would enter FID but no class term
    with pytest.raises(PhenomlabError, match=r"absent from labels_real: \[7\]"):
        conditional_fid(xr, yr, xf, yf)
