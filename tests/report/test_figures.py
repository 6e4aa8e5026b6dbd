import math

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from phenomlab.report.figures import loglog_fit, new_figure, save

XS = [10.0, 100.0, 1000.0]
PER_X = [[2.0, 4.0], [0.3, 0.5], [0.03, 0.05]]  # means 3, 0.4, 0.04: slope about -0.94


def _lines(ax):
    return [(np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)) for line in ax.get_lines()]


def test_loglog_fit_draws_points_means_fit_and_band(tmp_path):
    fig, ax = new_figure()
    slope, ci = -0.9, (-1.2, -0.6)
    loglog_fit(ax, XS, PER_X, slope, ci, "C0", "arm: slope", mfc="none")
    # one faint scatter per x, with that x's values
    scatters = [c for c in ax.collections if not isinstance(c, PolyCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [2, 2, 2]
    assert np.allclose(scatters[1].get_offsets(), [[100.0, 0.3], [100.0, 0.5]])
    (mx, my), (gx, gy) = _lines(ax)
    assert np.allclose(mx, XS) and np.allclose(my, [3.0, 0.4, 0.04])
    assert ax.get_lines()[0].get_label() == "arm: slope" and ax.get_lines()[0].get_markerfacecolor() == "none"
    # the fit line has the given slope and the intercept of the least-squares fit to the means
    assert np.allclose(np.diff(np.log(gy)) / np.diff(np.log(gx)), slope)
    b = np.polyfit(np.log(XS), np.log([3.0, 0.4, 0.04]), 1)[1]
    assert gy[0] == pytest.approx(math.exp(b) * gx[0] ** slope)
    # the band: lines of the CI's slopes through the fit at the geometric-mean x, which it contains
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    verts = band.get_paths()[0].vertices
    assert verts[:, 1].min() < gy.min() and verts[:, 1].max() > gy.max()
    x0 = math.exp(np.mean(np.log(XS)))
    at_x0 = math.exp(b) * x0**slope
    ends = verts[np.isclose(verts[:, 0], XS[0])][:, 1]
    # (slopes below the fit's lie above it left of x0)
    assert [ends.min(), ends.max()] == pytest.approx([at_x0 * (XS[0] / x0) ** ci[1], at_x0 * (XS[0] / x0) ** ci[0]])
    assert save(fig, tmp_path, "fit").exists()


def test_loglog_fit_without_slope_or_ci_draws_no_fit_or_band():
    fig, ax = new_figure()
    loglog_fit(ax, XS, PER_X, None, (None, None), "C1", "no fit")
    assert len(ax.get_lines()) == 1 and ax.get_lines()[0].get_markerfacecolor() == "C1"
    loglog_fit(ax, XS, PER_X, -0.9, (None, None), "C1", "fit, no CI")
    assert len(ax.get_lines()) == 3
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
