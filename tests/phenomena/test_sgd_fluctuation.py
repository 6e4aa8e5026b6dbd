import math

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import sgd_fluctuation as sf

SMALL = sf.PRESETS["smoke"]


def make_result(sim_of, lr_h=(0.25, 1.0, 1.5)):
    """Result whose simulated values are ``sim_of(exact, continuous)`` for both noise models."""
    cfg = build_config(sf.Config, sf.PRESETS, "quick", {"lr_h": lr_h})
    series = []
    for model in sf.NOISE_MODELS:
        g2, s2 = sf.noise_moments(model, 1.0, 1.0, cfg.batch_size)
        for mu in (0.0, 0.5):
            ex = [sf.exact_variance(x, 1.0, mu, g2, s2) for x in lr_h]
            ct = [sf.continuous_variance(x, 1.0, mu, g2, s2) for x in lr_h]
            series.append(
                {
                    "name": f"{model}/mu={mu:g}",
                    "noise": model,
                    "momentum": mu,
                    "gamma2": g2,
                    "s2": s2,
                    "sim": [sim_of(e, c) for e, c in zip(ex, ct, strict=True)],
                    "stderr": [0.0] * len(lr_h),
                    "exact": ex,
                    "continuous": ct,
                    "lyapunov": ex,
                }
            )
    return Result(sf.ID, cfg.to_dict(), 0, {"lr_h": list(lr_h), "series": series})


def test_signature_on_constructed_data():
    assert sf.signature(make_result(lambda e, c: e * 1.02)).passed
    # a simulation that follows the continuous-time theory is not the discrete-time signature
    v = sf.signature(make_result(lambda e, c: c))
    assert not v.passed
    assert all(not c.passed for c in v.checks if "exact" in c.name)
    # 8% off the exact formula fails the 5% tolerance
    assert not sf.signature(make_result(lambda e, c: e * 1.08)).passed
    # no grid point with lr*h >= 1: the continuous-time gap cannot be measured, so it fails
    v = sf.signature(make_result(lambda e, c: e, lr_h=(0.1, 0.5)))
    assert not v.passed and any(c.value is None for c in v.checks)


@pytest.mark.parametrize("mu", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("x", [0.01, 0.3, 1.0, 1.5])
def test_exact_formula_matches_lyapunov(mu, x):
    h, sigma = 2.0, 0.7
    lr = x / h
    # additive noise: closed forms of the docstring and scipy's discrete Lyapunov solver
    g2, s2 = sf.noise_moments("additive", h, sigma, 32)
    ex = sf.exact_variance(lr, h, mu, g2, s2)
    a = np.array([[1 + mu - lr * h, -mu], [1.0, 0.0]])
    ref = solve_discrete_lyapunov(a, np.diag([lr**2 * sigma**2, 0.0]))[0, 0]
    assert ex == pytest.approx(ref, rel=1e-10)
    assert ex == pytest.approx(lr * sigma**2 * (1 + mu) / (h * (1 - mu) * (2 * (1 + mu) - lr * h)), rel=1e-12)
    assert sf.continuous_variance(lr, h, mu, g2, s2) == pytest.approx(lr * sigma**2 / (2 * h * (1 - mu)))
    # minibatch noise: the generalised Lyapunov equation
    g2, s2 = sf.noise_moments("minibatch", h, sigma, 32)
    assert sf.exact_variance(lr, h, mu, g2, s2) == pytest.approx(sf.lyapunov_variance(lr, h, mu, g2, s2), rel=1e-9)


def test_plain_sgd_and_small_lr_limit():
    assert sf.exact_variance(0.5, 1.0, 0.0, 0.0, 1.0) == pytest.approx(0.5 / (2 - 0.5))
    # exact -> continuous as lr -> 0; the second moment diverges past the stability edge
    assert sf.exact_variance(1e-6, 1.0, 0.5, 0.1, 1.0) / sf.continuous_variance(
        1e-6, 1.0, 0.5, 0.1, 1.0
    ) == pytest.approx(1.0, abs=1e-5)
    assert math.isinf(sf.exact_variance(2.0, 1.0, 0.0, 0.0, 1.0))


def test_simulation_matches_theory_small():
    cfg = build_config(
        sf.Config, sf.PRESETS, "quick", {"lr_h": (0.5, 1.2), "n_chains": 2000, "steps": 400, "burn_in": 100}
    )
    for model in sf.NOISE_MODELS:
        g2, s2 = sf.noise_moments(model, cfg.h, cfg.sigma, cfg.batch_size)
        sim, se = sf.simulate(model, [0.5, 1.2], 0.5, cfg, seed=3)
        for lr, v, e in zip([0.5, 1.2], sim, se, strict=True):
            assert v == pytest.approx(sf.exact_variance(lr, 1.0, 0.5, g2, s2), rel=0.05)
            assert 0 < e < 0.05 * v


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(sf.ID)
    assert len(r.data["series"]) == 4
    for s in r.data["series"]:
        assert len(s["sim"]) == len(s["exact"]) == len(s["continuous"]) == 3
        assert s["lyapunov"] == pytest.approx(s["exact"], rel=1e-9)
    names = {c.name for c in r.verdict.checks}
    assert len(names) == 8 and "additive/mu=0: max|sim/exact-1|" in names
    assert r.figures and all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"lr_h": (2.5,)},
        {"lr_h": (1.5,), "batch_size": 2},
        {"momenta": (1.0,)},
        {"noise_models": ("levy",)},
        {"noise_models": ()},
        {"n_chains": 1},
        {"sigma": 0.0},
        {"lr_h": (-0.1,)},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(sf.Config, sf.PRESETS, "quick", over)
