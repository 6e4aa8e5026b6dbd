"""contrastive-inversion: the helpers against exact references; each check fails on its own construction."""

import math

import pytest
import torch
import torch.nn.functional as F

from phenomlab.errors import ConfigError
from phenomlab.phenomena import build_config
from phenomlab.phenomena import contrastive_inversion as ci
from phenomlab.phenomena.verdict import Result
from phenomlab.train.contrastive import sample_vmf


def test_linear_r2_exact_affine_map_and_sklearn_reference():
    g = torch.Generator().manual_seed(0)
    z_fit, z_test = torch.randn(200, 4, generator=g), torch.randn(100, 4, generator=g)
    a, b = torch.randn(4, 4, generator=g), torch.randn(4, generator=g)
    per = ci.linear_r2(z_fit @ a + b, z_fit, z_test @ a + b, z_test)
    assert torch.allclose(per, torch.ones(4, dtype=torch.float64), atol=1e-9)
    # a noisy, partly nonlinear feature map: compare with scikit-learn's fit and score
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    def feats(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tanh(z[:, :2]), z[:, 2:3] ** 2, torch.randn(len(z), 2, generator=g)], 1)

    h_fit, h_test = feats(z_fit), feats(z_test)
    ref = LinearRegression().fit(h_fit.numpy(), z_fit.numpy()).predict(h_test.numpy())
    expected = r2_score(z_test.numpy(), ref, multioutput="raw_values")
    got = ci.linear_r2(h_fit, z_fit, h_test, z_test)
    assert got.tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_linear_r2_needs_more_fit_points_than_features():
    with pytest.raises(ConfigError):
        ci.linear_r2(torch.zeros(3, 4), torch.zeros(3, 2), torch.zeros(5, 4), torch.zeros(5, 2))


def test_orthogonal_r2_is_one_for_a_rotation_and_lower_for_a_shear():
    g = torch.Generator().manual_seed(1)
    z_fit = F.normalize(torch.randn(500, 5, generator=g), dim=1)
    z_test = F.normalize(torch.randn(500, 5, generator=g), dim=1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    assert ci.orthogonal_r2(z_fit @ q, z_fit, z_test @ q, z_test) == pytest.approx(1.0, abs=1e-9)
    shear = torch.eye(5) + 0.8 * torch.triu(torch.ones(5, 5), 1)
    lin = float(ci.linear_r2(z_fit @ shear, z_fit, z_test @ shear, z_test).mean())
    assert lin == pytest.approx(1.0, abs=1e-6)
    assert ci.orthogonal_r2(z_fit @ shear, z_fit, z_test @ shear, z_test) < 0.9


def test_generator_is_injective_by_explicit_inversion():
    g = ci.InjectiveMLP(6, 3, 0.2, 200, torch.Generator().manual_seed(2))
    w = g.weights.double()
    assert torch.allclose(w.norm(dim=1), torch.ones(3, 6, dtype=torch.float64), atol=1e-6)  # unit columns
    z = F.normalize(torch.randn(300, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64), dim=1)
    x = g(z.float()).double()
    # undo each layer: solve W, then the inverse leaky ReLU (slope 1/0.2 on the negative side)
    y = x
    for i in reversed(range(3)):
        if i < 2:
            y = torch.where(y >= 0, y, y / 0.2)
        y = torch.linalg.solve(w[i], y.T).T
    assert torch.allclose(y, z, atol=1e-4)
    # the chosen weights are better conditioned than a typical random draw of the same kind
    a = 2 * torch.rand(200, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 1
    a = a / a.norm(dim=1, keepdim=True)
    assert float(torch.linalg.cond(w).max()) < float(torch.linalg.cond(a).median())


def test_content_only_positives_keep_content_and_redraw_style():
    n, d, k = 20000, 6, 3
    z = F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64), dim=1)
    zp = ci.content_only_positives(z, 30.0, k, torch.Generator().manual_seed(6))
    w = sample_vmf(z, 30.0, torch.Generator().manual_seed(6))  # the same draws before the style block changes
    assert torch.allclose(zp[:, :k], w[:, :k])
    assert torch.allclose(zp[:, k:].norm(dim=1), w[:, k:].norm(dim=1))
    assert torch.allclose(zp.norm(dim=1), torch.ones(n, dtype=torch.float64))
    # style directions of z and z~ are unrelated (mean cosine ~ 0), while vMF positives keep them close
    cos_new = (F.normalize(zp[:, k:], dim=1) * F.normalize(z[:, k:], dim=1)).sum(1).mean()
    cos_vmf = (F.normalize(w[:, k:], dim=1) * F.normalize(z[:, k:], dim=1)).sum(1).mean()
    assert abs(float(cos_new)) < 4 / math.sqrt(n) and float(cos_vmf) > 0.5
    # z~ is still uniform on the sphere: second moment I/d
    assert torch.allclose(zp.T @ zp / n, torch.eye(d, dtype=torch.float64) / d, atol=0.01)


