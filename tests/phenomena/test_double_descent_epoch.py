from pathlib import Path

import pytest
import torch

import phenomlab
from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import double_descent_epoch as dd

# a reduced run: checks the machinery in a few seconds, not that the curve has two descents
SMALL = dd.PRESETS["smoke"]
CHECKS = {
    "rise after first minimum",
    "fall after the peak",
    "recovery fall/rise",
    "noisy fitted at the peak >= 0.5",
    "noisy fitted at the peak <= 0.95",
    "control_clean_rise/noisy_fall",
    "small_head_fall/wide_head_fall",
}


def plateau(v, k=6):
    return [v] * k


def ramp(rate, n=28):
    return [min(1.0, rate * i) for i in range(n)]


DOUBLE = [0.9, 0.5] + plateau(0.10) + plateau(0.16) + plateau(0.11) + plateau(0.08, 10)
U_SHAPE = [0.9, 0.5] + plateau(0.10) + plateau(0.16) + plateau(0.18, 10)
MONOTONE = [0.9 - 0.03 * i for i in range(28)]
# clean labels: the error falls and stays down
CLEAN = [0.9, 0.5] + plateau(0.08) + plateau(0.07) + plateau(0.065, 16)
# a narrower head: a classical U (rise 0.05, fall 0.01)
SMALL_HEAD = [0.9, 0.5] + plateau(0.12) + plateau(0.17) + plateau(0.16, 16)


def curves(test_error, noisy=None, width=2048):
    n = len(test_error)
    return {
        "epochs": [float(i) for i in range(n)],
        "train_error": [max(0.0, 0.5 - 0.05 * i) for i in range(n)],
        "test_error": test_error,
        "clean_train_error": [0.0] * n,
        "noisy_fitted": noisy if noisy is not None else ramp(0.07, n),  # 0.7 at the peak (evaluation 10)
        "n_train": 100,
        "n_test": 100,
        "width": width,
    }


def make_result(test_error, noisy=None, clean=CLEAN, small=SMALL_HEAD):
    cfg = build_config(dd.Config, dd.PRESETS)
    data = curves(test_error, noisy)
    if clean is not None:
        data["control_clean"] = {**curves(clean, width=2048), "noisy_fitted": None, "label_noise": 0.0}
    if small is not None:
        data["small_head"] = curves(small, width=256)
    return Result(dd.ID, cfg.to_dict(), 0, data)


def names(v):
    return {c.name: c for c in v.checks}


def only_failing(v):
    return {c.name for c in v.checks if not c.passed}


def test_smooth_and_bump():
    assert dd.smooth([0.0, 0.0, 5.0, 0.0, 0.0], 5) == pytest.approx([5 / 3, 5 / 4, 1.0, 5 / 4, 5 / 3])
    b = dd.bump([3.0, 1.0, 2.0, 4.0, 2.0, 0.5, 1.0])
    assert (b["first_min"], b["peak"], b["later_min"]) == (1, 3, 5)
    assert b["rise"] == pytest.approx(3.0) and b["fall"] == pytest.approx(3.5)
    assert dd.bump(MONOTONE)["rise"] == pytest.approx(0.0)


def test_signature_on_constructed_curves():
    v = dd.signature(make_result(DOUBLE))
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == CHECKS
    rise = next(c for c in v.checks if c.name == "rise after first minimum")
    assert rise.value == pytest.approx(0.06, abs=1e-9)
    assert "noisy labels fitted" in v.summary
    # classical overfitting: rises and stays up
    v = dd.signature(make_result(U_SHAPE))
    assert not v.passed and not next(c for c in v.checks if c.name == "fall after the peak").passed
    assert not dd.signature(make_result(MONOTONE)).passed
    # a one-point wiggle is below the a-priori thresholds
    small = [0.9, 0.5] + plateau(0.10) + plateau(0.11) + plateau(0.09, 10)
    assert not dd.signature(make_result(small)).passed
    # a single-evaluation spike is smoothed away
    spike = [0.9, 0.5] + plateau(0.10) + [0.18] + plateau(0.10, 10)
    assert not dd.signature(make_result(spike)).passed


def test_measures_of_the_constructed_double_descent():
    m = dd.measures(make_result(DOUBLE).data)
    assert m["peak"] == 10 and m["fitted_at_peak"] == pytest.approx(0.7)
    assert m["rise"] == pytest.approx(0.06) and m["fall"] == pytest.approx(0.08)
    assert m["recovery"] == pytest.approx(0.08 / 0.06) and m["clean_ratio"] == pytest.approx(0.0)
    assert m["small"]["fall"] == pytest.approx(0.01) and m["small_ratio"] == pytest.approx(0.125)


def test_partial_recovery_fails():
    # rises 8 points, falls back only 3 (> FALL_MIN but < half the rise)
    partial = [0.9, 0.5] + plateau(0.10) + plateau(0.18) + plateau(0.15, 16)
    v = dd.signature(make_result(partial))
    assert only_failing(v) == {"recovery fall/rise"}
    assert names(v)["recovery fall/rise"].value == pytest.approx(0.375)


