import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import sgd_fluctuation as sf

SMALL = sf.PRESETS["smoke"]


def matrix_series(mat_of=lambda e, c: e, lr_h=(1.0, 0.75), momenta=(0.0, 0.9)):
    """Matrix-case series on a small regression set whose ``sim`` is ``mat_of(exact, continuous)``."""
    x, y = sf.regression_data(4, 64, (0.1, 1.0), 1.0, seed=0)
    lam = np.linalg.eigvalsh(x.T @ x / 64).max()
    out = []
    for mu, lrh in zip(momenta, lr_h, strict=True):
        ex, rho = sf.matrix_covariance(x, y, lrh / lam, mu, 32)
        ct = sf.matrix_covariance_continuous(x, y, lrh / lam, mu, 32)
        assert rho < 1
        out.append(
            {
                "name": f"torch-sgd/mu={mu:g}",
                "momentum": mu,
                "lr": lrh / lam,
                "lr_h": lrh,
                "rho": rho,
                "sim": np.asarray(mat_of(ex, ct)).tolist(),
                "exact": ex.tolist(),
                "continuous": ct.tolist(),
            }
        )
    return out


def make_result(sim_of, lr_h=(0.25, 1.0, 1.5), matrix=None):
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
    data = {"lr_h": list(lr_h), "series": series, "matrix": matrix_series() if matrix is None else matrix}
    return Result(sf.ID, cfg.to_dict(), 0, data)


def by_name(v):
    return {c.name: c for c in v.checks}


def test_signature_on_constructed_data():
    v = sf.signature(make_result(lambda e, c: e * 1.02))
    assert v.passed, str(v)
    assert len(v.checks) == 4 * 2 + 2 * 2
    assert sum(c.name.startswith("control_continuous_time") for c in v.checks) == 6
    # a simulation that follows the continuous-time theory is not the discrete-time signature
    v = sf.signature(make_result(lambda e, c: c))
    assert not v.passed
    assert all(not c.passed for c in v.checks if "exact" in c.name and "matrix" not in c.name and "torch" not in c.name)
    # ... and the continuous-time control fails on every scalar series
    assert all(not c.passed for c in v.checks if c.name.startswith("control") and "torch" not in c.name)
    # 8% off the exact formula fails the 5% tolerance
    assert not sf.signature(make_result(lambda e, c: e * 1.08)).passed
    # no grid point with lr*h >= 1: the continuous-time gap cannot be measured, so it fails
    v = sf.signature(make_result(lambda e, c: e, lr_h=(0.1, 0.5)))
    assert not v.passed and any(c.value is None for c in v.checks)


def test_matrix_exact_check_fails_when_covariance_is_8_percent_off():
    def skew(e, c):
        # off-diagonal change of relative Frobenius size 0.08: diagonal entries alone would not catch it
        m = np.zeros_like(e)
        m[0, 1] = m[1, 0] = 0.08 * np.linalg.norm(e) / math.sqrt(2)
        return e + m

    v = by_name(sf.signature(make_result(lambda e, c: e, matrix=matrix_series(skew))))
    for mu in ("0", "0.9"):
        c = v[f"torch-sgd/mu={mu}: |Sigma_sim-Sigma_exact|_F/|Sigma_exact|_F"]
        assert not c.passed and c.value == pytest.approx(0.08)
        assert v[f"control_continuous_time torch-sgd/mu={mu}: |Sigma_sim-Sigma_ct|_F/|Sigma_ct|_F"].passed


def test_matrix_control_fails_where_continuous_time_is_right():
    # at small lr the exact and continuous-time covariances coincide: a simulation matching the exact formula then
    # matches the null model too, and the control (not the accuracy check) fails
    v = sf.signature(make_result(lambda e, c: e, matrix=matrix_series(lr_h=(0.02, 0.02))))
    assert not v.passed
    for c in v.checks:
        if "torch" in c.name:
            assert c.passed != c.name.startswith("control"), str(c)


def test_matrix_formula_reduces_to_the_scalar_closed_form():
    # d = 1: gamma^2 = Var_i(h_i)/B, s^2 = mean_i z_i^2 / B (with replacement); the paper's scalar formula
    x, y = sf.regression_data(1, 50, (0.7, 0.7), 0.5, seed=4)
    _, hi, z = sf._per_sample(x, y)
    for mu in (0.0, 0.5, 0.9):
        for b in (1, 8):
            g2, s2 = hi.ravel().var() / b, (z.ravel() ** 2).mean() / b
            h = hi.mean()
            lr = 0.8 / h
            m, rho = sf.matrix_covariance(x, y, lr, mu, b)
            ref = sf.exact_variance(lr, h, mu, g2, s2)
            if math.isfinite(ref):
                assert rho < 1 and m[0, 0] == pytest.approx(ref, rel=1e-9)
                ct = sf.matrix_covariance_continuous(x, y, lr, mu, b)
                assert ct[0, 0] == pytest.approx(sf.continuous_variance(lr, h, mu, g2, s2), rel=1e-9)
            else:
                assert rho >= 1 and math.isinf(m[0, 0])


