import pytest
import torch

from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.models import MLP
from phenomlab.phenomena import Result, build_config, mode_connectivity

CHECKS = {
    "children_min_train_acc",
    "instability_k0_pts",
    "instability_last_fork_pts",
    "spearman_fork_step_instability",
    "independent_barrier_pts",
    "matching_loss_barrier_cut",
    "matching_error_barrier_cut",
    "control_narrow_matching_error_cut",
}


def bump(height, left=25.0, right=27.0):
    """A 5-point path from ``left`` to ``right`` whose barrier is exactly ``height`` (at t = 0.5)."""
    mid = (left + right) / 2
    return [left, 0.75 * left + 0.25 * right + height / 2, mid + height, 0.25 * left + 0.75 * right + height / 2, right]


def make_result(
    instability=(15.0, 10.0, 4.0, 0.2),
    train_acc=1.0,
    independent=(55.0, 2.0),
    matched=(5.0, 0.1),
    random=(55.0, 2.0),
    narrow=(20.0, 1.0),
    narrow_matched=(15.0, 0.6),
):
    cfg = build_config(mode_connectivity.Config, mode_connectivity.PRESETS)
    data = {
        "fork_steps": [0, 50, 200, 800],
        "fork_err_curves": [bump(h) for h in instability],
        "fork_loss_curves": [bump(h / 10, 1.0, 1.1) for h in instability],
        "instability_pts": list(instability),
        "children_train_acc": [1.0] * 7 + [train_acc],
        "independent_err_curve": bump(independent[0]),
        "independent_loss_curve": bump(independent[1], 1.0, 1.1),
        "matched_err_curve": bump(matched[0]),
        "matched_loss_curve": bump(matched[1], 1.0, 1.1),
        "random_err_curves": [bump(random[0]), bump(random[0] * 1.05)],
        "random_loss_curves": [bump(random[1], 1.0, 1.1), bump(random[1] * 1.05, 1.0, 1.1)],
        "reference_err_curve": bump(0.5),
        "reference_instability_pts": 0.5,
        "narrow_err_curve": bump(narrow[0]),
        "narrow_loss_curve": bump(narrow[1], 1.0, 1.1),
        "narrow_matched_err_curve": bump(narrow_matched[0]),
        "narrow_matched_loss_curve": bump(narrow_matched[1], 1.0, 1.1),
        "narrow_train_acc": [0.97, 0.96],
    }
    return Result("mode-connectivity", cfg.to_dict(), 0, data)


def failed(v):
    return {c.name for c in v.checks if not c.passed}


def test_barrier_is_the_largest_rise_above_the_chord():
    assert mode_connectivity.barrier([1.0, 3.0, 2.0]) == pytest.approx(1.5)  # chord at t=0.5 is 1.5
    assert mode_connectivity.barrier([2.0, 1.0, 0.0]) == 0.0  # on or below the chord: 0
    assert mode_connectivity.barrier(bump(7.0)) == pytest.approx(7.0)


def test_present_signature_passes_every_check():
    v = mode_connectivity.signature(make_result())
    assert {c.name for c in v.checks} == CHECKS
    assert v.passed, str(v)
    assert "stable from k=0" in v.summary


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"train_acc": 0.8}, "children_min_train_acc"),
        # stable already at initialisation: no instability to fall
        ({"instability": (1.5, 1.0, 0.5, 0.1)}, "instability_k0_pts"),
        # falls, but not to ~0 by the last fork
        ({"instability": (15.0, 12.0, 9.0, 3.0)}, "instability_last_fork_pts"),
        # not falling with k across fork points (rho = -0.4)
        ({"instability": (15.0, 0.5, 8.0, 1.0)}, "spearman_fork_step_instability"),
        # independent runs already connected: nothing to cut
        ({"independent": (3.0, 2.0), "matched": (0.5, 0.1), "random": (3.0, 2.0)}, "independent_barrier_pts"),
        ({"matched": (5.0, 1.5)}, "matching_loss_barrier_cut"),
        ({"matched": (40.0, 0.1)}, "matching_error_barrier_cut"),
        # width does not matter: matching removes most of the narrow pair's barrier too (cut 0.75 > 0.5)
        ({"narrow_matched": (5.0, 0.6)}, "control_narrow_matching_error_cut"),
        # the narrow pair has no barrier to speak of: the cut is undefined, not a pass
        ({"narrow": (1.5, 1.0), "narrow_matched": (1.4, 0.6)}, "control_narrow_matching_error_cut"),
    ],
)
def test_each_check_fails_on_its_own_construction(kwargs, name):
    v = mode_connectivity.signature(make_result(**kwargs))
    assert not v.passed
    assert name in failed(v), failed(v)


def test_each_construction_isolates_its_check():
    # every construction above except the shared-cause ones fails only its own check
    assert failed(mode_connectivity.signature(make_result(instability=(15.0, 0.5, 8.0, 1.0)))) == {
        "spearman_fork_step_instability"
    }
    assert failed(mode_connectivity.signature(make_result(narrow_matched=(5.0, 0.6)))) == {
        "control_narrow_matching_error_cut"
    }


