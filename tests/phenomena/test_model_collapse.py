"""model-collapse: each check fails on a constructed result without the phenomenon; helpers vs hand computations."""

import copy
import math

import numpy as np
import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import model_collapse as mc
from phenomlab.phenomena.verdict import Result

N, GENS = 100, [10, 20, 30, 40, 50]
MODES = len(mc.GMM_WEIGHTS)


def _gmm(lost_per_chain: list[list[int]], gens: int = 3) -> list[list[list[float]]]:
    """Chains of mode masses: every mode starts at its weight; the listed modes fall to zero by the last generation."""
    chains = []
    for lost in lost_per_chain:
        first = list(mc.GMM_WEIGHTS)
        last = [0.0 if i in lost else w for i, w in enumerate(mc.GMM_WEIGHTS)]
        chains.append([first] * (gens - 1) + [last])
    return chains


def present() -> dict:
    closed = [mc.expected_variance(N, t) for t in GENS]
    return {
        "gaussian": {
            "generations": GENS,
            "n": N,
            "collapse": {"mean": closed, "median": [c * 0.9 for c in closed[:-1]] + [0.36], "se": [0.01] * 5},
            "control": {"mean": [1.0] * 5, "median": [0.97] * 5, "se": [0.01] * 5},
        },
        # 10 chains: the rare mode (index 4) lost in 8, one common mode lost in 2
        "gmm": {"collapse": _gmm([[4]] * 6 + [[4, 3]] * 2 + [[]] * 2), "control": _gmm([[]] * 10)},
        "vae": {
            "real_spread": 40.0,
            "collapse": {"spread": [24.0, 18.0, 12.0, 6.0], "tail_beyond_real_q99": [0.01, 0.0, 0.0, 0.0]},
            "control": {"spread": [24.0, 22.0, 21.0, 20.0], "tail_beyond_real_q99": [0.01] * 4},
            "real_fraction": 0.1,
            "control_half": {"spread": [24.0, 23.0, 23.0, 23.0], "tail_beyond_real_q99": [0.01] * 4},
            "control_half_real_fraction": 0.5,
        },
    }


def verdict(data: dict):
    return mc.signature(Result(phenomenon=mc.ID, config={}, seed=0, data=data))


def failing(data: dict) -> set[str]:
    return {c.name for c in verdict(data).checks if not c.passed}


def test_present_passes_every_check():
    v = verdict(present())
    assert v.passed, str(v)
    assert any(c.name.startswith("control") for c in v.checks)


def test_closed_form_mismatch_fails():
    d = present()
    d["gaussian"]["collapse"]["mean"][2] *= 1.2  # a simulation that does not follow ((n-1)/n)^t
    assert failing(d) == {"gaussian_closed_form_rel_err"}


def test_no_gaussian_collapse_fails():
    d = present()
    d["gaussian"]["collapse"]["median"][-1] = 0.9
    assert failing(d) == {"gaussian_median_var_ratio"}


def test_gaussian_control_collapsing_too_fails():
    d = present()
    d["gaussian"]["control"]["median"][-1] = 0.4
    assert failing(d) == {"control_gaussian_real_mix"}


def test_no_modes_lost_fails():
    d = present()
    d["gmm"]["collapse"] = _gmm([[4]] * 2 + [[]] * 8)  # 2 of 50 modes lost
    assert "gmm_modes_lost" in failing(d)


def test_no_mode_ever_lost_leaves_the_gmm_control_undefined():
    # without any collapse the control's ratio has no denominator: it fails with the two mixture checks
    d = present()
    d["gmm"]["collapse"] = _gmm([[]] * 10)
    assert failing(d) == {"gmm_modes_lost", "gmm_rare_lost_first", "control_gmm_real_mix"}
    assert next(c for c in verdict(d).checks if c.name == "control_gmm_real_mix").value is None


def test_only_common_modes_lost_fails_rare_first():
    # as many modes lost as in the present result, but never the rare one
    d = present()
    d["gmm"]["collapse"] = _gmm([[0]] * 6 + [[1, 3]] * 2 + [[]] * 2)
    assert failing(d) == {"gmm_rare_lost_first"}


def test_modes_lost_evenly_not_rare_first_fails():
    d = present()
    d["gmm"]["collapse"] = _gmm([[0, 1, 2, 3, 4]] * 3 + [[]] * 7)  # every mode equally often
    assert failing(d) == {"gmm_rare_lost_first"}


def test_gmm_control_losing_modes_too_fails():
    d = present()
    d["gmm"]["control"] = _gmm([[4]] * 5 + [[]] * 5)
    assert failing(d) == {"control_gmm_real_mix"}


def test_vae_spread_kept_fails():
    d = present()
    d["vae"]["collapse"]["spread"] = [24.0, 23.0, 22.0, 20.0]
    assert failing(d) == {"vae_spread_ratio"}


