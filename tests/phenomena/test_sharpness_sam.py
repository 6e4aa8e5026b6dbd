import math

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, sharpness_sam

# a constructed "phenomenon present" result: per run, sharpness and test accuracy for 3 repeats
PRESENT = {
    "small_batch": ([1.0, 1.2, 0.9], [0.58, 0.57, 0.59]),
    "large_batch": ([10.0, 11.0, 9.0], [0.54, 0.53, 0.55]),
    "sgd": ([5.0, 5.2, 4.8], [0.55, 0.55, 0.56]),
    "sam": ([2.4, 2.5, 2.3], [0.57, 0.56, 0.57]),
    "small_rho_sam": ([5.1, 5.0, 4.9], [0.55, 0.56, 0.55]),
    "random_direction": ([4.9, 5.3, 4.6], [0.55, 0.55, 0.56]),
    "descent_direction": ([6.0, 6.5, 5.9], [0.54, 0.55, 0.55]),
}
RANDOM_CHECK = "control_random_direction_sharpness_ratio"
DESCENT_CHECK = "control_descent_direction_sharpness_ratio"


def make_result(overrides=None, losses=None):
    cfg = build_config(sharpness_sam.Config, sharpness_sam.PRESETS)
    spec = {**PRESENT, **(overrides or {})}
    runs = {}
    for name, (sharp, acc) in spec.items():
        runs[name] = [
            {
                "sharpness": s,
                "test_acc": a,
                "train_loss": (losses or {}).get(name, 0.049),
                "steps": 700,
                "reached": (losses or {}).get(name, 0.049) <= 0.05,
                "loss_curve_steps": [0, 700],
                "loss_curve": [2.3, (losses or {}).get(name, 0.049)],
            }
            for s, a in zip(sharp, acc, strict=True)
        ]
    return Result(sharpness_sam.ID, cfg.to_dict(), 0, {"runs": runs, "loss_threshold": 0.05})


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_present_passes_every_check():
    v = sharpness_sam.signature(make_result())
    assert v.passed, str(v)
    n = sharpness_sam.numbers(make_result().data)
    # geometric mean of the per-repeat ratios, arithmetic mean of the accuracy gaps
    assert n["lb_sb_ratio"] == pytest.approx((10 / 1.0 * 11 / 1.2 * 9 / 0.9) ** (1 / 3))
    assert n["sam_sgd_acc_gain"] == pytest.approx((0.02 + 0.01 + 0.01) / 3)


@pytest.mark.parametrize(
    "overrides, losses, failing",
    [
        # large batch no sharper than small batch (only 1.5x)
        ({"large_batch": ([1.5, 1.8, 1.35], [0.54, 0.53, 0.55])}, None, "large/small_batch_sharpness"),
        # large batch sharper but generalises as well
        ({"large_batch": ([10.0, 11.0, 9.0], [0.58, 0.57, 0.59])}, None, "small-large_batch_test_acc"),
        # SAM only 10% flatter than SGD
        ({"sam": ([4.5, 4.7, 4.3], [0.57, 0.56, 0.57])}, None, "sam/sgd_sharpness"),
        # SAM flatter but generalises worse
        ({"sam": ([2.4, 2.5, 2.3], [0.53, 0.54, 0.53])}, None, "sam-sgd_test_acc"),
        # a random perturbation of the same radius flattens like SAM: the flattening is not the ascent direction's
        ({"random_direction": ([2.5, 2.6, 2.4], [0.55, 0.56, 0.55])}, None, RANDOM_CHECK),
        # ... or flattens only partly: 0.8x SGD, below the 0.85 threshold
        ({"random_direction": ([4.0, 4.16, 3.84], [0.55, 0.56, 0.55])}, None, RANDOM_CHECK),
        # SAM's perturbation with the other sign flattens too: the size of the perturbation, not its direction
        ({"descent_direction": ([3.0, 3.1, 2.9], [0.55, 0.56, 0.55])}, None, DESCENT_CHECK),
        # a run stopped at the step cap above the loss threshold: no equal-loss comparison
        (None, {"sam": 0.2}, "reached_loss"),
    ],
)
def test_each_check_can_fail(overrides, losses, failing):
    v = sharpness_sam.signature(make_result(overrides, losses))
    assert not v.passed
    assert not _check(v, failing).passed
    # and only that check (the constructed results differ in one respect)
    assert [c.name for c in v.checks if not c.passed] == [failing]


def test_non_positive_sharpness_is_missing_not_a_pass():
    v = sharpness_sam.signature(make_result({"sam": ([-1.0, 2.5, 2.3], [0.57, 0.56, 0.57])}))
    assert _check(v, "sam/sgd_sharpness").value is None and not v.passed


