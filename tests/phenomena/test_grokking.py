import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, grokking

# a reduced preset: p=47 with a small MLP groks in ~1k steps (a few seconds on 2 cores)
SMALL = grokking.PRESETS["smoke"]


def make_result(steps, train, test, c_steps, c_test, t_fit, t_gen, c_train=None):
    cfg = build_config(grokking.Config, grokking.PRESETS)
    data = {
        "steps": steps,
        "train_acc": train,
        "test_acc": test,
        "control_steps": c_steps,
        "control_train_acc": c_train if c_train is not None else [1.0] * len(c_steps),
        "control_test_acc": c_test,
        "t_fit": t_fit,
        "t_gen": t_gen,
        "max_steps": 5000,
    }
    return Result("grokking", cfg.to_dict(), 0, data)


def test_signature_on_constructed_curves():
    steps = [0, 100, 200, 600, 1000]
    ok = make_result(steps, [0, 1, 1, 1, 1], [0, 0, 0.1, 0.97, 1], steps[:4], [0, 0, 0.01, 0.02], 100, 600)
    assert grokking.signature(ok).passed
    # generalising together with fitting is not grokking
    early = make_result(steps, [0, 1, 1, 1, 1], [0, 0.96, 1, 1, 1], steps[:2], [0, 0.3], 100, 100)
    v = grokking.signature(early)
    assert not v.passed and not next(c for c in v.checks if c.name == "T_gen/T_fit").passed
    # a control that also generalises breaks the signature
    ctrl = make_result(steps, [0, 1, 1, 1, 1], [0, 0, 0.1, 0.97, 1], steps[:4], [0, 0.2, 0.5, 0.8], 100, 600)
    assert not grokking.signature(ctrl).passed
    never = make_result(steps, [0, 1, 1, 1, 1], [0, 0, 0.1, 0.2, 0.3], steps, [0] * 5, 100, None)
    v = grokking.signature(never)
    assert not v.passed and "never reached" in v.summary


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


STEPS = list(range(0, 1100, 100))
FIT = [0.0] + [1.0] * 10


def test_plateau_check_fails_when_test_accuracy_climbs_early():
    # test accuracy sits at 0.35 right after the fit (no plateau near chance), then jumps late
    test = [0, 0.35, 0.35, 0.35, 0.35, 0.35, 0.4, 0.4, 0.45, 0.9, 0.96]
    v = grokking.signature(make_result(STEPS, FIT, test, STEPS, [0.0] * 11, 100, 1000))
    assert not v.passed and not _check(v, "plateau_test_acc").passed and _check(v, "rise_fraction").passed


def test_rise_check_fails_on_a_gradual_climb():
    # near chance at first, but then a steady climb from T_fit to T_gen rather than a jump
    test = [0, 0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.85, 0.96]
    v = grokking.signature(make_result(STEPS, FIT, test, STEPS, [0.0] * 11, 100, 1000))
    assert not v.passed and not _check(v, "rise_fraction").passed and _check(v, "plateau_test_acc").passed


def test_reduced_run_end_to_end(smoke):
    store, r = smoke("grokking")
    assert {c.name for c in r.verdict.checks} == {
        "train_acc_reached",
        "test_acc_reached",
        "T_gen/T_fit",
        "plateau_test_acc",
        "rise_fraction",
        "control_test_acc_at_T_gen",
        "control_train_acc_by_T_gen",
    }
    assert r.passed, str(r.verdict)
    assert r.data["t_gen"] >= 5 * r.data["t_fit"]
    assert all(p.endswith(".png") and (store.root / "runs" / r.run_id).exists() for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"weight_decay": -1},
        {"train_fraction": 0.0},
        {"op": "%"},
        {"embed_dim": 30, "n_heads": 4, "model": "transformer"},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(grokking.Config, grokking.PRESETS, "quick", over)


def test_each_remaining_check_fails_on_its_own_construction():
    steps = [0, 100, 200, 600, 1000]
    # never fits the training set: train_acc_reached fails
    v = grokking.signature(make_result(steps, [0, 0.5, 0.6, 0.7, 0.8], [0, 0, 0, 0.1, 0.2], steps, [0] * 5, None, None))
    assert not _check(v, "train_acc_reached").passed
    # fits and generalises late, but never reaches 0.95 test accuracy: test_acc_reached fails
    v = grokking.signature(make_result(steps, [0, 1, 1, 1, 1], [0, 0, 0.1, 0.5, 0.9], steps, [0] * 5, 100, None))
    assert not _check(v, "test_acc_reached").passed and _check(v, "train_acc_reached").passed
    # the control (no weight decay) generalises by T_gen too: only the control check fails
    ctrl = make_result(steps, [0, 1, 1, 1, 1], [0, 0, 0.1, 0.97, 1], steps[:4], [0, 0.2, 0.5, 0.8], 100, 600)
    v = grokking.signature(ctrl)
    assert [c.name for c in v.checks if not c.passed] == ["control_test_acc_at_T_gen"]
    # a control that never memorised (it did not train) cannot show that memorising alone does not generalise;
    # its train accuracy reached 0.99 only after T_gen, which does not count
    for c_train in ([0, 0.1, 0.2, 0.3], [0, 0.5, 0.9, 0.98, 1.0]):
        r = make_result(
            steps, [0, 1, 1, 1, 1], [0, 0, 0.1, 0.97, 1], steps[: len(c_train)], [0] * len(c_train), 100, 600, c_train
        )
        v = grokking.signature(r)
        assert [c.name for c in v.checks if not c.passed] == ["control_train_acc_by_T_gen"], str(v)
