import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, hyper_singan

NAMES = {"own_image_fraction", "sample_diversity", "interpolation_monotone", "control_own_image_fraction"}


def make_result(own=0.9, div=0.3, rho=(1.0, 0.9, 0.85), ctrl_own=0.5):
    cfg = build_config(hyper_singan.Config, hyper_singan.PRESETS)
    main = {"own_fraction": own, "own_generator_fraction": 1.0, "row_wins": [own], "diversity": div}
    main["interp_rho"] = list(rho)
    ctrl = {"own_fraction": ctrl_own, "own_generator_fraction": 0.5, "row_wins": [ctrl_own], "diversity": div}
    return Result("hyper-singan", cfg.to_dict(), 0, {"main": main, "control": ctrl})


def _failed(v):
    return [c.name for c in v.checks if not c.passed]


def test_present_phenomenon_passes_every_check():
    v = hyper_singan.signature(make_result())
    assert v.passed and {c.name for c in v.checks} == NAMES


def test_each_check_fails_on_its_own_construction():
    # emitted GANs no closer to their own image than to others (no feed-forward modelling)
    assert _failed(hyper_singan.signature(make_result(own=0.55))) == ["own_image_fraction"]
    # a deterministic copy of the image, no sampling: not a generative model
    assert _failed(hyper_singan.signature(make_result(div=0.01))) == ["sample_diversity"]
    # the interpolated generators do not move from one image's statistics to the other's
    assert _failed(hyper_singan.signature(make_result(rho=(0.2, -0.1, 0.5)))) == ["interpolation_monotone"]
    # the shuffled-conditioning control shows the own-image advantage too: the advantage is not from conditioning
    assert _failed(hyper_singan.signature(make_result(ctrl_own=0.8))) == ["control_own_image_fraction"]


def test_missing_control_or_interpolation_fails():
    # a run without the shuffled-conditioning arm (control=False) cannot pass: the control is missing, not passed
    r = make_result()
    del r.data["control"]
    assert _failed(hyper_singan.signature(r)) == ["control_own_image_fraction"]
    # no interpolation pairs measured: the interpolation check is missing, not passed
    assert _failed(hyper_singan.signature(make_result(rho=()))) == ["interpolation_monotone"]


def test_absent_phenomenon_fails():
    # emitted generators unrelated to their input: main arm at the control's level, no interpolation trend
    v = hyper_singan.signature(make_result(own=0.5, rho=(0.1, -0.2, 0.0), ctrl_own=0.5))
    assert not v.passed and {"own_image_fraction", "interpolation_monotone"} <= set(_failed(v))


def test_win_rates_by_hand():
    M = [[1.0, 2.0, 3.0], [0.5, 2.0, 1.0], [4.0, 0.1, 0.2]]
    rows, cols = hyper_singan.win_rates(M)
    # row i: M[i][i] < M[i][j]; column i: M[i][i] < M[j][i]
    assert rows == [1.0, 0.0, 0.5]
    assert cols == [0.5, 0.0, 1.0]  # the tie M[1][1] == M[0][1] is no win


def test_textures_are_deterministic_distinct_and_bounded():
    a = hyper_singan.textures(5, 16, seed=3)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, hyper_singan.textures(5, 16, seed=3))
    assert float(a.abs().max()) <= 1.0 and not torch.equal(a, hyper_singan.textures(5, 16, seed=4))
    assert float((a[0] - a[1]).abs().mean()) > 0.1


def test_reduced_run_end_to_end(smoke):
    store, r = smoke("hyper-singan")
    assert {c.name for c in r.verdict.checks} == NAMES
    assert len(r.data["main"]["fid"]) == r.config["n_test"] and all(
        f >= 0 for row in r.data["main"]["fid"] for f in row
    )
    assert all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize("over", [{"n_test": 2}, {"gp_weight": -1.0}, {"width": 0}, {"n_eval": 1}])
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(hyper_singan.Config, hyper_singan.PRESETS, "quick", over)