def test_peak_before_the_noisy_labels_are_fitted_fails():
    v = dd.signature(make_result(DOUBLE, noisy=ramp(0.03)))  # 0.3 fitted at the peak
    assert only_failing(v) == {"noisy fitted at the peak >= 0.5"}


def test_peak_after_the_noisy_labels_are_fitted_fails():
    v = dd.signature(make_result(DOUBLE, noisy=ramp(0.1)))  # all fitted by the peak
    assert only_failing(v) == {"noisy fitted at the peak <= 0.95"}


def test_clean_control_with_the_same_bump_fails():
    v = dd.signature(make_result(DOUBLE, clean=[e - 0.03 for e in DOUBLE]))
    assert only_failing(v) == {"control_clean_rise/noisy_fall"}
    assert names(v)["control_clean_rise/noisy_fall"].value == pytest.approx(0.06 / 0.08)


def test_clean_control_that_only_overfits_fails():
    # no second descent in the control, but a 3-point rise: the largest rise counts, with or without a fall
    v = dd.signature(make_result(DOUBLE, clean=U_SHAPE[:20] + plateau(0.13, 8)))
    assert "control_clean_rise/noisy_fall" in only_failing(v)


def test_small_head_that_descends_as_much_fails():
    v = dd.signature(make_result(DOUBLE, small=DOUBLE))
    assert only_failing(v) == {"small_head_fall/wide_head_fall"}
    assert names(v)["small_head_fall/wide_head_fall"].value == pytest.approx(1.0)


def test_missing_runs_fail():
    v = dd.signature(make_result(DOUBLE, clean=None, small=None))
    assert only_failing(v) == {"control_clean_rise/noisy_fall", "small_head_fall/wide_head_fall"}


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(dd.ID)
    d = r.data
    assert {c.name for c in r.verdict.checks} == CHECKS
    assert len(d["epochs"]) == SMALL["epochs"] + 1
    assert d["control_clean"]["label_noise"] == 0.0 and d["control_clean"]["noisy_fitted"] is None
    assert d["small_head"]["width"] == SMALL["small_width"] and d["small_head"]["noisy_fitted"] is not None
    assert len(d["small_head"]["test_error"]) == len(d["control_clean"]["test_error"]) == len(d["epochs"])
    for key in ("train_error", "test_error", "clean_train_error", "noisy_fitted"):
        assert len(d[key]) == len(d["epochs"]) and all(0.0 <= x <= 1.0 for x in d[key]), key
    assert d["n_train"] == 1348
    assert r.figures and all(Path(p).exists() and p.endswith(".png") for p in r.figures)


def test_shift_augment_only_in_training():
    net = torch.nn.Identity()
    aug = dd.ShiftAugment(net, 3)
    x = torch.arange(1.0, 41.0).repeat(50, 1)
    aug.eval()
    assert torch.equal(aug(x), x)
    aug.train()
    out = aug(x)
    assert out.shape == x.shape and not torch.equal(out, x)
    # each row is the signal shifted by |s| <= 3 with zeros filling in: nonzero values stay consecutive
    for row in out:
        nz = row[row != 0]
        assert len(nz) >= 37 and torch.equal(nz, torch.arange(nz[0].item(), nz[0].item() + len(nz)))


# a tiny CNN on 100 mnist1d signals, 5 epochs: checks a code path, not the phenomenon
TINY_CNN = dict(n_train=100, n_test=100, channels=(4, 8), width=8, small_width=4, epochs=5, eval_epochs=1)


def test_cnn_with_augmentation_runs(tmp_path):
    r = phenomlab.run(dd.ID, store=str(tmp_path), seed=0, shift_augment=2, **TINY_CNN)
    assert len(r.data["test_error"]) == 6 and r.data["n_train"] == 100


def test_adam_preset_runs(tmp_path):
    # the earlier (Adam) setting stays runnable; a reduced version of it checks the optimiser path
    r = phenomlab.run(dd.ID, preset="adam", store=str(tmp_path), seed=0, **TINY_CNN)
    assert len(r.data["test_error"]) == 6 and r.data["n_train"] == 100


def test_no_label_noise_runs(tmp_path):
    r = phenomlab.run(dd.ID, store=str(tmp_path), seed=0, label_noise=0.0, **SMALL)
    assert r.data["noisy_fitted"] is None and len(r.verdict.checks) == len(CHECKS)
    assert not names(r.verdict)["noisy fitted at the peak >= 0.5"].passed


@pytest.mark.parametrize(
    "over",
    [
        {"label_noise": 1.0},
        {"lr": 0.0},
        {"optimizer": "rmsprop"},
        {"dataset": "cifar"},
        {"epochs": 8, "eval_epochs": 2},
        {"width": 0},
        {"small_width": 2048},
        {"small_width": 0},
        {"channels": (32, 0)},
        {"shift_augment": -1},
        {"shift_augment": 40},
        {"shift_augment": 2, "dataset": "digits"},
        {"momentum": 1.0},
        {"optimizer": "adam"},
        {"optimizer": "adamw", "momentum": 0.5},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(dd.Config, dd.PRESETS, "quick", over)
