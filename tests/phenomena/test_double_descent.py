import math

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import double_descent as dd
from phenomlab.phenomena.lifecycle import run_phenomenon
from phenomlab.store.sqlite import RunStore

# a reduced sweep that runs in a few seconds: it checks the machinery, not the phenomenon
SMALL = dd.PRESETS["smoke"]

WIDTHS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def sweep_data(train_err, test_err, widths=WIDTHS, n_train=600):
    return {
        "widths": widths,
        "train_err": train_err,
        "test_err": test_err,
        "interp_err": dd.INTERP_ERR,
        "train_err_seeds": [[e] for e in train_err],
        "test_err_seeds": [[e] for e in test_err],
        "noisy_fit": [0.0] * len(widths),
        "n_train": n_train,
    }


TRAIN = [0.7, 0.5, 0.35, 0.25, 0.12, 0.005, 0.0, 0.0, 0.0, 0.0]  # threshold w*=32
# label noise 0: interpolates early, test error falls monotonically (+1 point of noise at w=64)
CLEAN = sweep_data(
    [0.5, 0.2, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.6, 0.3, 0.1, 0.06, 0.05, 0.045, 0.055, 0.05, 0.045, 0.04]
)
# n_train x 2 on the grid x 2: threshold 64 (2x), peak at 64, second descent
NX = sweep_data(
    [0.7, 0.5, 0.35, 0.25, 0.2, 0.005, 0.0, 0.0, 0.0, 0.0],
    [0.6, 0.3, 0.12, 0.09, 0.08, 0.2, 0.17, 0.15, 0.13, 0.12],
    widths=[2 * w for w in WIDTHS],
    n_train=1200,
)


def make_result(train_err, test_err, clean=CLEAN, nx=NX):
    cfg = build_config(dd.Config, dd.PRESETS)
    data = sweep_data(train_err, test_err)
    if clean is not None:
        data["control_clean"] = clean
    if nx is not None:
        data["n_train_x"] = nx
    return Result(dd.ID, cfg.to_dict(), 0, data)


def names(v):
    return {c.name: c for c in v.checks}


def test_peak_at_threshold_passes():
    test = [0.7, 0.4, 0.15, 0.10, 0.16, 0.24, 0.21, 0.18, 0.16, 0.15]
    v = dd.signature(make_result(TRAIN, test))
    assert v.passed, str(v)
    a = dd.analyse(make_result(TRAIN, test).data)
    assert a["threshold"] == 32 and a["peak"] == 32 and a["sweet_spot"] == 8
    assert a["rise_over_smaller"] == pytest.approx(0.14) and a["rise_over_largest"] == pytest.approx(0.09)
    assert "w*=32" in v.summary and "n_train x2: w*=64" in v.summary
    c = dd.controls(make_result(TRAIN, test).data)
    assert c["bump"] == pytest.approx(0.14) and c["clean_bump"] == pytest.approx(0.01)
    assert c["threshold_shift"] == 2 and c["peak_shift"] == 2 and c["nx_window"] == 1
    # the sweeps may come in either order: the shifts are always larger n over smaller n
    swapped = make_result(NX["train_err"], NX["test_err"], nx=sweep_data(TRAIN, test)).data
    swapped.update(widths=NX["widths"], n_train=1200)
    c2 = dd.controls(swapped)
    assert c2["threshold_shift"] == 2 and c2["peak_shift"] == 2


def test_peak_location_averages_three_neighbouring_widths():
    # raw argmax at 64 (0.21), but 32 with its neighbours (0.20, 0.205, 0.12 around) is the plateau's centre
    d = sweep_data(TRAIN, [0.7, 0.4, 0.15, 0.10, 0.20, 0.205, 0.21, 0.12, 0.11, 0.10])
    assert dd.analyse(d)["peak"] == 64 and dd.peak_location(d) == 32


PEAKED = [0.7, 0.4, 0.15, 0.10, 0.16, 0.24, 0.21, 0.18, 0.16, 0.15]


def test_bump_is_the_largest_rise_over_the_running_minimum():
    assert dd.bump([0.5, 0.3, 0.35, 0.2, 0.28, 0.1]) == pytest.approx(0.08)
    assert dd.bump([0.5, 0.4, 0.3]) == pytest.approx(-0.1)  # monotone: no rise
    assert dd.bump([0.5, float("nan")]) is None


def test_clean_control_with_the_same_bump_fails():
    # label noise 0 shows the peak too: the control check fails while every noisy-sweep check passes
    clean = sweep_data(TRAIN, [e - 0.02 for e in PEAKED])
    v = dd.signature(make_result(TRAIN, PEAKED, clean=clean))
    assert not v.passed and not names(v)["control_clean_bump/noisy_bump"].passed
    assert names(v)["control_clean_bump/noisy_bump"].value == pytest.approx(1.0)
    assert all(c.passed for c in v.checks if c.name != "control_clean_bump/noisy_bump")


def test_clean_bump_just_under_a_third_passes_and_just_over_fails():
    def clean(rise):
        return sweep_data(CLEAN["train_err"], [0.6, 0.3, 0.1, 0.06, 0.05, 0.05 + rise, 0.05, 0.05, 0.05, 0.05])

    assert names(dd.signature(make_result(TRAIN, PEAKED, clean=clean(0.045))))["control_clean_bump/noisy_bump"].passed
    assert not names(dd.signature(make_result(TRAIN, PEAKED, clean=clean(0.05))))[
        "control_clean_bump/noisy_bump"
    ].passed


