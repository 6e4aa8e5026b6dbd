from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import edge_of_stability as eos

TOTAL = 1000


def run_record(lr, ratios, diverged_at=None):
    steps = [20 * i for i in range(len(ratios))]
    sharp = [r * 2 / lr for r in ratios]
    stats = eos._last_half_stats(steps, sharp, lr, TOTAL)
    return {
        "lr": lr,
        "threshold": 2 / lr,
        "steps": steps,
        "sharpness": sharp,
        "train_loss": [1.0] * len(steps),
        "train_acc": [0.5] * len(steps),
        "initial_ratio": ratios[0] if ratios else None,
        "max_ratio": max(ratios) if ratios else None,
        "diverged_at": diverged_at,
        **stats,
    }


def result(runs):
    return Result(phenomenon=eos.ID, config=eos.Config().to_dict(), seed=0, data={"runs": runs, "total_steps": TOTAL})


def sharpening(n=51, start=0.3, arrive=20, wobble=0.05):
    """Ratio S/(2/lr) rising linearly from ``start`` to 1 at measurement ``arrive``, then oscillating."""
    up = [start + (1 - start) * i / arrive for i in range(arrive)]
    return up + [1 + (wobble if i % 2 else -wobble / 2) for i in range(n - arrive)]


def test_last_half_stats_use_measurements_from_the_middle_on():
    steps = [0, 250, 500, 750, 1000]
    st = eos._last_half_stats(steps, [10.0, 10.0, 19.0, 21.0, 30.0], 0.1, 1000)  # 2/lr = 20
    assert st["median_abs_dev"] == pytest.approx(0.05)  # |r-1| = .05, .05, .5
    assert st["frac_within"] == pytest.approx(2 / 3)


def test_verdict_passes_when_every_lr_sharpens_to_its_threshold():
    v = eos.signature(result([run_record(lr, sharpening()) for lr in (0.05, 0.1, 0.15)]))
    assert v.passed, str(v)
    assert len(v.checks) == 6
    assert v.checks[0].value == pytest.approx(0.3)


def test_verdict_fails_when_one_lr_never_reaches_the_threshold():
    flat = [0.3 + 0.3 * i / 50 for i in range(51)]  # rises only to 0.6 of 2/lr
    v = eos.signature(result([run_record(0.05, sharpening()), run_record(0.1, flat)]))
    assert not v.passed
    assert [c.passed for c in v.checks] == [True, True, True, False]


def test_verdict_fails_when_sharpness_starts_at_the_threshold():
    v = eos.signature(result([run_record(0.1, sharpening(start=1.0, arrive=1))]))
    assert not v.checks[0].passed and v.checks[1].passed and not v.passed


def test_verdict_fails_when_sharpness_overshoots_or_training_diverged():
    v = eos.signature(result([run_record(0.1, sharpening(wobble=0.4))]))
    assert not v.checks[1].passed
    d = run_record(0.1, [])
    d["diverged_at"] = 7
    v = eos.signature(result([d]))
    assert not v.passed and "diverged at step 7" in v.summary


def test_reduced_run_end_to_end(smoke):
    _, res = smoke(eos.ID)
    runs = res.data["runs"]
    assert [r["lr"] for r in runs] == [0.05, 0.1]
    for r in runs:
        assert r["steps"] == [0, 10, 20, 30, 40]
        assert len(r["sharpness"]) == 5 and all(s > 0 for s in r["sharpness"])
        assert r["median_abs_dev"] is not None and r["threshold"] == pytest.approx(2 / r["lr"])
    # same init for every lr: the step-0 sharpness is the same measurement
    assert runs[0]["sharpness"][0] == pytest.approx(runs[1]["sharpness"][0], rel=1e-3)
    assert len(res.verdict.checks) == 4
    assert res.figures and Path(res.figures[0]).exists()


@pytest.mark.parametrize(
    "override",
    [
        {"lrs": []},
        {"lrs": [0.1, -0.1]},
        {"lrs": [0.1, 0.1]},
        {"eval_every": 600, "steps": 1000},
        {"activation": "softmax"},
        {"dataset": "digits", "n_train": 5000},
        {"lanczos_tol": 0.0},
        {"lr": 0.1},
    ],
)
def test_bad_config_is_rejected(override):
    with pytest.raises(ConfigError):
        build_config(eos.Config, eos.PRESETS, "quick", override)