def test_vae_control_collapsing_too_fails():
    d = present()
    d["vae"]["control"]["spread"] = [24.0, 18.0, 12.0, 6.0]
    assert failing(d) == {"control_vae_real_mix"}


def test_vae_control_half_is_reported_not_checked():
    d = present()
    d["vae"]["control_half"]["spread"] = [24.0, 18.0, 12.0, 6.0]
    v = verdict(d)
    assert v.passed and "with half real data 0.250" in v.summary
    assert "fraction 0.1 of real data" in next(c for c in v.checks if c.name == "control_vae_real_mix").description
    del d["vae"]["control_half"]  # results without the extra chain still get a verdict
    assert verdict(d).passed


def test_vae_samples_carry_the_decoder_noise():
    # a decoder that outputs 0 whatever z: its samples are pure decoder noise of variance 1/2 per dimension
    torch.manual_seed(0)
    vae = mc.VAE(dim=10, width=8, latent=3)
    with torch.no_grad():
        vae.dec[-1].weight.zero_()
        vae.dec[-1].bias.zero_()
    x, mean = vae.sample(20000, torch.Generator().manual_seed(1))
    assert mean.abs().max() == 0
    assert x.shape == (20000, 10)
    assert torch.allclose(x.var(0), torch.full((10,), mc.VAE_DECODER_VARIANCE), rtol=0.05)
    assert mc.total_variance(x) == pytest.approx(10 * mc.VAE_DECODER_VARIANCE, rel=0.03)


def test_vae_decoder_variance_matches_the_loss():
    # loss = ||x - dec(z)||^2 + KL equals -ELBO + const only for 1 / (2 sigma^2) = 1
    assert 1 / (2 * mc.VAE_DECODER_VARIANCE) == 1


def test_vae_sample_means_are_the_decoder_of_the_prior_draw():
    torch.manual_seed(0)
    vae = mc.VAE(dim=6, width=8, latent=2)
    _, mean = vae.sample(50, torch.Generator().manual_seed(4))
    assert torch.equal(mean, vae.decode_prior(50, torch.Generator().manual_seed(4)))


def test_expected_variance_by_hand():
    assert mc.expected_variance(4, 2) == pytest.approx(0.5625)
    assert mc.expected_variance(10, 0) == 1.0


def test_gaussian_chains_equal_a_hand_loop():
    n, gens, chains = 5, 3, 4
    got = mc.gaussian_chains(n, gens, chains, real_fraction=0.4, g=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    mu, var = torch.zeros(chains, dtype=torch.float64), torch.ones(chains, dtype=torch.float64)
    for t in range(gens):
        own = torch.randn(chains, 3, generator=g, dtype=torch.float64)
        real = torch.randn(chains, 2, generator=g, dtype=torch.float64)
        for c in range(chains):
            xs = [float(mu[c] + math.sqrt(var[c]) * own[c, i]) for i in range(3)] + [float(r) for r in real[c]]
            m = sum(xs) / len(xs)
            assert float(got[t, c]) == pytest.approx(sum((x - m) ** 2 for x in xs) / len(xs), rel=1e-12)
        x = torch.cat([mu[:, None] + var.sqrt()[:, None] * own, real], 1)
        mu, var = x.mean(1), x.var(1, unbiased=False)


def test_gaussian_chains_follow_the_closed_form():
    v = mc.gaussian_chains(20, 10, 20000, 0.0, torch.Generator().manual_seed(0))
    for t in (1, 5, 10):
        rel_se = float(v[t - 1].std()) / math.sqrt(20000) / mc.expected_variance(20, t)
        assert abs(float(v[t - 1].mean()) / mc.expected_variance(20, t) - 1) < 4 * rel_se


def test_mode_masses_of_a_point_mixture():
    centres = np.asarray(mc.GMM_CENTERS)
    w = np.asarray([0.5, 0.5, 0.0, 0.0, 0.0])
    cov = np.tile(np.eye(2) * 1e-6, (MODES, 1, 1))
    m = mc.mode_masses(w, centres, cov, np.random.default_rng(0), m=20000)
    assert m[2:].tolist() == [0.0, 0.0, 0.0]
    assert m[0] + m[1] == pytest.approx(1.0) and abs(m[0] - 0.5) < 0.02


def test_modes_lost_threshold():
    masses = [[[0.3, 0.05], [0.3, 0.0099]], [[0.3, 0.05], [0.06, 0.0101]]]  # LOST_FRACTION 0.2
    assert mc.modes_lost(masses).tolist() == [[False, True], [False, False]]


def test_bad_config_rejected():
    with pytest.raises(ConfigError):
        mc.Config(real_fraction=0.001).validate()
    with pytest.raises(ConfigError):
        mc.Config(vae_real_fraction=0.0001).validate()
    assert mc.Config().vae_real_fraction == 0.1  # the paper's 10% of original data


def test_constructed_data_is_not_mutated():
    d = present()
    before = copy.deepcopy(d)
    verdict(d)
    assert d == before