def test_missing_controls_fail():
    v = dd.signature(make_result(TRAIN, PEAKED, clean=None, nx=None))
    assert not v.passed
    for name in ("control_clean_bump/noisy_bump", "threshold_shift_with_n", "peak_shift_with_n"):
        assert names(v)[name].value is None and not names(v)[name].passed


def test_threshold_that_does_not_move_fails():
    # n_train x 2 interpolates at the same width 32 (grid x 2: index 4) and peaks there
    nx = sweep_data(
        [0.7, 0.5, 0.35, 0.25, 0.005, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.6, 0.3, 0.12, 0.09, 0.2, 0.17, 0.15, 0.14, 0.13, 0.12],
        widths=[2 * w for w in WIDTHS],
        n_train=1200,
    )
    v = dd.signature(make_result(TRAIN, PEAKED, nx=nx))
    assert not names(v)["threshold_shift_with_n"].passed and not names(v)["peak_shift_with_n"].passed
    assert names(v)["threshold_shift_with_n"].value == 1 and names(v)["peak_shift_with_n"].value == 1
    assert names(v)["nx_peak_minus_best_smaller"].passed and names(v)["nx_peak_window"].passed


def test_peak_that_does_not_move_fails():
    # the threshold moves 2x but the test-error peak stays at width 32
    nx = sweep_data(NX["train_err"], [0.6, 0.3, 0.12, 0.09, 0.2, 0.17, 0.16, 0.15, 0.13, 0.12], NX["widths"], 1200)
    v = dd.signature(make_result(TRAIN, PEAKED, nx=nx))
    assert names(v)["threshold_shift_with_n"].passed and not names(v)["peak_shift_with_n"].passed
    assert not v.passed


def test_larger_sample_without_a_peak_fails():
    # monotone test error at n_train x 2: the "peak" (worst width after the sweet spot) is noise, < 3 points
    nx = sweep_data(NX["train_err"], [0.6, 0.3, 0.12, 0.09, 0.08, 0.075, 0.08, 0.07, 0.06, 0.06], NX["widths"], 1200)
    v = dd.signature(make_result(TRAIN, PEAKED, nx=nx))
    assert not names(v)["nx_peak_minus_best_smaller"].passed and not v.passed


def test_larger_sample_peak_far_from_its_threshold_fails():
    # n_train x 2: threshold 64 but the error keeps rising to the widest model (peak 1024 = 16x w*), which would
    # pass the shift checks on its own
    nx = sweep_data(NX["train_err"], [0.6, 0.3, 0.12, 0.09, 0.08, 0.12, 0.14, 0.16, 0.18, 0.2], NX["widths"], 1200)
    v = dd.signature(make_result(TRAIN, PEAKED, nx=nx))
    assert names(v)["peak_shift_with_n"].passed
    assert not names(v)["nx_peak_window"].passed and not v.passed


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
    cfg = build_config(dd.Config, dd.PRESETS, "quick", {"widths": ()})
    ws = dd.widths_of(cfg)
    assert ws[0] == 1 and ws[-1] == 512 and len(ws) == len(set(ws)) == cfg.n_widths and ws == sorted(ws)
    quick = build_config(dd.Config, dd.PRESETS, "quick")
    assert dd.widths_of(quick) == sorted(quick.widths) and dd.widths_of(quick)[-1] == 320
    assert dd.widths_of(
        build_config(dd.Config, dd.PRESETS, "quick", {"max_width": 5, "n_widths": 10, "widths": ()})
    ) == [
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
        "control_clean_bump/noisy_bump",
        "threshold_shift_with_n",
        "peak_shift_with_n",
        "nx_peak_minus_best_smaller",
        "nx_peak_window",
    }
    d = r.data
    assert d["widths"] == [1, 2, 6, 13, 32]
    for key in ("train_err", "test_err", "test_loss", "noisy_fit"):
        assert len(d[key]) == len(d["widths"]) and all(math.isfinite(v) for v in d[key])
    assert all(len(row) == 2 for row in d["test_err_seeds"])
    assert d["interp_err"] == dd.INTERP_ERR and d["n_train"] == 300 and d["diverged"] == {}
    assert d["control_clean"]["widths"] == d["widths"] and d["control_clean"]["label_noise"] == 0.0
    assert d["control_clean"]["noisy_fit"] is None
    assert d["n_train_x"]["widths"] == [1, 3, 6, 16] and d["n_train_x"]["n_train"] == 150
    assert d["n_train_x"]["steps"] == d["control_clean"]["steps"] == 200  # the same steps, twice the epochs
    assert r.figures and all(p.endswith(".png") for p in r.figures)


def test_second_sweep_at_equal_epochs(tmp_path):
    # the schedule before 2026-12-04: half the points for half the steps
    r = run_phenomenon(dd.ID, preset="smoke", overrides={"nx_schedule": "epochs"}, store=RunStore(tmp_path))
    assert r.data["n_train_x"]["n_train"] == 150
    assert r.data["n_train_x"]["steps"] == r.data["control_clean"]["steps"] // 2 == 100


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
        {"n_train": 700, "n_train_factor": 2.0},
        {"n_train": 0, "n_train_factor": 2.0},
        {"n_train_factor": 1.0},
        {"n_train_factor": 0.9},
        {"n_train_factor": 0.0},
        {"widths": (4, 4, 8)},
        {"widths": (0, 4, 8)},
        {"nx_schedule": "batches"},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(dd.Config, dd.PRESETS, "quick", over)
