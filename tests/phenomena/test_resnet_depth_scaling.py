"""Signature tests of resnet-depth-scaling: one constructed result per check that makes that check fail."""

from __future__ import annotations

import pytest

from phenomlab.phenomena import resnet_depth_scaling as rds
from phenomlab.phenomena.verdict import Result

DEPTHS = [8, 16, 32, 64, 128, 256]


def _cells(
    init: str, rough_exp: float, loss_ratio: float = 0.1, update_exp: float | None = None, max_exp: float | None = None
) -> list[dict]:
    # evaluations at steps 0 and 50 (the checked step); per-init spread of +-5%; max_exp: the max-over-layers
    # statistics' exponent where it differs from the root-mean-square ones'
    cells = []
    for L in DEPTHS:
        base = 2.0 * L**rough_exp
        upd = 0.5 * L ** (rough_exp if update_exp is None else update_exp)
        mx = 1.0 if max_exp is None else L ** (max_exp - rough_exp)
        cells.append(
            {
                "depth": L,
                "init": init,
                "roughness0": [base] * 3,
                "steps": [0, 50],
                "loss": [[1.0, 1.2, 0.9], [loss_ratio * v for v in (1.0, 1.2, 0.9)]],
                "roughness": [[base * mx] * 3, [base * mx * f for f in (0.95, 1.0, 1.05)]],
                "increment": [[0.0] * 3, [1.0, 1.1, 0.9]],
                "increment_roughness": [[0.0] * 3, [upd * mx * f for f in (0.9, 1.0, 1.1)]],
                "roughness_rms": [[base] * 3, [base * f for f in (0.95, 1.0, 1.05)]],
                "increment_roughness_rms": [[0.0] * 3, [upd * f for f in (0.9, 1.0, 1.1)]],
            }
        )
    return cells


def _result(
    smooth_exp: float = -1.0,
    iid_exp: float = 0.0,
    loss_ratio: float = 0.1,
    iid_update_exp: float | None = None,
    smooth_update_exp: float | None = None,
    smooth_max_exp: float | None = None,
    statistic: str | None = "rms",
) -> Result:
    cells = _cells("smooth", smooth_exp, loss_ratio, smooth_update_exp, smooth_max_exp) + _cells(
        "iid", iid_exp, update_exp=iid_update_exp
    )
    data = {"cells": cells, "depths": DEPTHS, "check_step": 50}
    if statistic is not None:
        data["roughness"] = statistic
    return Result(rds.ID, {}, 0, data)


def _check(result: Result, name: str):
    return next(c for c in rds.signature(result).checks if c.name == name)


def test_present_passes_every_check() -> None:
    v = rds.signature(_result())
    assert v.passed, str(v)
    assert _check(_result(), "roughness_slope_smooth").value == pytest.approx(-1.0, abs=1e-9)


def test_rough_smooth_arm_fails() -> None:
    assert not _check(_result(smooth_exp=-0.5), "roughness_slope_smooth").passed


def test_control_smooth_too_fails() -> None:
    # the i.i.d. arm becoming ODE-like as well: the contrast is gone
    assert not _check(_result(iid_exp=-0.8), "control_roughness_slope_iid").passed


def test_control_smooth_updates_fail() -> None:
    # i.i.d. init whose weights stay rough (the init) but whose training updates are smooth in k
    r = _result(iid_update_exp=-1.0)
    assert _check(r, "control_roughness_slope_iid").passed
    assert not _check(r, "control_increment_roughness_slope_iid").passed


def test_smooth_init_with_rough_updates_fails() -> None:
    # weights still dominated by the smooth init, but training adds steps that do not shrink with depth
    r = _result(smooth_update_exp=-0.4)
    assert _check(r, "roughness_slope_smooth").passed
    assert not _check(r, "update_roughness_slope_smooth").passed


def test_rms_statistic_is_checked_and_max_reported() -> None:
    # a few steep layers: the max over layers falls only as L^-0.5, the root-mean-square as 1/L
    r = _result(smooth_max_exp=-0.5)
    v = rds.signature(r)
    assert v.passed, str(v)
    assert "max_k statistic (unchecked): smooth -0.50" in v.summary
    # the same data read with the max statistic (the option, or a result stored before it existed) fails
    for statistic in ("max", None):
        r = _result(smooth_max_exp=-0.5, statistic=statistic)
        assert not _check(r, "roughness_slope_smooth").passed
        assert "update_roughness_slope_smooth" not in {c.name for c in rds.signature(r).checks}


def test_untrained_fails() -> None:
    assert not _check(_result(loss_ratio=0.8), "train_loss_ratio").passed


def test_ci_brackets_the_slope() -> None:
    f = rds.fits(_result().data)
    _, _, s, (lo, hi) = f["roughness_smooth"]
    assert lo <= s <= hi


def test_check_step_must_be_an_evaluation() -> None:
    from phenomlab.errors import ConfigError

    with pytest.raises(ConfigError):
        rds.Config(steps=100, eval_every=25, check_step=60).validate()
    with pytest.raises(ConfigError):
        rds.Config(steps=100, eval_every=25, check_step=125).validate()
