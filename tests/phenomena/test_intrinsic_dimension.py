import math

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, intrinsic_dimension
from phenomlab.phenomena.intrinsic_dimension import d_at_fraction, param_count

DIMS = [16, 32, 64, 128, 256]


def width_entry(D, test_acc, full_test=0.96, train_acc=None, full_train=1.0):
    train_acc = train_acc or [min(1.0, a + 0.05) for a in test_acc]
    n = len(test_acc)
    return {
        "D": D,
        "dims": DIMS[:n],
        "test_acc": test_acc,
        "train_acc": train_acc,
        "full_test_acc": full_test,
        "full_train_acc": full_train,
        "projection": ["dense"] * n,
        "d90_test": d_at_fraction(DIMS[:n], test_acc, 0.9 * full_test),
        "d90_train": d_at_fraction(DIMS[:n], train_acc, 0.9 * full_train),
    }


def control_entry(train_acc, full_train=1.0, dims=(128, 256, 512, 1024, 2048, 4096)):
    dims = list(dims)[: len(train_acc)]
    return {
        "D": 26122,
        "dims": dims,
        "train_acc": train_acc,
        "test_acc": [None] * len(dims),
        "full_train_acc": full_train,
        "full_test_acc": None,
        "projection": ["dense"] * len(dims),
        "d90_train": d_at_fraction(dims, train_acc, 0.9 * full_train),
    }


GOOD_CURVE = [0.3, 0.55, 0.8, 0.89]  # crosses 0.864 (90% of 0.96) between d=64 and d=128


def make_result(widths=None, control=None):
    cfg = build_config(intrinsic_dimension.Config, intrinsic_dimension.PRESETS)
    if widths is None:
        widths = {"32": width_entry(3466, GOOD_CURVE), "64": width_entry(8970, GOOD_CURVE)}
        widths["128"] = width_entry(26122, GOOD_CURVE)
    if control is None:
        control = control_entry([0.19, 0.24, 0.31, 0.47, 0.74, 1.0])
    return Result("intrinsic-dimension", cfg.to_dict(), 0, {"widths": widths, "control": control, "control_width": 128})


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _only_failure(v, name):
    assert not v.passed
    assert [c.name for c in v.checks if not c.passed] == [name], str(v)


def test_d_at_fraction_interpolates_in_log_d():
    # halfway in accuracy between d=64 and d=128: the geometric mean
    assert d_at_fraction([32, 64, 128], [0.2, 0.6, 1.0], 0.8) == pytest.approx(math.sqrt(64 * 128))
    assert d_at_fraction([32, 64], [0.95, 1.0], 0.9) == 32  # the first point crosses: an upper bound
    assert d_at_fraction([32, 64], [0.2, 0.3], 0.9) is None
    assert d_at_fraction([32, 64, 128], [0.2, 0.9, 0.5], 0.9) == pytest.approx(64)  # the first crossing counts


def test_param_count_matches_the_mlp():
    from phenomlab.models import MLP

    net = MLP(64, 10, width=32, depth=2)
    assert param_count(64, 32, 2, 10) == sum(p.numel() for p in net.parameters()) == 3466


def test_constructed_present_result_passes_every_check():
    v = intrinsic_dimension.signature(make_result())
    assert v.passed, str(v)


def test_d90_below_the_grid_at_every_width_fails_the_bracketing_check_only():
    # every width already at 90% at d = 16: d_90 "= 16" everywhere is the grid's end, so spread 1 and slope 0 would
    # pass width-invariance without measuring it
    early = [0.88, 0.9, 0.92, 0.93]
    widths = {k: width_entry(D, early) for k, D in (("32", 3466), ("64", 8970), ("128", 26122))}
    v = intrinsic_dimension.signature(make_result(widths))
    assert _check(v, "d90_bracketed_widths").value == 0
    _only_failure(v, "d90_bracketed_widths")
    widths["32"] = width_entry(3466, GOOD_CURVE)  # one width bracketed is not enough
    assert not _check(intrinsic_dimension.signature(make_result(widths)), "d90_bracketed_widths").passed


