from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import effective_depth as ed
from phenomlab.phenomena._stats import spearman

# a tiny net that fits 200 mnist1d points in a few hundred steps (seconds on 2 cores)
SMALL = ed.PRESETS["smoke"]

CHECKS = {
    "easy_train_acc",
    "easy_spearman(layer, NCC)",
    "easy_L*",
    "hard_train_acc",
    "hard_spearman(layer, NCC)",
    "hard_L*",
    "L*_hard - L*_easy",
}


def task(ncc, train_acc=1.0):
    return {
        "ncc": ncc,
        "L_star": ed.effective_depth(ncc),
        "spearman": spearman(range(len(ncc)), ncc),
        "train_acc": train_acc,
        "test_acc": 0.5,
        "steps": [0],
        "ncc_history": [ncc],
    }


def make_result(easy, hard, depth=6):
    cfg = build_config(ed.Config, ed.PRESETS, "quick", {"depth": depth})
    return Result(ed.ID, cfg.to_dict(), 0, {"depth": depth, "label_noise": 0.3, "easy": task(easy), "hard": task(hard)})


def test_helpers():
    assert ed.effective_depth([0.3, 0.5, 0.995, 1.0]) == 2
    assert ed.effective_depth([0.999, 0.5, 0.9]) is None  # the input layer (index 0) does not count
    assert spearman(range(3), [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert spearman(range(2), [0.5, 0.5]) is None


def test_signature_on_constructed_curves():
    easy = [0.3, 0.6, 0.9, 0.995, 1.0, 1.0, 1.0]
    hard = [0.25, 0.4, 0.7, 0.9, 0.97, 0.995, 1.0]
    v = ed.signature(make_result(easy, hard))
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == CHECKS
    # the same effective depth for both tasks: not deeper for the hard one
    v = ed.signature(make_result(easy, easy))
    assert not v.passed and not next(c for c in v.checks if c.name == "L*_hard - L*_easy").passed
    # separable only at the last layer: L* = L fails
    late = [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.995]
    v = ed.signature(make_result(easy, late))
    assert not next(c for c in v.checks if c.name == "hard_L*").passed
    # a curve that peaks early and then falls does not "rise with depth"
    falling = [0.3, 0.995, 0.9, 0.8, 0.7, 0.6, 0.5]
    v = ed.signature(make_result(falling, hard))
    assert not next(c for c in v.checks if c.name == "easy_spearman(layer, NCC)").passed
    # never separable
    v = ed.signature(make_result(easy, [0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.98]))
    assert not v.passed and "never reached" in v.summary


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(ed.ID)
    assert {c.name for c in r.verdict.checks} == CHECKS
    for t in ("easy", "hard"):
        assert len(r.data[t]["ncc"]) == SMALL["depth"] + 1
        assert all(0.0 <= a <= 1.0 for a in r.data[t]["ncc"])
        assert len(r.data[t]["ncc_history"]) == len(r.data[t]["steps"])
    assert r.figures and all(Path(p).exists() and p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"depth": 1},
        {"label_noise": 0.0},
        {"label_noise": 1.0},
        {"activation": "foo"},
        {"steps": 100, "eval_every": 200},
        {"lr": 0},
        {"schedule": "step"},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ed.Config, ed.PRESETS, "quick", over)
