from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import lottery_ticket as lt

CHECKS = ["ticket_minus_dense_pts_at_80pct", "ticket_minus_reinit_pts_at_90pct", "max_pruned_weight_abs"]


def result(ticket, reinit, dense=0.62, leak=0.0, rounds=11):
    sp = [1 - 0.8**r for r in range(rounds + 1)]
    cfg = lt.Config()
    data = {
        "round": list(range(rounds + 1)),
        "sparsity": sp,
        "remaining": [1 - s for s in sp],
        "ticket_test_acc": ticket,
        "ticket_train_acc": ticket,
        "reinit_test_acc": reinit,
        "random_mask_test_acc": reinit,
        "layer_sparsity": [{} for _ in sp],
        "dense_test_acc": dense,
        "max_masked_weight": leak,
        "rewind_step": 0,
    }
    return Result(phenomenon=lt.ID, config=cfg.to_dict(), seed=0, data=data)


def curves(ticket_at_83=0.615, ticket_at_91=0.60, reinit_at_91=0.50):
    # rounds 0..11: sparsity 0, .2, .36, .49, .59, .67, .74, .79, .832, .866, .893, .914
    ticket = [0.62] * 8 + [ticket_at_83, 0.61, 0.60, ticket_at_91]
    reinit = [None] + [0.6] * 7 + [0.55, 0.53, 0.52, reinit_at_91]
    return ticket, reinit


def test_verdict_passes_on_a_winning_ticket():
    v = lt.signature(result(*curves()))
    assert v.passed, str(v)
    assert [c.name for c in v.checks] == CHECKS
    assert v.checks[0].value == pytest.approx(-0.5)
    assert v.checks[1].value == pytest.approx(10.0)


def test_match_is_judged_at_the_first_round_past_80pct():
    # 79% sparsity (round 7) matching dense does not count; 83.2% is 1.5 pts below dense
    v = lt.signature(result(*curves(ticket_at_83=0.605)))
    assert not v.passed
    assert not v.checks[0].passed and v.checks[1].passed


def test_verdict_fails_when_reinit_is_as_good():
    ticket, reinit = curves()
    reinit = [None if r is None else t - 0.01 for t, r in zip(ticket, reinit, strict=True)]
    v = lt.signature(result(ticket, reinit))
    assert not v.passed and not v.checks[1].passed
    assert v.checks[1].value == pytest.approx(1.0)


def test_margin_is_the_best_round_past_90pct():
    # 89.3% (round 10) is not eligible even with a large margin; rounds 11-13 give 1, 5, 3 pts
    ticket, reinit = curves(ticket_at_91=0.50, reinit_at_91=0.49)
    ticket, reinit = ticket + [0.50, 0.48], reinit + [0.45, 0.45]
    reinit[10] = 0.30
    v = lt.signature(result(ticket, reinit, rounds=13))
    assert v.checks[1].value == pytest.approx(5.0)


def test_verdict_fails_without_enough_rounds_or_with_leaking_masks():
    ticket, reinit = curves()
    short = result(ticket[:8], reinit[:8], rounds=7)
    v = lt.signature(short)
    assert not v.passed and v.checks[0].value is None and v.checks[1].value is None
    assert "add rounds" in v.summary
    v = lt.signature(result(ticket, reinit, leak=1e-3))
    assert not v.passed and not v.checks[2].passed


def test_reduced_run_end_to_end(smoke):
    _, res = smoke(lt.ID)
    for key in ("sparsity", "ticket_test_acc", "reinit_test_acc", "random_mask_test_acc", "dense_test_acc"):
        assert key in res.data
    assert len(res.data["sparsity"]) == 3 and res.data["reinit_test_acc"][0] is None
    assert res.data["reinit_test_acc"][1] is not None
    assert res.data["max_masked_weight"] == 0.0
    assert [c.name for c in res.verdict.checks] == CHECKS
    assert res.figures and Path(res.figures[0]).exists()


@pytest.mark.parametrize(
    "override",
    [
        {"rewind_step": 60, "steps": 60},
        {"prune_fraction": 1.0},
        {"scope": "channel"},
        {"output_fraction": 1.5},
        {"rounds": 0},
        {"width": "wide"},
        {"sparsity": 0.9},
    ],
)
def test_bad_config_is_rejected(override):
    with pytest.raises(ConfigError):
        build_config(lt.Config, lt.PRESETS, "quick", override)
