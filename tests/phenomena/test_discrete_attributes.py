import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, discrete_attributes


def _entry(mbc, acc=0.97, tree=0.95):
    return {"mbc": mbc, "mbc_replicates": [mbc], "best_corr": [mbc] * 6, "test_acc": acc, "tree_test_acc": tree}


def make_result(key_d, key_p, ctrl_d, ctrl_p, acc=0.97):
    cfg = build_config(discrete_attributes.Config, discrete_attributes.PRESETS)
    data = {
        "key_discrete": _entry(key_d, acc),
        "key_plain": _entry(key_p),
        "random_partition_discrete": _entry(ctrl_d),
        "random_partition_plain": _entry(ctrl_p),
    }
    return Result("discrete-attributes", cfg.to_dict(), 0, data)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_present_phenomenon_passes():
    assert discrete_attributes.signature(make_result(0.8, 0.6, 0.35, 0.36)).passed


def test_no_advantage_fails_the_advantage_check():
    v = discrete_attributes.signature(make_result(0.62, 0.6, 0.35, 0.36))
    assert [c.name for c in v.checks if not c.passed] == ["mbc_advantage"]


def test_advantage_in_the_control_fails_the_control_check():
    v = discrete_attributes.signature(make_result(0.8, 0.6, 0.5, 0.36))
    assert [c.name for c in v.checks if not c.passed] == ["control_mbc_advantage"]


def test_unsolved_task_fails_the_accuracy_check():
    v = discrete_attributes.signature(make_result(0.8, 0.6, 0.35, 0.36, acc=0.5))
    assert [c.name for c in v.checks if not c.passed] == ["discrete_test_acc"]


def test_smoke_run_end_to_end(smoke):
    store, r = smoke("discrete-attributes")
    assert {c.name for c in r.verdict.checks} == {"discrete_test_acc", "mbc_advantage", "control_mbc_advantage"}
    for key in ("key_discrete", "key_plain", "random_partition_discrete", "random_partition_plain"):
        assert 0.0 <= r.data[key]["mbc"] <= 1.0 and len(r.data[key]["best_corr"]) == 6
    assert all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize("over", [{"n_classes": 6}, {"n_classes": 128}, {"sparsity": -1.0}, {"n_replicates": 0}])
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(discrete_attributes.Config, discrete_attributes.PRESETS, "quick", over)