def test_matrix_formula_without_multiplicative_noise_is_the_discrete_lyapunov_solution():
    # the multiplicative part (1/B) Var(H_i) and the noise (1/B) E[z z^T] both scale as 1/B, so as B -> inf
    # B * Sigma -> the additive-noise solution: the discrete Lyapunov equation of the mean dynamics (scipy's solver)
    x, y = sf.regression_data(3, 400, (0.2, 1.0), 1.0, seed=1)
    _, hi, z = sf._per_sample(x, y)
    h, c = hi.mean(0), z.T @ z / len(z)
    lr, mu, b = 1.2 / np.linalg.eigvalsh(h).max(), 0.5, 10**7
    m, _ = sf.matrix_covariance(x, y, lr, mu, b)
    abar = np.block([[np.eye(3) - lr * h, -lr * mu * np.eye(3)], [h, mu * np.eye(3)]])
    noise = np.block([[lr**2 * c, -lr * c], [-lr * c, c]])
    ref = solve_discrete_lyapunov(abar, noise)[:3, :3]
    assert m * b == pytest.approx(ref, rel=1e-5, abs=1e-9 * np.abs(ref).max())


def test_torch_sgd_momentum_is_the_recursion_of_the_formula():
    # torch: buf <- mu buf + g (buf = g at the first step), p <- p - lr buf; the formula's s' = A_b s + c_b
    x, y = sf.regression_data(3, 20, (0.2, 1.0), 1.0, seed=2)
    theta, hi, z = sf._per_sample(x, y)
    lr, mu = 0.3, 0.9
    p = torch.nn.Parameter(torch.from_numpy(theta + 0.1))
    opt = torch.optim.SGD([p], lr=lr, momentum=mu)
    e, buf = np.full(3, 0.1), np.zeros(3)
    for idx in ([0, 3, 3], [5, 1, 7], [2, 2, 9], [19, 0, 4]):
        xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        opt.zero_grad()
        (0.5 * (xb @ p - yb).pow(2).mean()).backward()
        opt.step()
        hb, zb = hi[idx].mean(0), z[idx].mean(0)
        a = np.block([[np.eye(3) - lr * hb, -lr * mu * np.eye(3)], [hb, mu * np.eye(3)]])
        s = a @ np.concatenate([e, buf]) + np.concatenate([lr * zb, -zb])
        e, buf = s[:3], s[3:]
        assert p.detach().numpy() - theta == pytest.approx(e, rel=1e-10, abs=1e-12)
        assert opt.state[p]["momentum_buffer"].numpy() == pytest.approx(buf, rel=1e-10, abs=1e-12)


def test_torch_sgd_replicas_match_the_matrix_formula_small():
    x, y = sf.regression_data(3, 32, (0.2, 1.0), 1.0, seed=5)
    lam = np.linalg.eigvalsh(x.T @ x / 32).max()
    for mu, lrh in ((0.0, 1.0), (0.9, 0.5)):
        ex, rho = sf.matrix_covariance(x, y, lrh / lam, mu, 8)
        sim = sf.simulate_torch_sgd(x, y, lrh / lam, mu, 8, replicas=512, steps=300, burn_in=150, seed=1)
        assert rho < 1 and sf.rel_fro(sim, ex) < 0.05


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
    assert [m["momentum"] for m in r.data["matrix"]] == [0.0, 0.9]
    for m in r.data["matrix"]:
        assert np.asarray(m["sim"]).shape == (3, 3) and m["rho"] < 1
    for s in r.data["series"]:
        assert len(s["sim"]) == len(s["exact"]) == len(s["continuous"]) == 3
        assert s["lyapunov"] == pytest.approx(s["exact"], rel=1e-9)
    names = {c.name for c in r.verdict.checks}
    assert len(names) == 12 and "additive/mu=0: max|sim/exact-1|" in names
    assert "control_continuous_time torch-sgd/mu=0.9: |Sigma_sim-Sigma_ct|_F/|Sigma_ct|_F" in names
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
        {"matrix_lr_h": (1.0,)},
        {"matrix_h_range": (1.0, 0.1)},
        {"matrix_n": 10},
        {"matrix_momenta": (0.0, 1.0)},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(sf.Config, sf.PRESETS, "quick", over)
