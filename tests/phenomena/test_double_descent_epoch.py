from pathlib import Path

import pytest
import torch

import phenomlab
from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import double_descent_epoch as dd

# a reduced run: checks the machinery in a few seconds, not that the curve has two descents
SMALL = dd.PRESETS["smoke"]
CHECKS = {"rise after first minimum", "fall after the peak"}


def make_result(test_error, noisy=None):
    cfg = build_config(dd.Config, dd.PRESETS)
    n = len(test_error)
    data = {
        "epochs": [float(i) for i in range(n)],
        "train_error": [max(0.0, 0.5 - 0.05 * i) for i in range(n)],
        "test_error": test_error,
        "clean_train_error": [0.0] * n,
        "noisy_fitted": noisy if noisy is not None else [min(1.0, 0.05 * i) for i in range(n)],
        "n_train": 100,
        "n_test": 100,
    }
    return Result(dd.ID, cfg.to_dict(), 0, data)


def plateau(v, k=6):
    return [v] * k


DOUBLE = [0.9, 0.5] + plateau(0.10) + plateau(0.16) + plateau(0.11) + plateau(0.08, 10)
U_SHAPE = [0.9, 0.5] + plateau(0.10) + plateau(0.16) + plateau(0.18, 10)
MONOTONE = [0.9 - 0.03 * i for i in range(28)]


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


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(dd.ID)
    d = r.data
    assert {c.name for c in r.verdict.checks} == CHECKS
    assert len(d["epochs"]) == SMALL["epochs"] + 1
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
TINY_CNN = dict(n_train=100, n_test=100, channels=(4, 8), width=8, epochs=5, eval_epochs=1)


def test_cnn_with_augmentation_runs(tmp_path):
    r = phenomlab.run(dd.ID, out=str(tmp_path), seed=0, shift_augment=2, **TINY_CNN)
    assert len(r.data["test_error"]) == 6 and r.data["n_train"] == 100


def test_adam_preset_runs(tmp_path):
    # the earlier (Adam) setting stays runnable; a reduced version of it checks the optimiser path
    r = phenomlab.run(dd.ID, preset="adam", out=str(tmp_path), seed=0, **TINY_CNN)
    assert len(r.data["test_error"]) == 6 and r.data["n_train"] == 100


def test_no_label_noise_runs(tmp_path):
    r = phenomlab.run(dd.ID, out=str(tmp_path), seed=0, label_noise=0.0, **SMALL)
    assert r.data["noisy_fitted"] is None and len(r.verdict.checks) == 2


@pytest.mark.parametrize(
    "over",
    [
        {"label_noise": 1.0},
        {"lr": 0.0},
        {"optimizer": "rmsprop"},
        {"dataset": "cifar"},
        {"epochs": 8, "eval_epochs": 2},
        {"width": 0},
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