def present() -> dict:
    steps = [0, 500, 1000]
    return {
        "latent_dim": 4,
        "content_dims": 2,
        "generator_r2": 0.6,
        "vmf_mean_cosine": 0.9,
        "vmf": {
            "steps": steps,
            "r2": [0.45, 0.8, 0.95],
            "orthogonal_r2": [0.0, 0.5, 0.9],
            "objective": [None, 2.0, 1.5],
            "positive_cosine": [None, 0.8, 0.9],
            "final_r2_per_dim": [0.95] * 4,
        },
        "control": {
            "steps": steps,
            "r2": [0.45, 0.55, 0.6],
            "orthogonal_r2": [0.0, 0.1, 0.1],
            "objective": [None, 2.0, 1.8],
            "positive_cosine": [None, 0.8, 0.9],
            "final_r2_per_dim": [0.95, 0.95, 0.25, 0.25],
        },
    }


def failing(data: dict) -> set[str]:
    v = ci.signature(Result(phenomenon=ci.ID, config={}, seed=0, data=data))
    return {c.name for c in v.checks if not c.passed}


def test_present_passes():
    assert failing(present()) == set()


def test_low_r2_fails_linear_r2_only():
    d = present()
    d["vmf"]["r2"][-1] = 0.85
    assert failing(d) == {"linear_r2"}


def test_untrained_encoder_as_good_fails_gain_only():
    d = present()
    d["vmf"]["r2"][0] = 0.7  # a random encoder already linear in z: training adds < 0.3
    assert failing(d) == {"r2_gain_over_untrained"}


def test_control_that_recovers_the_style_fails_the_style_drop_only():
    d = present()
    # re-drawing the style costs nothing: no evidence that the vMF assumption matters
    d["control"]["final_r2_per_dim"] = [0.95, 0.95, 0.9, 0.9]
    d["control"]["r2"][-1] = 0.93
    assert failing(d) == {"control_style_r2_drop"}


def test_control_that_fails_to_train_fails_the_content_check_only():
    d = present()
    d["control"]["final_r2_per_dim"] = [0.6, 0.6, 0.25, 0.25]  # a broken control run, not a style-specific drop
    assert failing(d) == {"control_content_r2"}


def test_missing_step_zero_fails_gain():
    d = present()
    for k in ("steps", "r2", "orthogonal_r2", "objective", "positive_cosine"):
        d["vmf"][k] = d["vmf"][k][1:]
    assert "r2_gain_over_untrained" in failing(d)


@pytest.mark.parametrize(
    "over",
    [
        {"content_dims": 10},
        {"latent_dim": 1},
        {"batch_size": 1},
        {"kappa": 0.0},
        {"tau": -1.0},
        {"leaky_slope": 0.0},
        {"eval_every": 20_000},
        {"activation": "tanh"},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ci.Config, ci.PRESETS, "quick", over)


def test_temperature_defaults_to_inverse_kappa():
    assert build_config(ci.Config, ci.PRESETS, "quick", {"kappa": 20.0}).temperature == pytest.approx(0.05)
    assert build_config(ci.Config, ci.PRESETS, "quick", {"tau": 0.2}).temperature == 0.2


def test_smoke_run_end_to_end(smoke):
    store, r = smoke(ci.ID)
    assert {c.name for c in r.verdict.checks} == {
        "linear_r2",
        "r2_gain_over_untrained",
        "control_style_r2_drop",
        "control_content_r2",
    }
    assert r.data["vmf"]["steps"][0] == 0 and len(r.data["vmf"]["final_r2_per_dim"]) == r.data["latent_dim"]
    assert all(p.endswith(".png") for p in r.figures)


def test_linear_r2_gives_the_same_bits_on_every_call():
    g = torch.Generator().manual_seed(0)
    h, z = torch.randn(500, 32, generator=g, dtype=torch.float64), torch.randn(500, 8, generator=g, dtype=torch.float64)
    # MKL's gelsy (torch's default CPU driver) differed from the second call on
    first = ci.linear_r2(h[:400], z[:400], h[400:], z[400:])
    for _ in range(4):
        assert torch.equal(ci.linear_r2(h[:400], z[:400], h[400:], z[400:]), first)
