"""InfoNCE against an explicit loop; vMF sampling against closed forms and quadrature."""

import math

import pytest
import torch
import torch.nn.functional as F

from phenomlab.errors import ConfigError
from phenomlab.train.contrastive import info_nce, sample_vmf, vmf_mean_cosine


def brute_info_nce(a: torch.Tensor, p: torch.Tensor, tau: float) -> float:
    total = 0.0
    for i in range(len(a)):
        sims = [sum(float(a[i, k]) * float(p[j, k]) for k in range(a.shape[1])) / tau for j in range(len(p))]
        total += -sims[i] + math.log(sum(math.exp(s) for s in sims))
    return total / len(a)


@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_info_nce_matches_explicit_loop(tau):
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    p = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    assert float(info_nce(a, p, tau)) == pytest.approx(brute_info_nce(a, p, tau), rel=1e-12)


def test_info_nce_rewards_aligned_positives():
    g = torch.Generator().manual_seed(1)
    a = F.normalize(torch.randn(64, 5, generator=g), dim=1)
    assert float(info_nce(a, a, 0.1)) < float(info_nce(a, a.roll(1, 0), 0.1))


@pytest.mark.parametrize(
    "a, p, tau",
    [
        (torch.zeros(4, 3), torch.zeros(4, 2), 1.0),
        (torch.zeros(1, 3), torch.zeros(1, 3), 1.0),
        (torch.zeros(4, 3), torch.zeros(4, 3), 0.0),
        (torch.zeros(4), torch.zeros(4), 1.0),
    ],
)
def test_info_nce_bad_input(a, p, tau):
    with pytest.raises(ConfigError):
        info_nce(a, p, tau)


def test_vmf_mean_cosine_closed_forms():
    for kappa in (0.5, 2.0, 10.0, 50.0):
        # on S^2: E[t] = coth(kappa) - 1/kappa
        assert vmf_mean_cosine(3, kappa) == pytest.approx(1 / math.tanh(kappa) - 1 / kappa, abs=1e-6)
    from scipy.special import ive

    for n, kappa in ((10, 1.0), (10, 30.0), (6, 5.0)):
        assert vmf_mean_cosine(n, kappa) == pytest.approx(ive(n / 2, kappa) / ive(n / 2 - 1, kappa), abs=1e-6)


@pytest.mark.parametrize("n, kappa", [(3, 2.0), (10, 1.0), (10, 30.0), (4, 200.0)])
def test_sample_vmf_mean_cosine_and_isotropy(n, kappa):
    g = torch.Generator().manual_seed(2)
    m = 40000
    mu = F.normalize(torch.randn(m, n, generator=g, dtype=torch.float64), dim=1)
    z = sample_vmf(mu, kappa, g)
    assert z.shape == mu.shape and z.dtype == mu.dtype
    assert torch.allclose(z.norm(dim=1), torch.ones(m, dtype=torch.float64), atol=1e-9)
    t = (z * mu).sum(1)
    se = float(t.std()) / math.sqrt(m)
    assert abs(float(t.mean()) - vmf_mean_cosine(n, kappa)) < 4 * se
    # the tangent part is isotropic around the mean: with mu = e_1 (rotate each row), its direction has mean 0
    tangent = z - t[:, None] * mu
    u = F.normalize(tangent, dim=1)
    # project on a fixed direction orthogonal to each mu: zero mean, variance 1/(n-1)
    e = torch.randn(n, generator=g, dtype=torch.float64)
    e_perp = F.normalize(e - (mu @ e)[:, None] * mu, dim=1)
    c = (u * e_perp).sum(1)
    assert abs(float(c.mean())) < 4 / math.sqrt(m) * math.sqrt(1 / (n - 1))
    assert float(c.square().mean()) == pytest.approx(1 / (n - 1), rel=0.05)


def test_sample_vmf_kappa_zero_is_uniform_and_generator_deterministic():
    mu = F.normalize(torch.ones(20000, 5), dim=1)
    z = sample_vmf(mu, 0.0, torch.Generator().manual_seed(3))
    assert abs(float((z * mu).sum(1).mean())) < 0.02
    a = sample_vmf(mu[:50], 5.0, torch.Generator().manual_seed(4))
    b = sample_vmf(mu[:50], 5.0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "mu, kappa",
    [(torch.ones(3, 4), 1.0), (F.normalize(torch.ones(3, 4), dim=1), -1.0), (torch.ones(3, 1), 1.0)],
)
def test_sample_vmf_bad_input(mu, kappa):
    with pytest.raises(ConfigError):
        sample_vmf(mu, kappa)
