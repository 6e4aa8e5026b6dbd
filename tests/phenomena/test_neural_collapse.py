from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import neural_collapse as nc

# a reduced run: checks the machinery in a few seconds, not that collapse happens
SMALL = nc.PRESETS["smoke"]
CHECKS = {
    "NC1(t0)/NC1(end)",
    "NC2 mean-norm CV fall",
    "NC2 mean-norm CV end",
    "NC2 classifier-norm CV fall",
    "NC2 classifier-norm CV end",
    "NC2 max angle dev fall",
    "NC2 max angle dev end",
    "NC3(end)/NC3(t0)",
    "NC4 agreement",
    "control_nc1_fall_vs_main",
}
EPOCHS = [0.0, 10.0, 20.0, 30.0]

# a collapsing run: zero training error at epoch 10 (index 1), then every NC measure falls
COLLAPSING = dict(
    nc1=[1.0, 0.1, 0.02, 0.005],
    nc2_cos_mean=[0.2, -0.05, -0.1, -0.11],
    nc2_cos_std=[0.5, 0.3, 0.1, 0.05],
    nc2_equinorm=[0.5, 0.3, 0.15, 0.1],
    nc2_w_equinorm=[0.02, 0.25, 0.15, 0.1],
    nc2_max_angle=[1.0, 0.6, 0.3, 0.15],
    nc3=[1.9, 0.6, 0.3, 0.2],
    nc4=[0.3, 0.99, 1.0, 1.0],
)
# the no-weight-decay control: interpolates at epoch 10 too, NC1 falls 1.5x and NC2/NC3 stay put
CONTROL = dict(
    nc1=[1.0, 0.15, 0.12, 0.1],
    nc2_cos_mean=[0.2, -0.05, -0.05, -0.05],
    nc2_cos_std=[0.5, 0.45, 0.45, 0.45],
    nc2_equinorm=[0.5, 0.4, 0.4, 0.4],
    nc2_w_equinorm=[0.02, 0.15, 0.15, 0.15],
    nc2_max_angle=[1.0, 0.9, 0.9, 0.9],
    nc3=[1.9, 1.1, 1.1, 1.1],
    nc4=[0.3, 0.9, 0.9, 0.9],
)


def series(values, train_error, zero):
    return {
        "epochs": EPOCHS,
        "train_error": train_error,
        "test_error": [0.1] * len(EPOCHS),
        "all_epochs": EPOCHS,
        "all_train_error": train_error,
        **values,
        "zero_error_epoch": zero,
    }


def make_result(main=None, control=None, train_error=(0.9, 0.0, 0.0, 0.0), zero=10.0, control_zero=10.0, **over):
    cfg = build_config(nc.Config, nc.PRESETS)
    data = series({**COLLAPSING, **(main or {})}, list(train_error), zero)
    data["control"] = series({**CONTROL, **(control or {})}, [0.9, 0.0, 0.0, 0.0], control_zero)
    data.update(n_classes=10, n_train=100, **over)
    return Result(nc.ID, cfg.to_dict(), 0, data)


def failing(v):
    return {c.name for c in v.checks if not c.passed}


def value(v, name):
    return next(c for c in v.checks if c.name == name).value


def test_collapsing_run_passes_every_check():
    v = nc.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == CHECKS
    assert value(v, "NC1(t0)/NC1(end)") == pytest.approx(0.1 / 0.005)
    assert value(v, "NC2 mean-norm CV fall") == pytest.approx(3.0)
    assert value(v, "NC2 classifier-norm CV fall") == pytest.approx(2.5)
    assert value(v, "NC2 max angle dev fall") == pytest.approx(4.0)
    assert value(v, "NC3(end)/NC3(t0)") == pytest.approx(0.2 / 0.6)
    assert value(v, "control_nc1_fall_vs_main") == pytest.approx(1.5 / 20)
    assert v.summary.startswith("under MSE (Han et al. 2022)")