def test_full_model_that_does_not_learn_fails_full_test_acc_min():
    widths = {"32": width_entry(3466, GOOD_CURVE), "64": width_entry(8970, GOOD_CURVE)}
    # a full model at 0.5 test accuracy: its 90% target (0.45) is met early, yet the reference is meaningless
    widths["128"] = width_entry(26122, GOOD_CURVE, full_test=0.5)
    widths["128"]["d90_test"] = widths["64"]["d90_test"]
    _only_failure(intrinsic_dimension.signature(make_result(widths)), "full_test_acc_min")


def test_d90_tracking_D_fails_fraction_and_spread_checks():
    # d_90 ~ D/5 at every width (the parameter count, not the task, sets d): no small fraction, no invariance
    widths = {}
    for k, D in (("32", 3466), ("64", 8970), ("128", 26122)):
        widths[k] = width_entry(D, GOOD_CURVE)
        widths[k]["d90_test"] = D / 5
    v = intrinsic_dimension.signature(make_result(widths))
    for name in ("max_d90_fraction", "d90_fraction_largest_width", "d90_width_spread", "d90_slope_vs_D"):
        assert not _check(v, name).passed, name
    assert _check(v, "full_test_acc_min").passed and _check(v, "control_d90_ratio").passed


def test_small_net_with_large_fraction_fails_max_d90_fraction_only():
    widths = {"32": width_entry(3466, GOOD_CURVE), "64": width_entry(8970, GOOD_CURVE)}
    widths["128"] = width_entry(26122, GOOD_CURVE)
    for k in widths:
        widths[k]["d90_test"] = 400.0  # invariant, tiny at the largest width, but 12% of the smallest net's D
    _only_failure(intrinsic_dimension.signature(make_result(widths)), "max_d90_fraction")


def test_large_fraction_at_largest_width_fails_its_check():
    # d_90 = 300 at D = 3250, 8000, 13000: under 10% everywhere, invariant, D grows 4x, but 2.3% at the largest
    widths = {k: width_entry(D, GOOD_CURVE) for k, D in (("32", 3250), ("64", 8000), ("128", 13000))}
    for w in widths.values():
        w["d90_test"] = 300.0
    _only_failure(intrinsic_dimension.signature(make_result(widths)), "d90_fraction_largest_width")


def test_width_dependent_d90_fails_the_spread_check_only():
    widths = {"32": width_entry(3466, GOOD_CURVE), "64": width_entry(8970, GOOD_CURVE)}
    widths["128"] = width_entry(26122, GOOD_CURVE)
    widths["32"]["d90_test"], widths["64"]["d90_test"], widths["128"]["d90_test"] = 60.0, 100.0, 150.0
    v = intrinsic_dimension.signature(make_result(widths))
    assert [c.name for c in v.checks if not c.passed] == ["d90_width_spread", "d90_slope_vs_D"]


def test_d90_growing_as_D_to_the_0_3_fails_the_slope_check_only():
    # the audit's case: a weak growth (7.5x more parameters, 1.8x larger d_90) passes the spread bound (the grid
    # factor 2) and the fractions, and only the pre-registered slope bound catches it
    widths = {k: width_entry(D, GOOD_CURVE) for k, D in (("32", 3466), ("64", 8970), ("128", 26122))}
    for w in widths.values():
        w["d90_test"] = 10.0 * w["D"] ** 0.3
    v = intrinsic_dimension.signature(make_result(widths))
    _only_failure(v, "d90_slope_vs_D")
    assert _check(v, "d90_slope_vs_D").value == pytest.approx(0.3)


def test_narrow_width_sweep_fails_param_count_growth():
    # invariant and small, but over widths 128-144 whose D grows only 1.2x: invariance would mean little
    widths = {str(w): width_entry(param_count(64, w, 2, 10), GOOD_CURVE) for w in (128, 136, 144)}
    _only_failure(intrinsic_dimension.signature(make_result(widths)), "param_count_growth")


def test_unreached_target_fails_every_d90_check():
    widths = {"32": width_entry(3466, GOOD_CURVE), "64": width_entry(8970, GOOD_CURVE)}
    widths["128"] = width_entry(26122, [0.2, 0.3, 0.4, 0.5, 0.6])  # never reaches 90% of the full model
    v = intrinsic_dimension.signature(make_result(widths))
    for name in ("max_d90_fraction", "d90_fraction_largest_width", "d90_width_spread", "d90_slope_vs_D"):
        assert not _check(v, name).passed
    assert "n/a" in v.summary


