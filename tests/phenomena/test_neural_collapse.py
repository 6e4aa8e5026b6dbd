from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import neural_collapse as nc

# a reduced run: checks the machinery in a few seconds, not that collapse happens
SMALL = nc.PRESETS["smoke"]
CHECKS = {"NC1(t0)/NC1(end)", "NC2 cos std", "NC2 |cos mean + 1/(C-1)|", "NC3(end)/NC3(t0)", "NC4 agreement"}


def make_result(nc1, nc3, cos_mean, cos_std, nc4, train_error, zero):
    cfg = build_config(nc.Config, nc.PRESETS)
    n = len(nc1)
    epochs = [float(10 * i) for i in range(n)]
    data = {
        "epochs": epochs,
        "train_error": train_error,
        "test_error": [0.1] * n,
        "nc1": nc1,
        "nc2_cos_mean": cos_mean,
        "nc2_cos_std": cos_std,
        "nc2_equinorm": [0.1] * n,
        "nc3": nc3,
        "nc4": nc4,
        "zero_error_epoch": zero,
        "n_classes": 10,
        "n_train": 100,
        "all_epochs": epochs,
        "all_train_error": train_error,
    }
    return Result(nc.ID, cfg.to_dict(), 0, data)


def collapsing(**change):
    base = dict(
        nc1=[1.0, 0.1, 0.02, 0.005],
        nc3=[1.2, 0.8, 0.5, 0.3],
        cos_mean=[0.2, -0.05, -0.1, -0.11],
        cos_std=[0.5, 0.3, 0.1, 0.05],
        nc4=[0.3, 0.99, 1.0, 1.0],
        train_error=[0.9, 0.0, 0.0, 0.0],
        zero=10.0,
    )
    base.update(change)
    return make_result(**base)


def failing(v):
    return {c.name for c in v.checks if not c.passed}


def test_signature_on_constructed_curves():
    v = nc.signature(collapsing())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == CHECKS
    fall = next(c for c in v.checks if c.name == "NC1(t0)/NC1(end)")
    assert fall.value == pytest.approx(0.1 / 0.005)
    # NC1 falls only 5x after zero training error
    assert failing(nc.signature(collapsing(nc1=[1.0, 0.1, 0.05, 0.02]))) == {"NC1(t0)/NC1(end)"}
    # class means not equiangular / not at -1/(C-1)
    assert failing(nc.signature(collapsing(cos_std=[0.5, 0.3, 0.2, 0.15]))) == {"NC2 cos std"}
    assert failing(nc.signature(collapsing(cos_mean=[0.2, 0.1, 0.05, 0.0]))) == {"NC2 |cos mean + 1/(C-1)|"}
    # classifier drifting away from the class means
    assert failing(nc.signature(collapsing(nc3=[1.2, 0.5, 0.6, 0.7]))) == {"NC3(end)/NC3(t0)"}
    assert failing(nc.signature(collapsing(nc4=[0.3, 0.9, 0.95, 0.98]))) == {"NC4 agreement"}


def test_signature_without_zero_training_error():
    v = nc.signature(collapsing(train_error=[0.9, 0.1, 0.05, 0.01], zero=None))
    assert not v.passed and "never reached 0" in v.summary
    assert {"NC1(t0)/NC1(end)", "NC3(end)/NC3(t0)"} <= failing(v)


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(nc.ID)
    d = r.data
    assert {c.name for c in r.verdict.checks} == CHECKS
    for key in ("epochs", "nc1", "nc2_cos_mean", "nc2_cos_std", "nc3", "nc4", "train_error", "test_error"):
        assert len(d[key]) == len(d["epochs"]) >= 4, key
    assert d["epochs"][0] == 0 and d["epochs"][-1] == SMALL["epochs"]
    assert len(d["all_epochs"]) == SMALL["epochs"] + 1  # evaluated every epoch
    assert all(x > 0 for x in d["nc1"]) and all(0 <= x <= 1 for x in d["nc4"])
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
