import math

import numpy as np
import pytest
import torch
from torch import nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes.spectra import (
    PowerLawFit,
    effective_rank,
    esd,
    frobenius_norm,
    layer_spectra,
    numerical_rank,
    power_law_alpha,
    singular_values,
    spectral_norm,
    stable_rank,
    weight_matrix,
)


def with_singular_values(s, n=12, m=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(m, len(s), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T


S = [10.0, 5.0, 1.0, 0.05, 1e-5, 0.0]


def test_ranks_and_norms_from_known_singular_values():
    w = with_singular_values(S)
    s = np.array(S)
    np.testing.assert_allclose(singular_values(w).numpy()[:6], s, atol=1e-12)
    assert numerical_rank(w) == 4  # 10, 5, 1, 0.05 > 1e-3 * 10
    assert numerical_rank(w, tol=0.01) == 3  # threshold 0.1 drops 0.05
    assert numerical_rank(w, tol=0.2) == 2
    assert stable_rank(w) == pytest.approx((s**2).sum() / 100.0, rel=1e-12)
    p = s[s > 0] / s.sum()
    assert effective_rank(w) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert spectral_norm(w) == pytest.approx(10.0, rel=1e-12)
    assert frobenius_norm(w) == pytest.approx(math.sqrt((s**2).sum()), rel=1e-12)
    # The same statistics from the singular values directly.
    st = torch.tensor(S)
    assert numerical_rank(st) == 4
    assert stable_rank(st) == pytest.approx(stable_rank(w), rel=1e-6)
    assert frobenius_norm(st) == pytest.approx(frobenius_norm(w), rel=1e-6)


def test_effective_rank_of_equal_singular_values_and_zero_matrix():
    assert effective_rank(with_singular_values([3.0] * 5)) == pytest.approx(5.0, rel=1e-9)
    z = torch.zeros(4, 3)
    assert numerical_rank(z) == 0
    assert stable_rank(z) == 0.0
    assert effective_rank(z) == 0.0


def test_weight_matrix_reshapes_conv_and_rejects_vectors():
    conv = nn.Conv2d(3, 8, 5)
    assert weight_matrix(conv).shape == (8, 75)
    assert weight_matrix(conv.weight.half()).dtype == torch.float32
    assert weight_matrix(nn.Linear(4, 6)).shape == (6, 4)
    with pytest.raises(ValueError, match="2 dimensions"):
        weight_matrix(torch.randn(5))
    with pytest.raises(ValueError, match="NaN/inf"):
        weight_matrix(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="non-negative"):
        numerical_rank(torch.tensor([1.0, -1.0]))


def test_esd_is_squared_singular_values():
    w = with_singular_values([4.0, 2.0, 1.0], n=12, m=5)
    ev = esd(w)
    assert ev.shape == (5,)  # min(N, M) eigenvalues of W^T W
    np.testing.assert_allclose(ev.numpy()[-3:], [1.0, 4.0, 16.0], rtol=1e-10)
    assert torch.all(ev[1:] >= ev[:-1])
    np.testing.assert_allclose(esd(w, normalize=True).numpy(), ev.numpy() / 12, rtol=1e-12)
    ref = np.linalg.eigvalsh(w.numpy().T @ w.numpy())
    np.testing.assert_allclose(ev.numpy(), ref, atol=1e-10)


def pareto(n, alpha, seed=0, xmin=1.0):
    # pdf ~ x^-alpha on [xmin, inf): inverse-CDF sampling.
    u = np.random.default_rng(seed).random(n)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def test_power_law_alpha_recovers_known_exponent():
    x = pareto(20_000, 2.5, seed=1)
    fit = power_law_alpha(torch.tensor(x), min_value=0.0)
    assert isinstance(fit, PowerLawFit)
    assert fit.alpha == pytest.approx(2.5, abs=0.15)
    assert fit.n_tail > 1000
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))
    # A different exponent is told apart.
    assert power_law_alpha(torch.tensor(pareto(5000, 4.0, seed=2))).alpha == pytest.approx(4.0, abs=0.3)