def test_control_that_cannot_memorise_fails_control_full_train_acc():
    # the full model reaches only 30% on random labels: the large d_90 of the scan then says nothing about memorising
    ctrl = control_entry([0.1, 0.15, 0.2, 0.24, 0.3], full_train=0.3)
    _only_failure(intrinsic_dimension.signature(make_result(control=ctrl)), "control_full_train_acc")


def test_random_labels_as_easy_as_true_labels_fails_the_control_ratio():
    # the random-label scan crosses at d ~ 150, as cheap as the true task: memorisation not harder
    ctrl = control_entry([0.85, 0.95], dims=(128, 256))
    v = intrinsic_dimension.signature(make_result(control=ctrl))
    _only_failure(v, "control_d90_ratio")
    assert _check(v, "control_d90_ratio").value < 3


def test_control_never_reaching_target_uses_the_largest_d_as_a_lower_bound():
    ctrl = control_entry([0.19, 0.24, 0.31, 0.47, 0.6, 0.7])
    v = intrinsic_dimension.signature(make_result(control=ctrl))
    assert v.passed and ">4096" in v.summary
    # ... which fails when even the largest d tried is small
    ctrl = control_entry([0.19, 0.24], dims=(128, 256))
    _only_failure(intrinsic_dimension.signature(make_result(control=ctrl)), "control_d90_ratio")


@pytest.mark.parametrize(
    "over",
    [
        {"widths": (64, 32)},
        {"dims": ()},
        {"control_dims": (256, 128)},
        {"control_width": 100},
        {"repeats": 0},
        {"projection": "sparse"},
        {"full_lr": 0.0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(intrinsic_dimension.Config, intrinsic_dimension.PRESETS, "quick", over)


def test_smoke_run_end_to_end(smoke):
    store, r = smoke("intrinsic-dimension")
    assert {c.name for c in r.verdict.checks} == {
        "d90_bracketed_widths",
        "full_test_acc_min",
        "max_d90_fraction",
        "d90_fraction_largest_width",
        "d90_width_spread",
        "d90_slope_vs_D",
        "param_count_growth",
        "control_full_train_acc",
        "control_d90_ratio",
    }
    ws = r.data["widths"]
    assert set(ws) == {"16", "32"} and all(len(w["dims"]) >= 1 for w in ws.values())
    # the projection kind (dense, or Fastfood above 2^23 entries) is recorded per d
    assert set(r.data["control"]["projection"]) <= {"dense", "fastfood"}


def test_missing_true_label_reference_leaves_the_control_ratio_undecided():
    # the true-label scan at the control width never reached its train-accuracy target: no reference, n/a fails
    v = make_result()
    v.data["widths"]["128"]["d90_train"] = None
    _only_failure(intrinsic_dimension.signature(v), "control_d90_ratio")


def test_d90_growing_as_sqrt_of_D_fails_the_spread_check():
    # d_90 ~ sqrt(D) (3466 -> 26122: 2.75x) stays a tiny fraction of D, yet is not width-invariant
    widths = {k: width_entry(D, GOOD_CURVE) for k, D in (("32", 3466), ("64", 8970), ("128", 26122))}
    for w in widths.values():
        w["d90_test"] = 2.0 * math.sqrt(w["D"])
    v = intrinsic_dimension.signature(make_result(widths))
    assert [c.name for c in v.checks if not c.passed] == ["d90_width_spread", "d90_slope_vs_D"]


def test_control_ratio_compares_train_accuracy_d90_not_test():
    # a true-label test d_90 far above its train d_90 must not enter the ratio: only train-accuracy d_90s are compared
    r = make_result()
    ref = r.data["widths"]["128"]["d90_train"]
    r.data["widths"]["128"]["d90_test"] = 5 * ref
    ratio = _check(intrinsic_dimension.signature(r), "control_d90_ratio").value
    assert ratio == pytest.approx(r.data["control"]["d90_train"] / ref)
