import math

import pytest

from phenomlab.phenomena._stats import fmt_ci, grid_optimum, lr_drift


def test_fmt_ci_formats_value_and_interval_with_one_spec():
    assert fmt_ci(0.12345, -0.5, 1.0) == "0.123 [-0.500, 1.000]"
    assert fmt_ci(-0.4321, -0.6789, 0.0612, ".2f") == "-0.43 [-0.68, 0.06]"


def test_fmt_ci_says_na_for_what_was_not_measured():
    assert fmt_ci(None, None, None, ".2f") == "n/a [n/a, n/a]"
    assert fmt_ci(1.5, None, 2.0, ".1f") == "1.5 [n/a, 2.0]"


EXPS = [-9, -8, -7, -6, -5, -4]


def parabola(opt: float) -> list[float]:
    # a parabola in the exponent has its vertex exactly where grid_optimum() puts it
    return [1.0 + (e - opt) ** 2 for e in EXPS]


def test_grid_optimum_refines_by_parabola_and_handles_edges():
    assert grid_optimum(EXPS, parabola(-6.3)) == pytest.approx(-6.3)
    # at the grid edge there is no parabola: the edge itself
    assert grid_optimum(EXPS, parabola(-20.0)) == EXPS[0]
    assert grid_optimum(EXPS, [math.inf] * len(EXPS)) is None
    assert grid_optimum(EXPS, [math.nan] * len(EXPS)) is None
    # a diverged neighbour (inf or nan): the grid minimum, unrefined
    for bad in (math.inf, math.nan):
        losses = parabola(-6.3)
        losses[EXPS.index(-7)] = bad
        assert grid_optimum(EXPS, losses) == -6.0


def test_lr_drift_is_two_to_the_spread_of_the_optima():
    drift, opts = lr_drift(EXPS, [parabola(-6.0), parabola(-7.5), parabola(-6.5)])
    assert opts == pytest.approx([-6.0, -7.5, -6.5])
    assert drift == pytest.approx(2**1.5)
    assert lr_drift(EXPS, [parabola(-6.0), [math.inf] * len(EXPS)])[0] is None
