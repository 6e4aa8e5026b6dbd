from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import effective_depth as ed
from phenomlab.phenomena._stats import spearman

SMALL = ed.PRESETS["smoke"]
L = 10
NOISES = (0.0, 0.1, 0.2, 0.3, 0.5)
DEPTHS = (6, 8, 10, 12)

CHECKS = {
    "min_train_acc",
    "min_spearman(layer, NCC)",
    "L*(noise 0)",
    "spearman(noise, mean L*)",
    "L*(noise 0.5) - L*(noise 0)",
    "control_depth_L*_range(noise 0)",
    "control_depth_L*_range(noise 0.2)",
}


def curve(l_star, depth=L):
    """An NCC curve over layers 0..depth rising to 0.995 exactly at layer ``l_star`` (None: never)."""
    top = depth if l_star is None else l_star
    ncc = [0.3 + 0.6 * i / top for i in range(top)] + [0.995] * (depth + 1 - top)
    if l_star is None:
        ncc[-1] = 0.98
    assert ed.effective_depth(ncc) == l_star
    return ncc


def cond(l_stars, depth=L, train_acc=1.0):
    return ed.condition([curve(s, depth) for s in l_stars], [train_acc] * len(l_stars), [0.5] * len(l_stars))


def make_result(noise_ls=None, depth_ls=None, noisy_ls=None):
    """``noise_ls``: per noise level the nets' L* at depth L; ``depth_ls``/``noisy_ls``: per total depth the
    nets' L* at noise 0 / 0.2."""
    noise_ls = noise_ls or {0.0: [5, 5, 6], 0.1: [6, 6, 6], 0.2: [7, 6, 7], 0.3: [7, 7, 8], 0.5: [8, 8, 8]}
    depth_ls = depth_ls or {6: [5, 5, 5], 8: [5, 6, 5], 10: [5, 5, 6], 12: [5, 6, 6]}
    noisy_ls = noisy_ls or {10: [7, 6, 7], 12: [7, 7, 7]}
    data = {
        "depth": L,
        "inits": 3,
        "noise_sweep": [{"noise": p, **cond(noise_ls[p])} for p in NOISES],
        "controls": [
            {"noise": 0.0, "sweep": [{"depth": d, **cond(depth_ls[d], d)} for d in DEPTHS]},
            {"noise": 0.2, "sweep": [{"depth": d, **cond(noisy_ls[d], d)} for d in (10, 12)]},
        ],
    }
    return Result(ed.ID, build_config(ed.Config, ed.PRESETS, "quick").to_dict(), 0, data)


def failed(v, name):
    c = next(c for c in v.checks if c.name == name)
    return not c.passed


def test_helpers():
    assert ed.effective_depth([0.3, 0.5, 0.995, 1.0]) == 2
    assert ed.effective_depth([0.999, 0.5, 0.9]) is None  # the input layer (index 0) does not count
    assert ed.mean_or_none([4, 5, 6]) == 5.0
    assert ed.mean_or_none([4, None, 6]) is None
    assert spearman(range(3), [0.1, 0.2, 0.3]) == pytest.approx(1.0)


def test_present_passes_every_check():
    v = ed.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == CHECKS


def test_a_net_that_does_not_fit_fails_min_train_acc():
    r = make_result()
    r.data["noise_sweep"][-1]["train_acc"][1] = 0.9
    assert failed(ed.signature(r), "min_train_acc")


def test_ncc_peaking_early_fails_rise():
    r = make_result()
    falling = [0.3, 0.995, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5]
    r.data["noise_sweep"][0] = {"noise": 0.0, **ed.condition([falling] * 3, [1.0] * 3, [0.5] * 3)}
    assert failed(ed.signature(r), "min_spearman(layer, NCC)")


def test_clean_separable_only_at_last_layer_fails():
    v = ed.signature(make_result(noise_ls={0.0: [10] * 3, 0.1: [10] * 3, 0.2: [10] * 3, 0.3: [10] * 3, 0.5: [10] * 3}))
    assert failed(v, "L*(noise 0)")


def test_non_monotone_in_noise_fails_spearman():
    # rises then saturates and falls back: the seed-0 pattern of a ceiling, not a monotone growth
    noise_ls = {0.0: [5, 5, 6], 0.1: [7, 7, 7], 0.2: [8, 8, 7], 0.3: [8, 8, 8], 0.5: [7, 8, 7]}
    v = ed.signature(make_result(noise_ls=noise_ls))
    assert failed(v, "spearman(noise, mean L*)")
    assert not failed(v, "L*(noise 0.5) - L*(noise 0)")


def test_small_gain_fails():
    # monotone but only one layer deeper at noise 0.5
    noise_ls = {0.0: [5, 5, 5], 0.1: [5, 5, 6], 0.2: [5, 6, 6], 0.3: [6, 6, 6], 0.5: [6, 6, 7]}
    v = ed.signature(make_result(noise_ls=noise_ls))
    assert failed(v, "L*(noise 0.5) - L*(noise 0)")
    assert not failed(v, "spearman(noise, mean L*)")


def test_never_separable_fails_and_is_reported():
    noise_ls = {0.0: [5, 5, 6], 0.1: [6, 6, 6], 0.2: [7, 6, 7], 0.3: [7, 7, 8], 0.5: [8, None, 8]}
    v = ed.signature(make_result(noise_ls=noise_ls))
    assert failed(v, "spearman(noise, mean L*)") and failed(v, "L*(noise 0.5) - L*(noise 0)")
    assert "never reached" in v.summary


def test_control_fails_when_effective_depth_grows_with_total_depth():
    # L* = L - 2: the "effective depth" is a fixed fraction of the net, not a property of the task
    depth_ls = {6: [4, 4, 4], 8: [6, 6, 6], 10: [8, 8, 8], 12: [10, 10, 10]}
    v = ed.signature(make_result(depth_ls=depth_ls))
    assert failed(v, "control_depth_L*_range(noise 0)")
    assert sum(not c.passed for c in v.checks) == 1


def test_noisy_control_fails_when_noisy_effective_depth_grows_with_total_depth():
    # the seed-0 exploration: at noise 0.2, L* 7.7 at L=10 but 9.3 at L=12
    v = ed.signature(make_result(noisy_ls={10: [8, 7, 8], 12: [10, 10, 8]}))
    assert failed(v, "control_depth_L*_range(noise 0.2)")
    assert sum(not c.passed for c in v.checks) == 1


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(ed.ID)
    assert {c.name for c in r.verdict.checks} == CHECKS
    assert [row["noise"] for row in r.data["noise_sweep"]] == list(SMALL["noise_levels"])
    assert [row["depth"] for row in r.data["controls"][0]["sweep"]] == list(SMALL["control_depths"])
    assert r.data["controls"][1]["noise"] == 0.2
    for row in r.data["noise_sweep"]:
        assert len(row["ncc"]) == SMALL["inits"] and len(row["ncc"][0]) == SMALL["depth"] + 1
        assert all(0.0 <= a <= 1.0 for a in row["ncc"][0])
    assert r.figures and all(Path(p).exists() and p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"depth": 1},
        {"noise_levels": (0.1, 0.2, 0.3)},
        {"noise_levels": (0.0, 0.5)},
        {"noise_levels": (0.0, 0.5, 1.0)},
        {"control_depths": (8,)},
        {"control_depths": (1, 8)},
        {"noisy_control_depths": (12,)},
        {"noisy_control_noise": 0.0},
        {"inits": 0},
        {"activation": "foo"},
        {"steps": 100, "eval_every": 200},
        {"lr": 0},
        {"schedule": "step"},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ed.Config, ed.PRESETS, "quick", over)
