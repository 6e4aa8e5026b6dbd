import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, sparse_training

INTERVALS = (50, 100, 200, 400, 1000)


def make_result(
    set_acc=(0.56, 0.55, 0.54, 0.53, 0.50),
    set_r=(0.40, 0.25, 0.15, 0.10, 0.065),
    rigl_acc=(0.58, 0.59, 0.60, 0.60, 0.55),
    rigl_r=(0.17, 0.14, 0.12, 0.09, 0.065),
    static=0.48,
    control=(0.670, 0.668, 0.672),
    leak=0.0,
    drift=0.0,
):
    cfg = build_config(sparse_training.Config, sparse_training.PRESETS)
    conds = {
        "dense": dict(method="static", interval=0, density=1.0, test_acc=0.68, train_acc=1.0, itop_rate=1.0, n=1),
        "static": dict(method="static", interval=0, density=0.05, test_acc=static, train_acc=0.55, itop_rate=0.05, n=2),
    }
    for method, accs, rs in (("set", set_acc, set_r), ("rigl", rigl_acc, rigl_r)):
        for dt, a, r in zip(INTERVALS, accs, rs, strict=True):
            conds[f"{method}_{dt}"] = dict(
                method=method, interval=dt, density=0.05, test_acc=a, train_acc=a, itop_rate=r, n=2
            )
    for name, a in zip(("static", "set", "rigl"), control, strict=True):
        conds[f"control_{name}"] = dict(
            method=name, interval=100, density=0.9, test_acc=a, train_acc=1.0, itop_rate=0.95, n=1
        )
    data = {"members": [], "conditions": conds, "max_inactive_weight": leak, "max_density_change": drift}
    return Result("sparse-training", cfg.to_dict(), 0, data)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _fails_only(v, name):
    assert not v.passed
    assert not _check(v, name).passed
    assert all(c.passed for c in v.checks if c.name != name), str(v)


def test_present_phenomenon_passes_every_check():
    v = sparse_training.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == {
        "dynamic_minus_static_pts",
        "set_itop_rate_span",
        "itop_spearman_set",
        "control_high_density_gain_pts",
        "max_inactive_weight_abs",
        "max_density_change",
    }


def test_dynamic_no_better_than_static_fails():
    # the static mask as good as dynamic training on average (the ITOP ordering among SET runs still holds)
    _fails_only(sparse_training.signature(make_result(static=0.55)), "dynamic_minus_static_pts")


def test_itop_rates_that_barely_differ_fail_the_span_check():
    r = (0.100, 0.095, 0.09, 0.085, 0.08)
    _fails_only(sparse_training.signature(make_result(set_r=r)), "set_itop_rate_span")


def test_accuracy_not_following_the_itop_rate_fails():
    # SET accuracy peaks at an intermediate interval: no monotone relation with R_s
    v = sparse_training.signature(make_result(set_acc=(0.50, 0.53, 0.56, 0.54, 0.52)))
    _fails_only(v, "itop_spearman_set")


def test_control_where_dynamic_also_wins_at_high_density_fails():
    v = sparse_training.signature(make_result(control=(0.64, 0.67, 0.66)))
    _fails_only(v, "control_high_density_gain_pts")


def test_leaking_masks_and_density_drift_fail():
    _fails_only(sparse_training.signature(make_result(leak=1e-3)), "max_inactive_weight_abs")
    _fails_only(sparse_training.signature(make_result(drift=0.001)), "max_density_change")


def test_members_layout():
    cfg = build_config(sparse_training.Config, sparse_training.PRESETS)
    spec = sparse_training.members(cfg)
    assert len(spec) == 1 + cfg.replicates * (1 + len(cfg.intervals)) + cfg.rigl_replicates * len(cfg.intervals) + 3
    assert {m["end_step"] for m in spec} == {int(0.75 * cfg.steps)}
    conds = {m["condition"] for m in spec}
    assert {"dense", "static", "control_static", "control_set", "control_rigl"} <= conds


@pytest.mark.parametrize(
    "over", [{"intervals": (100, 100, 100)}, {"control_density": 0.01}, {"density": 1.5}, {"replicates": 0}]
)
def test_bad_configs_are_rejected(over):
    with pytest.raises(ConfigError):
        build_config(sparse_training.Config, sparse_training.PRESETS, overrides=over)


def test_one_good_condition_does_not_carry_the_mean_gain():
    # a single RigL condition 14 pts above static, every other dynamic condition within 0.6 pt of it: the check is on
    # the mean over all SET and RigL conditions (no selection of the best), so it fails although the best run wins
    r = make_result(set_acc=(0.486, 0.485, 0.484, 0.483, 0.482), rigl_acc=(0.62, 0.48, 0.48, 0.48, 0.48))
    n = sparse_training.numbers(r.data)
    assert n["best_dynamic_minus_static_pts"] == pytest.approx(14.0)
    _fails_only(sparse_training.signature(r), "dynamic_minus_static_pts")


def test_control_conditions_stay_out_of_the_itop_correlation():
    r = make_result()
    before = sparse_training.numbers(r.data)
    # a control SET net with the largest R_s and the worst accuracy would break the correlation if it were counted
    r.data["conditions"]["control_set"].update(itop_rate=0.99, test_acc=0.10, interval=25)
    after = sparse_training.numbers(r.data)
    assert after["itop_spearman_set"] == before["itop_spearman_set"]
    assert after["set_itop_rate_span"] == before["set_itop_rate_span"]
    assert after["dynamic_minus_static_pts"] == before["dynamic_minus_static_pts"]