def test_narrow_control_value_and_boundary():
    v = mode_connectivity.signature(make_result(narrow=(20.0, 1.0), narrow_matched=(10.0, 0.6)))
    c = next(c for c in v.checks if c.name == "control_narrow_matching_error_cut")
    assert c.value == pytest.approx(0.5) and c.passed  # exactly half removed: the threshold is inclusive
    n = mode_connectivity.numbers(make_result(narrow=(20.0, 1.0), narrow_matched=(10.5, 0.6)).data)
    assert n["control_narrow_matching_error_cut"] == pytest.approx(0.475)
    assert n["narrow_loss_cut"] == pytest.approx(0.4) and n["narrow_min_train_acc"] == 0.96
    # a 1.9-pt narrow barrier: undefined, the check fails and the summary says why
    v = mode_connectivity.signature(make_result(narrow=(1.9, 1.0), narrow_matched=(1.8, 0.6)))
    c = next(c for c in v.checks if c.name == "control_narrow_matching_error_cut")
    assert c.value is None and not c.passed and "cut is undefined" in v.summary


def test_random_permutation_cuts_are_reported_not_checked():
    # a random permutation that "cuts" the barrier is a pipeline bug, but it is at chance by construction in a
    # working pipeline, so it no longer counts as a control: reported in numbers and the summary only
    r = make_result(random=(20.0, 1.0))
    n = mode_connectivity.numbers(r.data)
    assert n["random_permutation_error_cut"] == pytest.approx(1 - 20.5 / 55.0)
    v = mode_connectivity.signature(r)
    assert v.passed and "reported cuts: loss" in v.summary


def test_result_stored_before_the_narrow_arm_fails_its_control():
    r = make_result()
    for k in [k for k in r.data if k.startswith("narrow")]:
        del r.data[k]
    v = mode_connectivity.signature(r)
    assert failed(v) == {"control_narrow_matching_error_cut"}


def test_narrow_width_must_be_below_width():
    with pytest.raises(ConfigError, match="narrow_width"):
        build_config(mode_connectivity.Config, mode_connectivity.PRESETS, "quick", {"narrow_width": 256})


def test_permute_hidden_is_exact_and_keeps_the_function():
    torch.manual_seed(0)
    m = MLP(5, 3, 6, 2)
    p1, p2 = torch.randperm(6), torch.randperm(6)
    q = mode_connectivity.permute_hidden(m, [p1, p2])
    assert torch.equal(q.fc1.weight, m.fc1.weight[p1]) and torch.equal(q.fc1.bias, m.fc1.bias[p1])
    assert torch.equal(q.fc2.weight, m.fc2.weight[p2][:, p1]) and torch.equal(q.fc2.bias, m.fc2.bias[p2])
    assert torch.equal(q.out.weight, m.out.weight[:, p2]) and torch.equal(q.out.bias, m.out.bias)
    assert not torch.equal(q.fc1.weight, m.fc1.weight)  # the draw is not the identity
    x = torch.randn(8, 5)
    torch.testing.assert_close(q(x), m(x))
    # the inverse permutation restores the original weights exactly
    back = mode_connectivity.permute_hidden(q, [torch.argsort(p1), torch.argsort(p2)])
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values(), strict=True))
    with pytest.raises(PhenomlabError):
        mode_connectivity.permute_hidden(m, [p1])


@pytest.mark.parametrize("forks", [(0, 50), (10, 50, 200), (0, 200, 50), (0, 50, 50, 200)])
def test_bad_fork_steps(forks):
    with pytest.raises(ConfigError):
        build_config(mode_connectivity.Config, mode_connectivity.PRESETS, "quick", {"fork_steps": forks})


def test_smoke_run_end_to_end(smoke):
    _, r = smoke("mode-connectivity")
    assert {c.name for c in r.verdict.checks} == CHECKS
    d = r.data
    assert len(d["instability_pts"]) == len(d["fork_steps"]) == len(d["fork_err_curves"])
    assert all(v >= 0 for v in d["instability_pts"])
    assert len(d["random_err_curves"]) == r.config["random_permutations"]
    assert len(d["narrow_err_curve"]) == len(d["narrow_matched_err_curve"]) == r.config["n_points"]
    assert len(d["narrow_train_acc"]) == 2


def test_no_loss_barrier_to_cut_is_missing_not_a_pass():
    # independent runs already on a straight test-loss path: the cut is undefined, and every check on it fails
    v = mode_connectivity.signature(make_result(independent=(55.0, 0.0), random=(55.0, 0.0)))
    c = next(c for c in v.checks if c.name == "matching_loss_barrier_cut")
    assert c.value is None and not c.passed
    assert mode_connectivity.numbers(make_result(independent=(55.0, 0.0)).data)["random_permutation_loss_cut"] is None
    assert not v.passed


def test_weight_matching_that_changes_nothing_fails_the_matching_checks_only():
    # "matching" returns B as it is: the barrier stays, so both matching cuts fail; the narrow control passes (a
    # matching that does nothing cuts nothing at width 16 either)
    v = mode_connectivity.signature(make_result(matched=(55.0, 2.0)))
    assert failed(v) == {"matching_loss_barrier_cut", "matching_error_barrier_cut"}