@pytest.mark.parametrize(
    "main, control, check",
    [
        # NC1 falls only 5x after zero training error (the control's NC1 stays flat, so the control check holds)
        ({"nc1": [1.0, 0.1, 0.05, 0.02]}, {"nc1": [1.0, 0.15, 0.15, 0.16]}, "NC1(t0)/NC1(end)"),
        # mean norms stay unequal: CV 0.18 -> 0.12 is a 1.5x fall, though below the end cap
        ({"nc2_equinorm": [0.5, 0.18, 0.15, 0.12]}, None, "NC2 mean-norm CV fall"),
        # CV falls 3x but from 0.9 to 0.3: still far from equinorm
        ({"nc2_equinorm": [0.9, 0.9, 0.5, 0.3]}, None, "NC2 mean-norm CV end"),
        ({"nc2_w_equinorm": [0.02, 0.15, 0.12, 0.1]}, None, "NC2 classifier-norm CV fall"),
        ({"nc2_w_equinorm": [0.02, 0.9, 0.5, 0.3]}, None, "NC2 classifier-norm CV end"),
        # one pair of means keeps its angle although the mean cosine sits at -1/(C-1)
        ({"nc2_max_angle": [1.0, 0.25, 0.2, 0.2]}, None, "NC2 max angle dev fall"),
        ({"nc2_max_angle": [1.0, 1.0, 0.7, 0.45]}, None, "NC2 max angle dev end"),
        # classifier drifts away from the class means
        ({"nc3": [1.9, 0.6, 0.5, 0.4]}, None, "NC3(end)/NC3(t0)"),
        ({"nc4": [0.3, 0.9, 0.95, 0.98]}, None, "NC4 agreement"),
        # the control collapses as well: the fall is not the terminal-phase signature
        (None, {"nc1": [1.0, 0.15, 0.02, 0.01]}, "control_nc1_fall_vs_main"),
    ],
)
def test_each_check_fails_on_its_construction(main, control, check):
    v = nc.signature(make_result(main, control))
    assert failing(v) == {check}, str(v)


def test_mean_cosine_at_the_etf_value_does_not_rescue_unequal_angles():
    # mean cosine exactly -1/(C-1) at the end, but the worst pair is far off: NC2 fails
    v = nc.signature(make_result({"nc2_cos_mean": [0.2, -1 / 9, -1 / 9, -1 / 9], "nc2_max_angle": [1, 0.9, 0.9, 0.9]}))
    assert {"NC2 max angle dev fall", "NC2 max angle dev end"} <= failing(v)


def test_control_that_never_interpolates_is_read_over_the_main_window():
    # control never reaches zero error: its NC1 is compared from the main run's t0 (epoch 10) to the end
    v = nc.signature(make_result(control={"nc1": [1.0, 0.5, 0.4, 0.25]}, control_zero=None))
    assert value(v, "control_nc1_fall_vs_main") == pytest.approx(2.0 / 20)
    assert v.passed


def test_signature_without_zero_training_error():
    v = nc.signature(make_result(train_error=(0.9, 0.1, 0.05, 0.01), zero=None))
    assert not v.passed and "never reached 0" in v.summary
    assert {"NC1(t0)/NC1(end)", "NC3(end)/NC3(t0)", "NC2 mean-norm CV fall"} <= failing(v)


def test_summary_names_the_loss():
    cfg = build_config(nc.Config, nc.PRESETS, "quick", {"loss": "cross_entropy"})
    r = make_result()
    r = Result(nc.ID, cfg.to_dict(), 0, r.data)
    assert nc.signature(r).summary.startswith("under cross-entropy")


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(nc.ID)
    d = r.data
    assert {c.name for c in r.verdict.checks} == CHECKS
    for run in (d, d["control"]):
        for key in (*nc.SERIES, "train_error", "test_error"):
            assert len(run[key]) == len(run["epochs"]) >= 4, key
        assert run["epochs"][0] == 0 and run["epochs"][-1] == SMALL["epochs"]
    assert d["epochs"][0] == 0 and d["epochs"][-1] == SMALL["epochs"]
    assert len(d["all_epochs"]) == SMALL["epochs"] + 1  # evaluated every epoch
    assert all(x > 0 for x in d["nc1"]) and all(0 <= x <= 1 for x in d["nc4"])
    assert all(0 <= x <= 4 for x in d["nc3"])  # squared distance of two unit-norm matrices
    assert r.figures and all(Path(p).exists() and p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"lr": -0.1},
        {"dataset": "cifar"},
        {"loss": "hinge"},
        {"momentum": 1.0},
        {"model": "cnn", "dataset": "gaussian_mixture"},
        {"epochs": 5, "eval_epochs": 10},
        {"dataset": "gaussian_mixture", "n_train": 5},
        {"depth": 0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(nc.Config, nc.PRESETS, "quick", over)
