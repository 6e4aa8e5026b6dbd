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
    "control_random_permutation_loss_cut",
    "control_random_permutation_error_cut",
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
        # a random permutation cuts the barrier as well: the cut is not from the alignment
        ({"random": (55.0, 1.0)}, "control_random_permutation_loss_cut"),
        ({"random": (20.0, 2.0)}, "control_random_permutation_error_cut"),
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
    assert failed(mode_connectivity.signature(make_result(random=(55.0, 1.0)))) == {
        "control_random_permutation_loss_cut"
    }


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


def test_no_loss_barrier_to_cut_is_missing_not_a_pass():
    # independent runs already on a straight test-loss path: the cut is undefined, and every check on it fails
    v = mode_connectivity.signature(make_result(independent=(55.0, 0.0), random=(55.0, 0.0)))
    for name in ("matching_loss_barrier_cut", "control_random_permutation_loss_cut"):
        c = next(c for c in v.checks if c.name == name)
        assert c.value is None and not c.passed
    assert not v.passed


def test_weight_matching_that_changes_nothing_fails_the_matching_checks_only():
    # "matching" returns B as it is: the barrier stays, so both matching cuts fail; the random-permutation control
    # passes (it bounds what permuting as such cuts, it cannot detect a matching that does not work)
    v = mode_connectivity.signature(make_result(matched=(55.0, 2.0)))
    assert failed(v) == {"matching_loss_barrier_cut", "matching_error_barrier_cut"}
