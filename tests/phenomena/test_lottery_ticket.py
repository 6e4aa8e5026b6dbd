from pathlib import Path

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.models import MLP
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import lottery_ticket as lt
from phenomlab.train.ensemble import MLPEnsemble
from phenomlab.train.pruning import apply_masks

CHECKS = [
    "dense_acc_se_pts",
    "ticket_deepest_matching_remaining",
    "control_random_mask_remaining_ratio",
    "control_reinit_remaining_ratio",
    "max_pruned_weight_abs",
]
ROUNDS = 14
# remaining 0.8^r: r=2 64%, r=4 41%, r=7 21%, r=10 10.7%, r=14 4.4%
DENSE = [0.62, 0.625, 0.615]  # mean 0.62, SE 0.29 pts: matching = >= 0.61 (the 1 pt floor)


def curve(last_match, top=0.625, low=0.50, rounds=ROUNDS):
    """Accuracies at rounds 1..rounds: matching dense through ``last_match``, clearly below it afterwards."""
    return [top if r <= last_match else low for r in range(1, rounds + 1)]


def result(ticket=10, rand=2, reinit=2, dense=DENSE, leak=0.0, rounds=ROUNDS):
    """A constructed run: each curve is a list of accuracies at rounds 1.. or the last matching round."""
    ticket, rand, reinit = (curve(c, rounds=rounds) if isinstance(c, int) else c for c in (ticket, rand, reinit))
    rem = [0.8**r for r in range(rounds + 1)]
    data = {
        "round": list(range(rounds + 1)),
        "sparsity": [1 - x for x in rem],
        "remaining": rem,
        "ticket_test_acc": [dense[0], *ticket],
        "ticket_train_acc": [0.9] * (rounds + 1),
        "reinit_test_acc": [None, *reinit],
        "random_mask_test_acc": [None, *rand],
        "layer_sparsity": [{} for _ in rem],
        "dense_test_accs": list(dense),
        "dense_test_acc": sum(dense) / len(dense),
        "max_masked_weight": leak,
        "rewind_step": 0,
    }
    return Result(phenomenon=lt.ID, config=lt.Config().to_dict(), seed=0, data=data)


def check(v, name):
    return next(c for c in v.checks if c.name == name)


def failing(v):
    return {c.name for c in v.checks if not c.passed}


def test_verdict_passes_on_a_winning_ticket():
    v = lt.signature(result())
    assert v.passed, str(v)
    assert [c.name for c in v.checks] == CHECKS
    assert check(v, "dense_acc_se_pts").value == pytest.approx(0.2887, abs=1e-4)
    assert check(v, "ticket_deepest_matching_remaining").value == pytest.approx(0.8**10)
    assert check(v, "control_reinit_remaining_ratio").value == pytest.approx(0.8**8)
    assert "add rounds" not in v.summary


def test_noisy_dense_baseline_fails():
    # dense inits 4 pts apart: SE 2.3 pts, "matching" would mean within 4.6 pts
    v = lt.signature(result(dense=[0.58, 0.62, 0.66]))
    assert "dense_acc_se_pts" in failing(v)
    assert check(v, "dense_acc_se_pts").value == pytest.approx(2.309, abs=1e-3)


def test_a_single_dense_run_measures_no_noise_and_fails():
    # runs stored before the three dense inits hold one dense accuracy: no SE, no matching tolerance
    r = result()
    del r.data["dense_test_accs"]
    v = lt.signature(r)
    assert not v.passed and check(v, "dense_acc_se_pts").value is None
    assert check(v, "ticket_deepest_matching_remaining").value is None


def test_ticket_that_never_matches_fails():
    v = lt.signature(result(ticket=0, rand=0, reinit=0))
    assert check(v, "ticket_deepest_matching_remaining").value is None
    assert failing(v) == {
        "ticket_deepest_matching_remaining",
        "control_random_mask_remaining_ratio",
        "control_reinit_remaining_ratio",
    }


def test_ticket_matching_only_to_41pct_fails_even_when_the_controls_never_match():
    # the controls match at no pruned round (they count as 1.0), so the ratios 0.41 pass; 41% > 20% left
    v = lt.signature(result(ticket=4, rand=0, reinit=0))
    assert failing(v) == {"ticket_deepest_matching_remaining"}
    assert check(v, "control_reinit_remaining_ratio").value == pytest.approx(0.8**4)


