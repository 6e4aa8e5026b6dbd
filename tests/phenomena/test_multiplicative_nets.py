import math

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import multiplicative_nets as mn

BANDS = [1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0, 8.0]


def make_result(ratios_per_target, mult=0.01, diverged=()):
    cfg = build_config(mn.Config, mn.PRESETS)
    data = {
        "bands": BANDS,
        "widths": {"relu": 57, "mult": 40},
        "param_counts": {"relu": 9976, "mult": 10041},
        "lrs": [1e-3],
        "val_mse": {},
        "test_mse": {},
        "train_mse": {},
        "best_lr": {"relu": [1e-3] * 8, "mult": [1e-3] * 8},
        "best_test_mse": {"relu": [mult * r for r in ratios_per_target], "mult": [mult] * 8},
        "diverged": list(diverged),
    }
    return Result(mn.ID, cfg.to_dict(), 0, data)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _failed(v):
    return [c.name for c in v.checks if not c.passed]


def test_phenomenon_present_passes_every_check():
    v = mn.signature(make_result([1.1, 0.95, 1.6, 1.8, 2.5, 3.0, 4.0, 5.0]))
    assert v.passed, str(v)
    assert _check(v, "ratio_at_max_B").value == pytest.approx(math.sqrt(20.0))
    assert _check(v, "control_ratio_at_min_B").value == pytest.approx(math.sqrt(1.1 * 0.95))


def test_ratio_check_fails_when_the_gap_stays_below_2x():
    v = mn.signature(make_result([1.0, 1.0, 1.2, 1.3, 1.5, 1.6, 1.8, 1.9]))
    assert _failed(v) == ["ratio_at_max_B"]


def test_spearman_check_fails_when_the_gap_does_not_grow_with_bandwidth():
    # a big gap at intermediate B that shrinks again: largest B still >= 2x, control closes
    v = mn.signature(make_result([1.2, 1.1, 8.0, 9.0, 6.0, 7.0, 2.5, 2.2]))
    assert _failed(v) == ["spearman_ratio_vs_B"]


@pytest.mark.parametrize("low", [[20.0, 25.0], [0.2, 0.3]])
def test_control_fails_when_the_gap_does_not_close_at_low_bandwidth(low):
    # mult far better (or far worse) already at B=1; the gap still "grows" and is large at the largest B
    rest = [30.0, 35.0, 40.0, 45.0, 50.0, 60.0] if low[0] > 1 else [1.0, 1.5, 2.5, 3.0, 4.0, 5.0]
    v = mn.signature(make_result(low + rest))
    assert _failed(v) == ["control_ratio_at_min_B"]


def test_missing_values_fail_and_divergence_is_reported():
    r = make_result([1.1, 0.95, 1.6, 1.8, 2.5, 3.0, 4.0, 5.0], diverged=["mult lr=0.01"])
    r.data["best_test_mse"]["mult"][7] = None
    v = mn.signature(r)
    assert _failed(v) == ["ratio_at_max_B"] and "diverged" in v.summary


def test_targets_are_band_limited_sums_of_cosines():
    gen = torch.Generator().manual_seed(0)
    targets = mn.band_limited_targets(3, [0.5, 4.0], 7, gen)
    for (w, a, phi), b in zip(targets, [0.5, 4.0], strict=True):
        assert w.shape == (7, 3) and a.shape == (7,) and phi.shape == (7,)
        assert float(w.abs().max()) <= b and float(w.abs().max()) > b / 2
    x = torch.rand(5, 3, dtype=torch.float64)
    y = mn.evaluate_targets(x, targets)
    for n in range(5):
        for t, (w, a, phi) in enumerate(targets):
            explicit = sum(
                float(a[k]) * math.cos(sum(float(w[k, i]) * float(x[n, i]) for i in range(3)) + float(phi[k]))
                for k in range(7)
            )
            assert float(y[n, t]) == pytest.approx(explicit, abs=1e-12)


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(mn.ID)
    assert {c.name for c in r.verdict.checks} == {"ratio_at_max_B", "spearman_ratio_vs_B", "control_ratio_at_min_B"}
    d = r.data
    assert len(d["best_test_mse"]["relu"]) == len(d["bands"]) == len(d["best_test_mse"]["mult"])
    # equal parameter budgets: the two families within 5% of each other
    assert abs(d["param_counts"]["relu"] - d["param_counts"]["mult"]) <= 0.05 * d["param_counts"]["relu"]


@pytest.mark.parametrize(
    "over",
    [
        {"bandwidths": (2.0, 2.0)},
        {"bandwidths": (4.0, 1.0)},
        {"bandwidths": (0.0, 1.0)},
        {"params": 0},
        {"lrs": (-1.0,)},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(mn.Config, mn.PRESETS, "quick", over)