@pytest.mark.parametrize(
    "over",
    [
        {"small_rho": 0.2},  # small radius above rho
        {"small_batch": 2000},  # small batch not below large batch
        {"large_batch": 5000},  # large batch above the training set
        {"rho": 0.0},
        {"repeats": 0},
    ],
)
def test_bad_configs_are_rejected(over):
    with pytest.raises(ConfigError):
        build_config(sharpness_sam.Config, sharpness_sam.PRESETS, "quick", over)


def test_eval_every_scales_with_batch():
    cfg = build_config(sharpness_sam.Config, sharpness_sam.PRESETS)
    assert sharpness_sam._eval_every(cfg, cfg.sam_batch) == cfg.eval_every
    assert sharpness_sam._eval_every(cfg, cfg.small_batch) == round(cfg.eval_every * cfg.sam_batch / cfg.small_batch)
    assert sharpness_sam._eval_every(cfg, cfg.large_batch) == 1
    assert math.isfinite(sharpness_sam.CONTROL_MIN_RATIO)


def test_smoke_run_end_to_end(smoke):
    _, r = smoke(sharpness_sam.ID)
    assert {c.name for c in r.verdict.checks} == {
        "reached_loss",
        "large/small_batch_sharpness",
        "small-large_batch_test_acc",
        "sam/sgd_sharpness",
        "sam-sgd_test_acc",
        "control_random_direction_sharpness_ratio",
        "control_descent_direction_sharpness_ratio",
    }
    assert set(r.data["runs"]) == set(sharpness_sam.RUNS)
    assert all(run["sharpness"] > 0 for runs in r.data["runs"].values() for run in runs)


def test_no_phenomenon_at_all_fails_the_sharpness_and_batch_checks():
    # every run ends equally sharp with equal test accuracy: batch size and SAM change nothing. The sharpness claims
    # and the large-batch accuracy gap fail. Two checks pass without any phenomenon: the random-direction control
    # (it fails only if a random perturbation flattens) and "SAM not worse than SGD" (a zero gain meets >= 0)
    flat = ([5.0, 5.2, 4.8], [0.55, 0.55, 0.56])
    v = sharpness_sam.signature(make_result(dict.fromkeys(sharpness_sam.RUNS, flat)))
    assert not v.passed
    assert {c.name for c in v.checks if not c.passed} == {
        "large/small_batch_sharpness",
        "small-large_batch_test_acc",
        "sam/sgd_sharpness",
    }


def test_equal_loss_is_required_of_every_run():
    # one large-batch run stopped above the threshold fails the equal-loss premise even if the ratios look right
    v = sharpness_sam.signature(make_result(None, {"large_batch": 0.051}))
    assert [c.name for c in v.checks if not c.passed] == ["reached_loss"]


def test_random_direction_control_value_and_small_rho_is_reported_not_checked():
    r = make_result()
    n = sharpness_sam.numbers(r.data)
    want = math.exp(sum(math.log(a / b) for a, b in zip([4.9, 5.3, 4.6], [5.0, 5.2, 4.8], strict=True)) / 3)
    assert n["random_direction_ratio"] == pytest.approx(want)
    v = sharpness_sam.signature(r)
    assert _check(v, "control_random_direction_sharpness_ratio").value == pytest.approx(want)
    # the small-rho arm flattening like SAM changes no check: it is reported, not a control
    r2 = make_result({"small_rho_sam": ([2.5, 2.6, 2.4], [0.55, 0.56, 0.55])})
    assert sharpness_sam.numbers(r2.data)["small_rho_ratio"] == pytest.approx(0.5, rel=0.05)
    assert sharpness_sam.signature(r2).passed
    assert "small rho" in sharpness_sam.signature(r2).summary


def test_random_direction_arm_shares_sam_radius_and_uses_the_random_direction():
    assert sharpness_sam.RUNS["random_direction"] == ("sam", "sam_batch", "rho", "random")
    assert sharpness_sam.RUNS["sam"] == ("sam", "sam_batch", "rho", "ascent")
    assert sharpness_sam.RUNS["descent_direction"] == ("sam", "sam_batch", "rho", "descent")


def test_results_stored_before_the_descent_arm_fail_its_control():
    r = make_result()
    del r.data["runs"]["descent_direction"]
    v = sharpness_sam.signature(r)
    assert [c.name for c in v.checks if not c.passed] == [DESCENT_CHECK] and _check(v, DESCENT_CHECK).value is None