def test_random_mask_control_as_deep_as_the_ticket_fails():
    v = lt.signature(result(rand=10))
    assert failing(v) == {"control_random_mask_remaining_ratio"}
    assert check(v, "control_random_mask_remaining_ratio").value == pytest.approx(1.0)


def test_reinit_control_as_deep_as_the_ticket_fails():
    v = lt.signature(result(reinit=9))
    assert failing(v) == {"control_reinit_remaining_ratio"}
    assert check(v, "control_reinit_remaining_ratio").value == pytest.approx(0.8)


def test_three_rounds_deeper_than_a_control_is_not_half_the_weights():
    # 0.8^3 = 0.512 > 0.5; four rounds (0.41) pass
    assert failing(lt.signature(result(reinit=7))) == {"control_reinit_remaining_ratio"}
    assert lt.signature(result(reinit=6)).passed


def test_a_control_matching_again_deep_counts_at_its_deepest_match():
    # re-init fails to match at rounds 3-8 but matches at round 9: its deepest match is round 9, as for the ticket
    reinit = curve(2)
    reinit[8] = 0.62
    v = lt.signature(result(reinit=reinit))
    assert failing(v) == {"control_reinit_remaining_ratio"}
    assert check(v, "control_reinit_remaining_ratio").value == pytest.approx(0.8)


def test_matching_tolerance_is_two_standard_errors_when_above_one_point():
    # SE 0.75 pts -> tolerance 1.5 pts below the 0.62 mean: 0.606 matches, 0.604 does not
    dense = [0.62 - 0.013, 0.62, 0.62 + 0.013]
    _, se, tol = lt.dense_noise(result(dense=dense).data)
    assert se == pytest.approx(0.7506, abs=1e-4) and tol == pytest.approx(2 * se)
    for acc, deepest in ((0.606, 12), (0.604, 10)):
        ticket = curve(10)
        ticket[11] = acc
        r, rem = lt.deepest_match(result(ticket=ticket, dense=dense).data, "ticket_test_acc")
        assert r == deepest and rem == pytest.approx(0.8**deepest)
    # below 0.5 pt SE the tolerance is the 1 pt floor: 0.6095 is 1.05 pts below and does not match
    ticket = curve(10)
    ticket[11] = 0.6095
    assert lt.deepest_match(result(ticket=ticket).data, "ticket_test_acc")[0] == 10


def test_leaking_masks_fail_and_a_truncated_imp_says_add_rounds():
    v = lt.signature(result(leak=1e-3))
    assert failing(v) == {"max_pruned_weight_abs"}
    v = lt.signature(result(ticket=ROUNDS))
    assert v.passed and "add rounds" in v.summary


def test_ensemble_masks_reach_the_right_member_and_layer():
    models = [MLP(5, 3, 4, 2) for _ in range(3)]
    ens = MLPEnsemble.from_models(models)
    names = ["fc1.weight", "fc2.weight", "out.weight"]
    gen = torch.Generator().manual_seed(0)
    member_masks = [{n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in m.named_parameters()} for m in models]
    apply_masks(ens, lt.ensemble_masks(ens, member_masks, names))
    for i, (m, masks) in enumerate(zip(models, member_masks, strict=True)):
        got = dict(ens.member(i).named_parameters())
        for n in names:
            assert torch.equal(got[n], dict(m.named_parameters())[n] * masks[n]), (i, n)


def test_reduced_run_end_to_end(smoke):
    _, res = smoke(lt.ID)
    d = res.data
    assert len(d["sparsity"]) == 3 and len(d["dense_test_accs"]) == 3
    assert d["dense_test_accs"][0] == d["ticket_test_acc"][0]
    for key in ("reinit_test_acc", "random_mask_test_acc"):
        assert d[key][0] is None and all(0.0 <= a <= 1.0 for a in d[key][1:])
    assert d["max_masked_weight"] == 0.0
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
        {"dense_inits": 1},
        {"width": "wide"},
        {"sparsity": 0.9},
    ],
)
def test_bad_config_is_rejected(override):
    with pytest.raises(ConfigError):
        build_config(lt.Config, lt.PRESETS, "quick", override)
