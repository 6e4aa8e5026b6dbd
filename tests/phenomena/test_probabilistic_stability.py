import math
from pathlib import Path

import numpy as np
import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import probabilistic_stability as ps

SMALL = ps.PRESETS["smoke"]

PHASE_CHECKS = {f"net_cells_{p.replace(' ', '_')}" for p in ps.PHASES}
ALL_CHECKS = {
    "lyapunov_rel_error",
    "band_cells_converged_and_moment_grows",
    "control_unstable_converged_fraction",
    "control_moment_stable_mean_ratio2",
    "phase_map_agreement_p_value",
} | PHASE_CHECKS


def make_result(
    net_phase=None, rel_shift=0.0, band=True, band_conv=0.9, band_ratio=50.0, unstable_conv=0.0, ctrl_ratio=0.01
):
    """2 x 4 grid: the first two columns are the four theory phases (C, I / S, U), the other four cells are
    low-rank-saddle cells too; every saddle cell is a band cell (M2+ > 0) unless ``band`` is False."""
    cfg = build_config(ps.Config, ps.PRESETS, "quick", {})
    m2s = 0.3 if band else -0.1
    lam_p = [[0.2, -0.3, -0.2, -0.1], [-0.2, 0.4, -0.25, -0.15]]
    lam_m = [[-0.1, 0.5, -0.3, -0.2], [-0.3, 0.1, -0.1, -0.05]]
    m2_p = [[0.5, 0.2, m2s, m2s], [m2s, 0.9, m2s, m2s]]
    m2_m = [[-0.1, 0.9, -0.2, -0.2], [-0.2, 0.4, -0.1, -0.1]]
    th_phase = [
        [ps.theory_phase(a, b) for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(lam_p, lam_m, strict=True)
    ]
    saddle = "low-rank saddle"
    assert th_phase == [
        ["correct learning", "incorrect learning", saddle, saddle],
        [saddle, "loss of stability", saddle, saddle],
    ]
    meas = {
        "lam_plus": [[v * (1 + rel_shift) for v in r] for r in lam_p],
        "lam_minus": [[v * (1 + rel_shift) for v in r] for r in lam_m],
    }
    # replicas: the saddle cells converge with a growing mean ||theta||^2, the other three escape
    conv = [[unstable_conv if p != saddle else band_conv for p in row] for row in th_phase]
    ratio = [[1e300 if p != saddle else band_ratio for p in row] for row in th_phase]
    data = {
        "lrs": [0.1, 1.0],
        "batch_sizes": [1, 8, 16, 32],
        "theory": {"lam_plus": lam_p, "lam_minus": lam_m, "m2_plus": m2_p, "m2_minus": m2_m},
        "measured": meas,
        "theory_phase": th_phase,
        "net_phase": net_phase if net_phase is not None else th_phase,
        "net_converged": conv,
        "net_mean_ratio2": ratio,
        "control_cells": [[0, 2]],
        "control_mean_ratio2": [ctrl_ratio],
    }
    return Result(ps.ID, cfg.to_dict(), 0, data)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _only_failure(v, name):
    assert not v.passed
    assert [c.name for c in v.checks if not c.passed] == [name], str(v)


def test_signature_passes_on_the_constructed_phenomenon():
    v = ps.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == ALL_CHECKS


def test_lyapunov_check_fails_when_the_measured_rate_is_off():
    _only_failure(ps.signature(make_result(rel_shift=0.15)), "lyapunov_rel_error")
    assert _check(ps.signature(make_result(rel_shift=0.05)), "lyapunov_rel_error").passed


def test_band_check_fails_without_convergence_or_without_moment_growth():
    # most replicas of the band cell do not converge
    _only_failure(ps.signature(make_result(band_conv=0.7)), "band_cells_converged_and_moment_grows")
    # they converge, but the replica mean of ||theta||^2 shrank: no sign of the diverging moment
    _only_failure(ps.signature(make_result(band_ratio=0.5)), "band_cells_converged_and_moment_grows")
    # no cell of the grid is in the band (M2 < 0 in the saddle cells)
    _only_failure(ps.signature(make_result(band=False)), "band_cells_converged_and_moment_grows")
    # the signature in fewer than MIN_BAND_CELLS cells
    r = make_result()
    r.data["net_converged"][0][2] = r.data["net_converged"][0][3] = r.data["net_converged"][1][2] = 0.5
    assert ps.band_cells_shown(r.data) == 2 < ps.MIN_BAND_CELLS
    _only_failure(ps.signature(r), "band_cells_converged_and_moment_grows")


@pytest.mark.parametrize("missing", ps.PHASES)
def test_each_phase_check_fails_when_the_nets_never_show_that_phase(missing):
    th = make_result().data["theory_phase"]
    other = {
        "correct learning": "loss of stability",
        "incorrect learning": "loss of stability",
        "low-rank saddle": ps.UNDECIDED,
        "loss of stability": "correct learning",
    }
    net = [[other[p] if p == missing else p for p in row] for row in th]
    _only_failure(ps.signature(make_result(net_phase=net)), f"net_cells_{missing.replace(' ', '_')}")


def test_phase_map_check_fails_when_the_map_agrees_with_the_theory_only_by_chance():
    # every phase matches once (the per-phase floors pass), but the other half of the cells is wrong
    net = [
        ["correct learning", "incorrect learning", "correct learning", "incorrect learning"],
        ["loss of stability", "loss of stability", "low-rank saddle", "correct learning"],
    ]
    v = ps.signature(make_result(net_phase=net))
    _only_failure(v, "phase_map_agreement_p_value")
    assert _check(v, "phase_map_agreement_p_value").value > 0.03


def test_phase_map_permutation_test_on_a_quick_sized_grid():
    rng = np.random.default_rng(3)
    phases = [*ps.PHASES, ps.UNDECIDED]
    theory = list(rng.choice(ps.PHASES, size=140, p=[0.35, 0.2, 0.2, 0.25]))
    p_same, chance = ps.phase_agreement_p_value(theory, theory)
    assert p_same == 1 / (1 + ps.PHASE_MAP_SHUFFLES) and 0.2 < chance < 0.35
    # a shuffled map meets every per-phase floor of the quick grid and fails the permutation test
    shuffled = list(rng.permutation(theory))
    assert all(sum(a == b == ph for a, b in zip(shuffled, theory, strict=True)) >= 1 for ph in ps.PHASES)
    assert ps.phase_agreement_p_value(shuffled, theory)[0] > ps.PHASE_MAP_P
    # labels drawn at random, with undecided cells, fail too
    assert ps.phase_agreement_p_value(list(rng.choice(phases, size=140)), theory)[0] > ps.PHASE_MAP_P
    # one wrong cell in five still beats the shuffles by far
    noisy = [rng.choice(phases) if rng.random() < 0.2 else t for t in theory]
    assert ps.phase_agreement_p_value(noisy, theory)[0] <= ps.PHASE_MAP_P
    # against enumeration: of the 6 orderings of (a, b, c), (a, b, c) and (a, c, b) match 2 cells of (a, b, b)
    p, chance = ps.phase_agreement_p_value(["a", "b", "c"], ["a", "b", "b"], shuffles=200_000)
    assert p == pytest.approx(2 / 6, abs=0.005) and chance == pytest.approx((2 + 2 + 0 + 0 + 1 + 1) / 6 / 3, abs=0.005)


def test_escape_control_fails_when_replicas_converge_where_the_theory_says_unstable():
    _only_failure(ps.signature(make_result(unstable_conv=0.5)), "control_unstable_converged_fraction")


def test_moment_control_fails_when_the_moment_grows_in_a_moment_stable_cell():
    _only_failure(ps.signature(make_result(ctrl_ratio=3.0)), "control_moment_stable_mean_ratio2")
    r = make_result()
    r.data["control_cells"], r.data["control_mean_ratio2"] = [], []
    _only_failure(ps.signature(r), "control_moment_stable_mean_ratio2")  # no control cell at all


def test_escape_phase_labels():
    assert ps.escape_phase(0.6, 0.3, 0.1) == "low-rank saddle"
    assert ps.escape_phase(0.1, 0.85, 0.05) == "correct learning"
    assert ps.escape_phase(0.0, 0.1, 0.9) == "incorrect learning"
    assert ps.escape_phase(0.0, 0.5, 0.5) == "loss of stability"
    assert ps.escape_phase(0.2, 0.0, 0.0) == ps.UNDECIDED


def test_data_and_the_real_net():
    cfg = build_config(ps.Config, ps.PRESETS, "quick", {"n_data": 80})
    x, y = ps.make_data(cfg, seed=3)
    m = x * y
    p, a, b = 12 / 80, cfg.signal_slope, cfg.noise_slope  # round(0.15 * 80) = 12 signal points
    assert float(m.mean()) == pytest.approx(p * a - (1 - p) * b)
    # per-sample Hessian of the real net at 0 couples u_j and w_j only, with -x_i y_i: e+/e- curvatures -m/+m
    k = 3
    H = ps.per_sample_saddle_hessians(x[:5], y[:5], k)
    for i in range(5):
        expect = torch.zeros(2 * k, 2 * k, dtype=torch.float64)
        for j in range(k):
            expect[j, k + j] = expect[k + j, j] = -m[i]
        assert torch.allclose(H[i], expect, atol=1e-12)
    # the replicas' forward pass and hand-written gradients are the MLP's, at a point far from the saddle
    net = ps._net(k)
    w, u = net.fc1.weight.detach().reshape(1, k), net.out.weight.detach().reshape(1, k)
    xb, yb = x[None, :7], y[None, :7]
    loss = ps._sq_loss(net(xb.reshape(-1, 1)), yb)
    gw_ref, gu_ref = torch.autograd.grad(loss, [net.fc1.weight, net.out.weight])
    with torch.no_grad():
        assert torch.allclose(ps.ensemble_forward(u, w, xb), net(xb.reshape(-1, 1)).reshape(1, -1), atol=1e-12)
    gu, gw = ps.replica_grads(u, w, xb, yb)
    assert torch.allclose(gu, gu_ref.reshape(1, k), atol=1e-12) and torch.allclose(gw, gw_ref.reshape(1, k), atol=1e-12)
    assert ps.batch_curvatures(m, 1, 10, torch.Generator()).equal(m)


def test_restriction_is_the_projection_on_e_plus_or_e_minus():
    g = torch.Generator().manual_seed(0)
    u, w = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    for s in (1.0, -1.0):
        a, b = ps._restrict(u, w, s)
        assert torch.allclose(b, s * a)
        a2, b2 = ps._restrict(a, b, s)
        assert a2.equal(a) and b2.equal(b)  # idempotent
        # the residual is orthogonal to the subspace
        assert float(((u - a) * a + (w - b) * b).sum()) == pytest.approx(0.0, abs=1e-12)
    assert ps._restrict(u, w, None) == (u, w)


def test_renormalised_replicas_measure_the_exponent_of_the_real_net():
    # B = 1: the theory E log|1 + lr m| is an exact finite average; 64 replicas x 300 steps, lr in the saddle band
    cfg = build_config(ps.Config, ps.PRESETS, "quick", {"n_data": 64, "width": 2, "replicas": 64, "lyap_steps": 300})
    x, y = ps.make_data(cfg, seed=0)
    lrs = np.array([0.1, 1.0])
    out = ps.lyapunov_replicas(x, y, lrs, (1,), 1.0, cfg, torch.Generator().manual_seed(0))
    for i, lr in enumerate(lrs):
        th = float(torch.log(torch.abs(1 + lr * x * y)).mean())
        assert abs(out["lam"][i][0] - th) <= 4 * out["se"][i][0] + 1e-3, (lr, out["lam"][i][0], th)


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(ps.ID)
    assert {c.name for c in r.verdict.checks} == ALL_CHECKS
    d = r.data
    for key in ("net_phase", "theory_phase", "net_converged", "net_mean_ratio2", "net_escaped_plus"):
        assert len(d[key]) == SMALL["n_lr"] and all(len(row) == 2 for row in d[key])
    assert all(p in (*ps.PHASES, ps.UNDECIDED) for row in d["net_phase"] for p in row)
    assert all(math.isfinite(v) for row in d["measured"]["lam_plus"] for v in row)
    assert all(0 <= v <= 1 for row in d["net_converged"] for v in row)
    assert len(d["free_steps"]) == len(d["net_mean_ratio2_t"][0][0])
    assert {Path(p).name for p in r.figures} == {
        "phase_diagram.png",
        "stability_boundaries.png",
        "lyapunov_theory_vs_measured.png",
        "band_moments_vs_probability.png",
    }
    assert all(Path(p).exists() for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"lr_max": 0.01},
        {"batch_sizes": (1, 1)},
        {"batch_sizes": (1, 512)},
        {"signal_fraction": 0.1, "signal_slope": 1.0},
        {"init_scale": 0.5},
        {"lyap_scale": 1.0},
        {"replicas": 1},
        {"n_lr": 1},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ps.Config, ps.PRESETS, "quick", over)
