import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, feature_merging

CHECKS = {
    "base_test_acc",
    "ifm_removed_fraction",
    "ifm_test_loss_pts",
    "control_magnitude_excess_loss_pts",
    "control_init_removed_fraction",
}


def net(base=0.97, removed=(110, 110), ifm_acc=0.965, mag_acc=0.93, init_removed=0):
    at = {"removed": list(removed), "ifm_acc": ifm_acc, "magnitude_acc": mag_acc}
    return {
        "base_acc": base,
        "at_beta": at,
        "init_removed": init_removed,
        "sweep": [{"removed": [10, 10], "ifm_acc": base, "magnitude_acc": base}, at],
        "init_sweep_removed": [0, init_removed],
    }


def make_result(**main):
    cfg = build_config(feature_merging.Config, feature_merging.PRESETS)
    data = {
        "beta": 0.5,
        "beta_grid": [0.3, 0.5],
        "n_units": 512,
        "main": net(**main),
        "reference": net(removed=(0, 2), ifm_acc=0.97, mag_acc=0.97),
    }
    return Result("feature-merging", cfg.to_dict(), 0, data)


def failed(v):
    return {c.name for c in v.checks if not c.passed}


def test_present_signature_passes_every_check():
    v = feature_merging.signature(make_result())
    assert {c.name for c in v.checks} == CHECKS
    assert v.passed, str(v)
    n = feature_merging.numbers(make_result().data)["main"]
    assert n["ifm_removed_fraction"] == pytest.approx(220 / 512)
    assert n["ifm_test_loss_pts"] == pytest.approx(0.5)
    assert n["magnitude_excess_loss_pts"] == pytest.approx(3.5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        # an untrained main net: pruning losses say nothing
        ({"base": 0.6, "ifm_acc": 0.595, "mag_acc": 0.56}, "base_test_acc"),
        # IFM finds few equivalent units (the standard-init situation)
        ({"removed": (20, 20)}, "ifm_removed_fraction"),
        # removes 43% but costs 2 pts
        ({"ifm_acc": 0.95, "mag_acc": 0.90}, "ifm_test_loss_pts"),
        # magnitude pruning of the same counts is as good (what the quick preset measures)
        ({"mag_acc": 0.967}, "control_magnitude_excess_loss_pts"),
        # the threshold is so loose that IFM merges the untrained net too
        ({"init_removed": 60}, "control_init_removed_fraction"),
    ],
)
def test_each_check_fails_when_its_part_of_the_signature_is_absent(kwargs, name):
    assert failed(feature_merging.signature(make_result(**kwargs))) == {name}


def test_bad_beta_grid_is_rejected():
    with pytest.raises(ConfigError, match="beta_grid"):
        build_config(feature_merging.Config, feature_merging.PRESETS, overrides={"beta_grid": (0.5, 0.3)})
