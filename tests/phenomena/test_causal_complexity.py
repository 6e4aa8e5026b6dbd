import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, causal_complexity

N = 150


def make_result(an, pnl, bal, inv=0.2):
    """A constructed result: the given accuracies over N pairs per family (no training)."""
    cfg = build_config(causal_complexity.Config, causal_complexity.PRESETS)
    data = {"n_pairs": N}
    for kind, acc in (("an", an), ("pnl", pnl), ("balanced", bal), ("inverted", inv)):
        k = round(acc * N)
        data[f"{kind}_correct_test"] = k
        data[f"{kind}_correct_train"] = k
        data[f"{kind}_correct_pca"] = k
        data[f"{kind}_c_cause"] = [2.0] * k + [1.0] * (N - k)
        data[f"{kind}_c_effect"] = [1.0] * k + [2.0] * (N - k)
    return Result("causal-complexity", cfg.to_dict(), 0, data)


def failed(an, pnl, bal, inv=0.2):
    v = causal_complexity.signature(make_result(an, pnl, bal, inv))
    return [c.name for c in v.checks if not c.passed]


def test_present_passes_every_check():
    v = causal_complexity.signature(make_result(0.8, 0.9, 0.5))
    assert v.passed, str(v)
    assert any(c.name.startswith("control") for c in v.checks)


@pytest.mark.parametrize(
    "accs, name",
    [
        ((0.62, 0.70, 0.50), "synthetic_acc"),  # above chance on both, but below 70% pooled
        ((0.52, 0.95, 0.50), "an_acc_ci_low"),  # PNL carries the pooled accuracy, AN at chance
        ((0.95, 0.52, 0.50), "pnl_acc_ci_low"),
        ((0.90, 0.90, 0.65), "balanced_acc_off_chance"),  # the method still works on balanced pairs
        ((0.90, 0.90, 0.30), "balanced_acc_off_chance"),  # ... or reads something positional (two-sided)
        ((0.72, 0.72, 0.60), "gap_over_balanced"),  # the balanced pairs barely drop
        ((0.80, 0.90, 0.50, 0.50), "control_inverted_acc"),  # the score ignores complexity: chance, not below
        ((0.80, 0.90, 0.50, 0.45), "control_inverted_acc"),  # ... or only slightly below
    ],
)
def test_each_check_fails_alone_on_its_construction(accs, name):
    assert failed(*accs) == [name]


def test_absent_phenomenon_fails():
    # the univariate method at chance everywhere (or pointing the wrong way): no reproduction
    assert not causal_complexity.signature(make_result(0.5, 0.5, 0.5)).passed
    assert not causal_complexity.signature(make_result(0.2, 0.1, 0.5)).passed
    # a score that finds the direction by something other than marginal complexity does not flip on inverted pairs
    assert not causal_complexity.signature(make_result(0.85, 0.85, 0.5, 0.85)).passed


def test_wilson_interval_by_hand():
    lo, hi = causal_complexity.wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    lo, hi = causal_complexity.wilson_interval(5, 10)
    # (0.5 +- z sqrt(0.025 + z^2/400)) / (1 + z^2/10), z = 1.96
    z = 1.959963984540054
    half = z * (0.025 + z * z / 400) ** 0.5 / (1 + z * z / 10)
    assert lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    with pytest.raises(ConfigError):
        causal_complexity.wilson_interval(11, 10)


@pytest.mark.parametrize(
    "over", [{"noise_low": 0.5, "noise_high": 0.1}, {"n_test_vectors": 256}, {"k": 300}, {"n_pairs": 2}]
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(causal_complexity.Config, causal_complexity.PRESETS, "quick", over)


def test_smoke_run_end_to_end(smoke):
    store, r = smoke("causal-complexity")
    assert {c.name for c in r.verdict.checks} == {
        "synthetic_acc",
        "an_acc_ci_low",
        "pnl_acc_ci_low",
        "balanced_acc_off_chance",
        "gap_over_balanced",
        "control_inverted_acc",
    }
    n = r.data["n_pairs"]
    assert len(r.data["an_c_cause"]) == len(r.data["balanced_c_effect"]) == len(r.data["inverted_c_effect"]) == n
    assert all(p.endswith(".png") for p in r.figures)
