import math
from pathlib import Path

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import probabilistic_stability as ps

SMALL = ps.PRESETS["smoke"]

PHASE_CHECKS = {f"net_cells_{p.replace(' ', '_')}" for p in ps.PHASES}


def make_result(net_phase=None, rel_shift=0.0, band=True):
    """2 x 2 grid whose four cells are the four theory phases."""
    cfg = build_config(ps.Config, ps.PRESETS, "quick", {})
    lam_p = [[0.2, -0.3], [-0.2, 0.4]]
    lam_m = [[-0.1, 0.5], [-0.3, 0.1]]  # cells: C, I / S, U
    m2_p = [[0.5, 0.2], [0.3 if band else -0.1, 0.9]]
    m2_m = [[-0.1, 0.9], [-0.2, 0.4]]
    th_phase = [
        [ps.theory_phase(a, b) for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(lam_p, lam_m, strict=True)
    ]
    assert th_phase == [["correct learning", "incorrect learning"], ["low-rank saddle", "loss of stability"]]
    meas = {
        "lam_plus": [[v * (1 + rel_shift) for v in r] for r in lam_p],
        "lam_minus": [[v * (1 + rel_shift) for v in r] for r in lam_m],
    }
    data = {
        "lrs": [0.1, 1.0],
        "batch_sizes": [1, 8],
        "mean_curvature": 0.35,
        "ls_slope": 0.35,
        "theory": {"lam_plus": lam_p, "lam_minus": lam_m, "m2_plus": m2_p, "m2_minus": m2_m},
        "measured": meas,
        "theory_phase": th_phase,
        "measured_phase": th_phase,
        "net_phase": net_phase if net_phase is not None else th_phase,
    }
    return Result(ps.ID, cfg.to_dict(), 0, data)


def test_signature_on_constructed_grids():
    v = ps.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == {"lyapunov_rel_error", "cells_M2>0_and_Lyapunov<0"} | PHASE_CHECKS
    # measured exponents 10% off the theory
    v = ps.signature(make_result(rel_shift=0.10))
    assert not next(c for c in v.checks if c.name == "lyapunov_rel_error").passed
    # no cell where the moment diverges but the exponent is negative
    v = ps.signature(make_result(band=False))
    assert not next(c for c in v.checks if c.name == "cells_M2>0_and_Lyapunov<0").passed
    # the trained nets never show incorrect learning where theory predicts it
    net = [["correct learning", "loss of stability"], ["low-rank saddle", "loss of stability"]]
    v = ps.signature(make_result(net_phase=net))
    assert not v.passed
    assert [c.name for c in v.checks if not c.passed] == ["net_cells_incorrect_learning"]


def test_data_and_linearisation_of_the_net():
    cfg = build_config(ps.Config, ps.PRESETS, "quick", {"n_data": 80})
    x, y = ps.make_data(cfg, seed=3)
    m = x * y
    p, a, b = 12 / 80, cfg.signal_slope, cfg.noise_slope  # round(0.15 * 80) = 12 signal points
    assert float(m.mean()) == pytest.approx(p * a - (1 - p) * b)
    # per-sample Hessian of the real net at 0 couples u_j and w_j only, with -x_i y_i
    k = 3
    H = ps.per_sample_saddle_hessians(x[:5], y[:5], k)
    for i in range(5):
        expect = torch.zeros(2 * k, 2 * k, dtype=torch.float64)
        for j in range(k):
            expect[j, k + j] = expect[k + j, j] = -m[i]
        assert torch.allclose(H[i], expect, atol=1e-12)
    # the ensemble trainer's net is the same function as the MLP it linearises
    net = ps._net(k)
    w, u = net.fc1.weight.detach().reshape(1, k), net.out.weight.detach().reshape(1, k)
    with torch.no_grad():
        ref = net(x[:7, None]).reshape(1, -1)
    assert torch.allclose(ps.ensemble_forward(u, w, x[None, :7]), ref, atol=1e-12)
    assert ps.batch_curvatures(m, 1, 10, torch.Generator()).equal(m)


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(ps.ID)
    assert {c.name for c in r.verdict.checks} == {"lyapunov_rel_error", "cells_M2>0_and_Lyapunov<0"} | PHASE_CHECKS
    d = r.data
    for key in ("net_phase", "theory_phase", "measured_phase", "net_slope", "net_frac_positive"):
        assert len(d[key]) == SMALL["n_lr"] and all(len(row) == 2 for row in d[key])
    assert all(p in ps.PHASES for row in d["net_phase"] for p in row)
    assert all(math.isfinite(v) for row in d["measured"]["lam_plus"] for v in row)
    assert {Path(p).name for p in r.figures} == {
        "phase_diagram.png",
        "stability_boundaries.png",
        "lyapunov_theory_vs_measured.png",
    }
    assert all(Path(p).exists() for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"lr_max": 0.01},
        {"batch_sizes": (1, 1)},
        {"batch_sizes": (1, 512)},
        {"signal_fraction": 0.1, "signal_slope": 1.0},
        {"grad_clip": 0.0},
        {"window": 0.0},
        {"lyap_burn_in": 5000},
        {"n_lr": 1},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ps.Config, ps.PRESETS, "quick", over)
