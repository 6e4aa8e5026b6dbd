import math

import pytest
import torch

from phenomlab.data import cause_effect_pairs, quantile_vectors
from phenomlab.data.causal import PAIR_KINDS, mixture_cdf
from phenomlab.errors import ConfigError


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_pairs_are_standardised_and_deterministic(kind):
    a, b, c = (cause_effect_pairs(kind, 3, 300, s, n_mc=500) for s in (0, 0, 1))
    assert a.shape == (3, 2, 300) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.mean(-1), torch.zeros(3, 2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(a.std(-1), torch.ones(3, 2, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("kind", ["pnl", "balanced"])
def test_post_nonlinear_effects_are_monotone_maps_of_the_additive_effect(kind):
    # same seed: the same causes, mechanisms and noises are drawn before g, so the effect must be a strictly
    # increasing function of the additive-noise effect (identical ranks), while its marginal differs
    # (one pair per call: g's own draws shift the generator for any later pair)
    for seed in range(3):
        an = cause_effect_pairs("an", 1, 400, seed, n_mc=500)[0]
        other = cause_effect_pairs(kind, 1, 400, seed, n_mc=500)[0]
        assert torch.equal(an[0], other[0])
        assert torch.equal(an[1].argsort(), other[1].argsort())
        assert not torch.allclose(an[1], other[1], atol=1e-3)


def test_mixture_cdf_matches_the_closed_form_by_hand():
    w, mu, sd = torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 2.0])
    x = torch.tensor([-2.0, 0.0, 1.5, 4.0], dtype=torch.float64)
    got = mixture_cdf((w, mu.double(), sd.double()), x)
    for xi, gi in zip(x.tolist(), got.tolist(), strict=True):
        want = 0.3 * 0.5 * (1 + math.erf((xi + 1) / 0.5 / math.sqrt(2))) + 0.7 * 0.5 * (
            1 + math.erf((xi - 2) / 2.0 / math.sqrt(2))
        )
        assert gi == pytest.approx(want, abs=1e-12)


def test_quantile_vectors_against_brute_force():
    v = torch.randn(2, 3, 50, dtype=torch.float64)
    # subsample = n: every vector is the sorted sample at the ranks round((j + 1/2) n / k - 1/2)
    q = quantile_vectors(v, 4, 50, 5, torch.Generator().manual_seed(0))
    assert q.shape == (2, 3, 4, 5)
    for i in range(2):
        for j in range(3):
            s = sorted(v[i, j].tolist())
            want = [s[round((r + 0.5) * 50 / 5 - 0.5)] for r in range(5)]
            for t in range(4):
                assert q[i, j, t].tolist() == want
    # a real subsample: sorted, and made of the variable's own values
    q = quantile_vectors(v, 6, 20, 20, torch.Generator().manual_seed(1))
    assert (q.diff(dim=-1) >= 0).all()
    for i in range(2):
        for j in range(3):
            vals = set(v[i, j].tolist())
            assert all(x in vals for x in q[i, j].flatten().tolist())
            assert len(set(q[i, j].flatten().tolist())) > 20  # the subsamples differ


@pytest.mark.parametrize(
    "call",
    [
        lambda: cause_effect_pairs("lingam", 2, 10, 0),
        lambda: cause_effect_pairs("an", 0, 10, 0),
        lambda: cause_effect_pairs("an", 2, 10, 0, noise=(0.5, 0.1)),
        lambda: quantile_vectors(torch.zeros(30), 2, 10, 11, torch.Generator()),
        lambda: quantile_vectors(torch.zeros(30), 2, 31, 5, torch.Generator()),
    ],
)
def test_bad_input(call):
    with pytest.raises(ConfigError):
        call()


def test_inverted_causes_are_additive_noise_effects_not_mixture_draws():
    # the balanced and inverted generators draw from the same seed; their causes must differ in law, not only
    # in the draw: an AN effect f_0(X_0) + E_0 is continuous noise on a smooth map, and with the same generator
    # state the first pair's cause differs from the mixture draw of a balanced pair
    inv = cause_effect_pairs("inverted", 2, 500, 0, n_mc=200)
    bal = cause_effect_pairs("balanced", 2, 500, 0, n_mc=200)
    assert not torch.allclose(inv[0, 0], bal[0, 0])
    assert torch.isfinite(inv).all()
