import math

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import double_descent as dd

# a reduced sweep that runs in a few seconds: it checks the machinery, not the phenomenon
SMALL = dd.PRESETS["smoke"]

WIDTHS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def make_result(train_err, test_err):
    cfg = build_config(dd.Config, dd.PRESETS)
    data = {
        "widths": WIDTHS,
        "train_err": train_err,
        "test_err": test_err,
        "interp_err": dd.INTERP_ERR,
        "train_err_seeds": [[e] for e in train_err],
        "test_err_seeds": [[e] for e in test_err],
        "noisy_fit": [0.0] * len(WIDTHS),
    }
    return Result(dd.ID, cfg.to_dict(), 0, data)


TRAIN = [0.7, 0.5, 0.35, 0.25, 0.12, 0.005, 0.0, 0.0, 0.0, 0.0]  # threshold w*=32


def names(v):
    return {c.name: c for c in v.checks}


def test_peak_at_threshold_passes():
    test = [0.7, 0.4, 0.15, 0.10, 0.16, 0.24, 0.21, 0.18, 0.16, 0.15]
    v = dd.signature(make_result(TRAIN, test))
    assert v.passed, str(v)
    a = dd.analyse(make_result(TRAIN, test).data)
    assert a["threshold"] == 32 and a["peak"] == 32 and a["sweet_spot"] == 8
    assert a["rise_over_smaller"] == pytest.approx(0.14) and a["rise_over_largest"] == pytest.approx(0.09)
    assert "w*=32" in v.summary


def test_monotone_curve_fails():
    test = [0.7, 0.4, 0.2, 0.15, 0.13, 0.12, 0.11, 0.10, 0.10, 0.09]
    v = dd.signature(make_result(TRAIN, test))
    assert not v.passed
    assert not names(v)["peak_minus_best_smaller"].passed


def test_no_second_descent_fails():
    # the curve rises past the threshold and stays up: the largest width is not 3 points below the peak
    test = [0.7, 0.4, 0.15, 0.10, 0.16, 0.20, 0.21, 0.21, 0.21, 0.20]
    v = dd.signature(make_result(TRAIN, test))
    assert not v.passed and not names(v)["peak_minus_largest"].passed


def test_peak_far_from_threshold_fails():
    test = [0.7, 0.4, 0.15, 0.10, 0.12, 0.13, 0.14, 0.15, 0.25, 0.15]  # peak at 256 = 8x w*
    v = dd.signature(make_result(TRAIN, test))
    assert not v.passed and not names(v)["threshold/peak_width"].passed
    assert names(v)["peak_minus_largest"].passed


def test_small_peak_fails():
    test = [0.7, 0.4, 0.15, 0.10, 0.11, 0.12, 0.115, 0.11, 0.10, 0.10]  # 2 points only
    assert not dd.signature(make_result(TRAIN, test)).passed


def test_no_interpolation_fails():
    train = [0.7, 0.5, 0.35, 0.25, 0.2, 0.15, 0.1, 0.08, 0.05, 0.03]
    test = [0.7, 0.4, 0.15, 0.10, 0.16, 0.24, 0.21, 0.18, 0.16, 0.15]
    v = dd.signature(make_result(train, test))
    assert not v.passed and "no width reached" in v.summary
    assert names(v)["min_train_err"].value == pytest.approx(0.03)


def test_widths_are_log_spaced_and_unique():
    cfg = build_config(dd.Config, dd.PRESETS)
    ws = dd.widths_of(cfg)
    assert ws[0] == 1 and ws[-1] == 512 and len(ws) == len(set(ws)) == cfg.n_widths and ws == sorted(ws)
    assert dd.widths_of(build_config(dd.Config, dd.PRESETS, "quick", {"max_width": 5, "n_widths": 10})) == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(dd.ID)
    assert set(names(r.verdict)) == {
        "min_train_err",
        "peak_width/threshold",
        "threshold/peak_width",
        "peak_minus_best_smaller",
        "peak_minus_largest",
    }
    d = r.data
    assert d["widths"] == [1, 2, 6, 13, 32]
    for key in ("train_err", "test_err", "test_loss", "noisy_fit"):
        assert len(d[key]) == len(d["widths"]) and all(math.isfinite(v) for v in d[key])
    assert all(len(row) == 2 for row in d["test_err_seeds"])
    assert d["interp_err"] == dd.INTERP_ERR and d["n_train"] == 300 and d["diverged"] == {}
    assert r.figures and all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"label_noise": 1.0},
        {"max_width": 1},
        {"n_widths": 2},
        {"loss": "hinge"},
        {"dataset": "mnist1d", "n_train": 0},
        {"depth": 0},
        {"lr": 0.0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(dd.Config, dd.PRESETS, "quick", over)
