"""representation-similarity: each check fails on a constructed result without the phenomenon."""

import math

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import representation_similarity as rs
from phenomlab.phenomena.verdict import Result


def pairs(means: list[float], spread: float = 0.01, nets: int = 4) -> list[list[list[float | None]]]:
    """Per-width nets x nets same-layer CKA: the width's mean plus a fixed pattern of +-spread per pair."""
    return [
        [[None if a == b else m + spread * ((a + b) % 3 - 1) for b in range(nets)] for a in range(nets)] for m in means
    ]


def present() -> dict:
    means = [0.80, 0.83, 0.87, 0.94]
    return {
        "widths": [4, 8, 16, 32],
        "same_layer_cka": means,
        "pair_cka": pairs(means),
        "cka_id": [0.7, 0.73, 0.93, 1.0],
        "cca_id": 0.1,
        "test_acc": [[0.9] * 4] * 4,
    }


def failing(data: dict) -> set[str]:
    v = rs.signature(Result(phenomenon=rs.ID, config={}, seed=0, data=data))
    return {c.name for c in v.checks if not c.passed}


def test_present_passes():
    assert failing(present()) == set()


def test_cka_not_identifying_layers_fails():
    d = present()
    d["cka_id"][-1] = 0.8
    assert failing(d) == {"cka_identification"}


def test_cca_identifying_as_well_as_cka_fails_the_control():
    d = present()
    d["cca_id"] = 0.9
    assert failing(d) == {"control_cca_identification_gap"}


def test_no_width_trend_fails():
    d = present()
    d["pair_cka"] = pairs([0.88, 0.86, 0.89, 0.87], spread=0.05)  # flat within the nets' spread
    d["same_layer_cka"] = [0.88, 0.86, 0.89, 0.87]
    assert failing(d) == {"width_trend_ci_low", "width_gain"}


def test_small_width_gain_fails():
    d = present()
    d["same_layer_cka"] = [0.90, 0.905, 0.91, 0.92]
    d["pair_cka"] = pairs(d["same_layer_cka"], spread=0.001)  # a real but tiny trend
    assert failing(d) == {"width_gain"}


def test_jackknife_and_slope_interval_by_hand():
    m = [[None, 1.0, 2.0], [1.0, None, 3.0], [2.0, 3.0, None]]
    assert rs.jackknife_var(m) == pytest.approx(4 / 3)  # leave-one-out means 3, 2, 1
    assert rs.slope([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx(2.0)
    shifted = [[[None if v is None else v + c for v in row] for row in m] for c in (0.0, 1.0, 2.0)]
    point, lo, hi = rs.width_slope_ci([2, 4, 8], shifted)
    # slope 1 per doubling; var = sum_w ((x_w - 1)/2)^2 * 4/3 = 2/3; df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    half = 2.7764451051977987 * math.sqrt(2 / 3)
    assert point == pytest.approx(1.0) and lo == pytest.approx(1 - half) and hi == pytest.approx(1 + half)


def test_mean_off_diagonal_skips_self_pairs():
    m = [[None, 1.0, 2.0], [1.0, None, 3.0], [2.0, 3.0, None]]
    assert rs._mean_off_diagonal(m, [0, 1, 2]) == pytest.approx(2.0)
    assert rs._mean_off_diagonal(m, [0, 0, 1]) == pytest.approx(1.0)  # resampled net 0 twice: only 0-1 pairs
    assert math.isnan(rs._mean_off_diagonal(m, [2, 2, 2]))


def test_identification_counts_diagonal_argmax():
    good = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    bad = torch.tensor([[0.1, 0.9], [0.2, 0.8]])
    assert rs.identification([good]) == 1.0
    assert rs.identification([good, bad]) == 0.75


def test_too_few_examples_for_cca_rejected():
    with pytest.raises(ConfigError, match="CCA is 1 by construction"):
        rs.Config(widths=(4, 8, 32), n_examples=2000).validate()
    with pytest.raises(ConfigError):
        rs.Config(widths=(4, 8)).validate()