def weightwatcher_style_fit(x):
    """Brute-force reference: WeightWatcher 0.7 WWFit loop over every candidate xmin."""
    x = np.sort(x)
    logx = np.log(x)
    n_total = len(x)
    best = None
    for i in range(n_total - 1):
        n = n_total - i
        alpha = 1 + n / (logx[i:].sum() - n * logx[i])
        d = 1.0
        if alpha > 1:
            d = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - alpha) - np.arange(n) / n))
        if best is None or d < best[0]:
            best = (d, alpha, x[i], n)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_power_law_alpha_matches_exhaustive_reference(seed):
    # An MP-like bulk plus a heavy tail, as in a trained layer's ESD.
    g = np.random.default_rng(seed)
    x = g.uniform(0.2, 2.0, 200) ** 2
    x = np.concatenate([x, pareto(60, 2.2, seed=seed, xmin=x.max())])
    d, alpha, xmin, n = weightwatcher_style_fit(x)
    fit = power_law_alpha(torch.tensor(x), max_candidates=None)
    assert fit.alpha == pytest.approx(alpha, rel=1e-9)
    assert fit.xmin == pytest.approx(xmin, rel=1e-12)
    assert fit.ks_distance == pytest.approx(d, rel=1e-9)
    assert fit.n_tail == n
    # float32 input and the default candidate limit (above this n) give the same fit.
    assert power_law_alpha(torch.tensor(x, dtype=torch.float32)).alpha == pytest.approx(alpha, rel=1e-4)


def test_power_law_coarse_to_fine_close_to_exhaustive():
    x = torch.tensor(pareto(3000, 3.0, seed=5))
    exact = power_law_alpha(x, max_candidates=None, min_value=0.0)
    coarse = power_law_alpha(x, max_candidates=200, min_value=0.0)
    assert coarse.ks_distance <= exact.ks_distance + 0.01
    assert coarse.alpha == pytest.approx(exact.alpha, abs=0.1)


