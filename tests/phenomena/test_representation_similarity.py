"""representation-similarity: each check fails on a constructed result without the phenomenon."""

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import representation_similarity as rs
from phenomlab.phenomena.verdict import Result


def present() -> dict:
    return {
        "widths": [4, 8, 16, 32],
        "same_layer_cka": [0.80, 0.83, 0.87, 0.94],
        "cka_id": [0.7, 0.73, 0.93, 1.0],
        "cca_id": 0.1,
        "test_acc": [[0.9] * 3] * 4,
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
    d["same_layer_cka"] = [0.80, 0.95, 0.83, 0.94]  # non-monotone: Spearman 0.4
    assert "width_trend" in failing(d)


def test_flat_width_trend_fails_the_gain():
    d = present()
    d["same_layer_cka"] = [0.90, 0.905, 0.91, 0.92]  # monotone but within seed noise
    assert failing(d) == {"width_gain"}


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