def test_power_law_fixed_xmin_and_errors():
    x = pareto(1000, 2.5, seed=3)
    fit = power_law_alpha(torch.tensor(x), xmin=2.0)
    tail = sorted(v for v in x.tolist() if v >= 2.0)
    assert fit.n_tail == len(tail) and fit.xmin == 2.0
    # Clauset, Shalizi, Newman (2009): alpha = 1 + n / sum_i ln(x_i / xmin), xmin the given value itself
    # (not the smallest sample above it), and D = max_k |F(x_(k)) - k/n| with F(x) = 1 - (x / xmin)^(1 - alpha).
    n = len(tail)
    alpha = 1 + n / math.fsum(math.log(v / 2.0) for v in tail)
    assert tail[0] > 2.0  # the requested xmin is not a sample, so the two rules give different alphas
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    ks = max(abs(1 - (v / 2.0) ** (1 - alpha) - k / n) for k, v in enumerate(tail))
    assert fit.ks_distance == pytest.approx(ks, rel=1e-9)
    assert fit.sigma == pytest.approx((alpha - 1) / math.sqrt(n), rel=1e-12)
    # At a sample value the fixed-xmin fit is the scan's fit of that candidate.
    at = power_law_alpha(torch.tensor(x), xmin=tail[0])
    assert at.alpha == pytest.approx(1 + n / math.fsum(math.log(v / tail[0]) for v in tail), rel=1e-12)
    with pytest.raises(PhenomlabError, match="positive"):
        power_law_alpha(torch.tensor(x), xmin=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        power_law_alpha(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        power_law_alpha(torch.tensor([1.0, float("nan"), 3.0]))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
        self.norm = nn.LayerNorm(10)  # has a 1-D weight: not a layer spectrum

    def forward(self, x):
        return self.norm(self.fc(self.conv(x).flatten(1)))


def test_layer_spectra_covers_linear_and_conv():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.fc[2].weight[5:] = 0.0  # rank 5
    rows = layer_spectra(net)
    assert [r["name"] for r in rows] == ["conv", "fc.0", "fc.2"]
    by = {r["name"]: r for r in rows}
    assert by["conv"]["matrix_shape"] == (4, 9)
    assert by["conv"]["shape"] == (4, 1, 3, 3)
    assert by["fc.2"]["rank"] == 5
    w = net.fc[0].weight.detach()
    assert by["fc.0"]["stable_rank"] == pytest.approx(stable_rank(w), rel=1e-6)
    assert by["fc.0"]["spectral_norm"] == pytest.approx(spectral_norm(w), rel=1e-6)
    assert by["fc.0"]["frobenius_norm"] == pytest.approx(float(w.norm()), rel=1e-5)
    assert by["fc.0"]["alpha"] == pytest.approx(power_law_alpha(esd(w)).alpha, rel=1e-6)
    assert all(set(r) >= {"alpha", "rank", "effective_rank", "ks_distance"} for r in rows)


def test_layer_spectra_gram_and_svd_methods_agree():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(40, 60), nn.Linear(60, 30))
    a, b = layer_spectra(net, method="gram"), layer_spectra(net, method="svd")
    for ra, rb in zip(a, b, strict=True):
        assert ra["rank"] == rb["rank"]
        for key in ("stable_rank", "effective_rank", "spectral_norm", "frobenius_norm", "alpha"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5)
    with pytest.raises(ValueError, match="method"):
        layer_spectra(net, method="qr")


def test_layer_spectra_gram_matches_float64_svd_for_every_layout():
    # Tall, wide and conv weights, a non-contiguous (transposed) weight and a float16 one: the Gram path
    # (dsyrk on a column-major view + dsyevd) must give the float64 SVD's spectrum and alpha.
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(30, 70), nn.Linear(70, 25), nn.Conv2d(3, 6, 3), nn.Linear(40, 40), nn.Linear(33, 12))
    with torch.no_grad():
        net[3].weight = nn.Parameter(torch.randn(40, 40).T * 0.1)  # non-contiguous
        net[4].half()
    assert not net[3].weight.is_contiguous()
    rows = layer_spectra(net, method="gram")
    assert len(rows) == 5
    for r, mod in zip(rows, net, strict=True):
        w = mod.weight.detach().double().reshape(mod.weight.shape[0], -1).numpy()
        sv = np.linalg.svd(w, compute_uv=False)
        assert r["spectral_norm"] == pytest.approx(sv[0], rel=1e-12)
        assert r["frobenius_norm"] == pytest.approx(np.sqrt((sv**2).sum()), rel=1e-12)
        assert r["stable_rank"] == pytest.approx((sv**2).sum() / sv[0] ** 2, rel=1e-12)
        p = sv / sv.sum()
        assert r["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-10)
        assert r["rank"] == int((sv > 1e-3 * sv[0]).sum())
        ref = power_law_alpha(torch.from_numpy(np.sort(sv**2)))
        assert r["alpha"] == pytest.approx(ref.alpha, rel=1e-9)
        assert r["n_tail"] == ref.n_tail


def test_small_sample_fit_matches_weightwatcher_rule():
    # 9-19 values: bias-corrected alpha = 1 + (n-1)/sum log(x/xmin), only tails of >= 8 points scored.
    x = np.sort(pareto(15, 2.5, seed=4))
    best = None
    for i in range(len(x) - 7):
        tail = x[i:]
        n = len(tail)
        a = 1 + (n - 1) / np.log(tail / tail[0]).sum()
        d = np.max(np.abs(1 - (tail / tail[0]) ** (1 - a) - np.arange(n) / n))
        if best is None or d < best[0]:
            best = (d, a, n)
    fit = power_law_alpha(torch.tensor(x))
    assert fit.alpha == pytest.approx(best[1], rel=1e-10)
    assert fit.n_tail == best[2]
    plain = power_law_alpha(torch.tensor(x), small_sample=False)
    assert plain.alpha != pytest.approx(fit.alpha, rel=1e-6)


@pytest.mark.parametrize(
    "fn", [singular_values, numerical_rank, stable_rank, effective_rank, spectral_norm, frobenius_norm, esd]
)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 3, 4), (0,)])
def test_empty_inputs_raise_one_line_error(fn, shape):
    if shape == (0,) and fn in (singular_values, esd):
        match = "dimensions"  # these take weights only: a 1-D input is the wrong kind, not just empty
    else:
        match = "empty"
    with pytest.raises(PhenomlabError, match=match) as err:
        fn(torch.empty(shape))
    assert "\n" not in str(err.value)


def test_power_law_empty_input():
    with pytest.raises(PhenomlabError, match="empty"):
        power_law_alpha(torch.empty(0))
    with pytest.raises(PhenomlabError, match="use esd"):
        power_law_alpha(torch.rand(12, 8) + 0.1)
