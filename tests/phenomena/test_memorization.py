import math

import pytest
import torch

from phenomlab.data import digits
from phenomlab.errors import ConfigError
from phenomlab.models import MLP
from phenomlab.phenomena import Result, build_config, memorization

CAP = 8000
GRID = list(range(0, CAP + 1, 50))
LEVELS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def rep(t_fit, test=0.9):
    """One noise-level run: fits at ``t_fit`` (None: never, stuck at 0.9 train accuracy)."""
    if t_fit is None:
        return {"steps": [0, CAP], "train_acc": [0.1, 0.9], "test_acc": [0.1, test], "steps_to_fit": None}
    return {"steps": [0, t_fit], "train_acc": [0.1, 1.0], "test_acc": [0.1, test], "steps_to_fit": t_fit}


def split(t_clean, t_noisy, base=None):
    """Subset curves: the clean (A) / noisy (B) subset jumps from 0.05 to 0.95 at ``t_clean`` / ``t_noisy``."""
    out = dict(base or {"train_acc": [0.5] * len(GRID), "test_acc": [0.5] * len(GRID), "steps_to_fit": None})
    out["steps"] = GRID
    out["clean_acc"] = [0.95 if s >= t_clean else 0.05 for s in GRID]
    out["noisy_acc"] = [0.95 if t_noisy is not None and s >= t_noisy else 0.05 for s in GRID]
    if base is not None:
        out["train_acc"] = [1.0 if s >= base["steps_to_fit"] else 0.5 for s in GRID]
        out["test_acc"] = [base["test_acc"][-1]] * len(GRID)
    return out


def make_result(
    fit=(300, 2000, 2500, 3000, 3300, 3600),
    random_test=0.1,
    random_inputs=1500,
    arpit=(100, 1000),
    drop_noisy=(150, 4000),
    control=(100, 100),
    drop_clean=(150, 150),
    consistent=(100, 100),
):
    cfg = build_config(memorization.Config, memorization.PRESETS)
    runs = {}
    for p, t in zip(LEVELS, fit, strict=True):
        test = random_test if p == 1.0 else 0.9 - 0.6 * p
        reps = [rep(t, test) for _ in range(3)]
        if p == 0.4:
            reps[0] = split(*arpit, base=reps[0])
        if p == 0.0:
            reps[0] = split(*control, base=reps[0])
        runs[str(p)] = reps
    data = {
        "noise_levels": LEVELS,
        "runs": runs,
        "random_inputs": rep(random_inputs, 0.1),
        "dropout_noisy": split(*drop_noisy),
        "dropout_clean": split(*drop_clean),
        "consistent_relabel": split(*consistent, base=rep(300)),
        "relabel_classes": [1, 4, 6, 9],
        "relabel_map": [0, 4, 2, 3, 9, 5, 1, 7, 8, 6],
        "n_relabelled": 540,
        "n_train": 1348,
        "n_noisy": 485,
        "n_test": 449,
        "n_classes": 10,
        "max_steps": CAP,
    }
    return Result("memorization", cfg.to_dict(), 0, data)


def failed(result):
    v = memorization.signature(result)
    return [c.name for c in v.checks if not c.passed]


def test_present_passes_every_check():
    v = memorization.signature(make_result())
    assert v.passed, str(v)
    assert any(c.name.startswith("control") for c in v.checks)


@pytest.mark.parametrize(
    "over, name",
    [
        # the random-input run never fits
        ({"random_inputs": None}, "all_fit"),
        # steps-to-fit not monotone in the noise fraction: Spearman = 1 - 6*10/210 = 0.714
        ({"fit": (300, 3000, 2000, 3300, 2500, 3600)}, "spearman_noise_steps"),
        # monotone but random labels fit only 1.83x slower than clean ones
        ({"fit": (300, 350, 400, 450, 500, 550)}, "fit_time_ratio"),
        # the net generalises from random labels (test acc 0.2, far from chance 0.1)
        ({"random_test": 0.2}, "random_label_test_gap"),
        # clean and noisy examples learned together
        ({"arpit": (100, 100)}, "noisy_acc_when_clean_fit"),
        # dropout slows the noisy subset (1200/1000 = 1.2x) less than the clean one (1.5x)
        ({"drop_noisy": (150, 1200)}, "dropout_slowdown_ratio"),
        # control: consistently relabelled classes lag the rest as much as noisy labels would (the lag check
        # would then flag any label change, not memorisation of noise)
        ({"consistent": (100, 1000)}, "control_consistent_relabel_acc_when_fit"),
        # ... or are never learned at all (stuck at 0.05): fails too
        ({"consistent": (100, None)}, "control_consistent_relabel_acc_when_fit"),
    ],
)
def test_each_check_fails_on_its_construction(over, name):
    assert failed(make_result(**over)) == [name]


def test_random_split_controls_are_reported_not_checked():
    # the random-split numbers hold by construction on clean labels (exchangeable parts): reported only
    r = make_result(control=(100, 1000), drop_clean=(150, 400))
    v = memorization.signature(r)
    assert v.passed and not any("split" in c.name for c in v.checks)
    assert "B acc when A fit 0.05" in v.summary and "= 2.67" in v.summary


def test_consistent_relabel_control_reports_the_noisy_arm_next_to_it():
    v = memorization.signature(make_result())
    (c,) = [c for c in v.checks if c.name == "control_consistent_relabel_acc_when_fit"]
    assert c.value == pytest.approx(0.95) and "noisy arm: 0.05" in c.description


def test_consistent_relabel_is_one_derangement_of_a_class_set_of_matched_size():
    ds = digits(seed=0)
    for seed in range(5):
        out, mask, cmap = memorization.consistent_relabel(ds, 0.36, seed=seed)
        classes = out.meta["relabelled_classes"]
        assert 2 <= len(classes) < ds.n_classes
        # a derangement of the chosen classes, identity elsewhere: a bijection on labels
        assert sorted(cmap) == list(range(ds.n_classes))
        assert all((cmap[c] != c) == (c in classes) for c in range(ds.n_classes))
        assert all(cmap[c] in classes for c in classes)
        # every point of those classes is relabelled, and only those; train and test the same way
        assert torch.equal(mask, torch.isin(ds.y_train, torch.tensor(classes)))
        assert torch.equal(out.y_train != ds.y_train, mask)
        assert torch.equal(out.y_train, torch.tensor(cmap)[ds.y_train])
        assert torch.equal(out.y_test, torch.tensor(cmap)[ds.y_test])
        assert torch.equal(out.x_train, ds.x_train)
        # the fraction is the closest any class set of this random order can give: within half a class share
        share = torch.bincount(ds.y_train, minlength=ds.n_classes).float() / ds.n_train
        assert abs(float(mask.float().mean()) - 0.36) <= float(share.max()) / 2 + 1e-6
    # another seed draws another class set or derangement
    maps = {tuple(memorization.consistent_relabel(ds, 0.36, seed=s)[2]) for s in range(5)}
    assert len(maps) > 1


def test_consistent_relabel_rejects_bad_input():
    ds = digits(seed=0)
    with pytest.raises(ConfigError):
        memorization.consistent_relabel(ds, 1.0, seed=0)
    with pytest.raises(ConfigError):
        memorization.consistent_relabel(ds, 0.0, seed=0)


def test_slowdown_counts_a_never_fitting_dropout_run_at_the_cap():
    base = split(100, 1000)
    ratio, sn, sc = memorization.slowdown_ratio(base, split(200, None), CAP)
    assert (sn, sc) == (CAP / 1000, 2.0) and ratio == pytest.approx(CAP / 1000 / 2.0)
    # no reference time (the run without dropout never fitted the subset): undefined
    assert memorization.slowdown_ratio(split(100, None), split(200, None), CAP)[0] is None


def test_mean_steps_to_fit_and_helpers():
    assert memorization.mean_steps_to_fit([rep(100), rep(300)]) == 200
    assert memorization.mean_steps_to_fit([rep(100), rep(None)]) is None
    assert memorization.first_step([0, 10, 20], [0.1, 0.95, 0.99], 0.9) == 10
    assert memorization.first_step([0, 10], [0.1, 0.2], 0.9) is None
    assert (
        memorization.acc_at([0, 10, 20], [0.1, 0.5, 0.9], 10) == 0.5 and memorization.acc_at([0], [0.1], None) is None
    )


def test_gaussian_inputs_match_moments_and_keep_labels():
    ds = digits(seed=0)
    g = memorization.gaussian_inputs(ds, seed=3)
    assert torch.equal(g.y_train, ds.y_train) and g.x_train.shape == ds.x_train.shape
    assert torch.allclose(g.x_train.mean(0), ds.x_train.mean(0), atol=0.1)
    assert torch.allclose(g.x_train.std(0), ds.x_train.std(0), atol=0.1)
    assert not torch.allclose(g.x_train, ds.x_train)


def test_dropout_mlp_is_the_mlp_in_eval_mode():
    torch.manual_seed(0)
    ref = MLP(8, 3, width=16, depth=2)
    torch.manual_seed(0)
    net = memorization.DropoutMLP(8, 3, width=16, depth=2, p=0.5).eval()
    x = torch.randn(5, 8)
    assert torch.allclose(ref(x), net(x))
    net.train()
    torch.manual_seed(1)
    # in training mode about half the hidden units are dropped, so the output changes
    assert not torch.allclose(ref(x), net(x))


@pytest.mark.parametrize(
    "over",
    [
        {"noise_levels": (0.0, 0.5)},
        {"noise_levels": (0.2, 0.5, 1.0)},
        {"noise_levels": (0.0, 0.5, 1.5)},
        {"arpit_noise": 0.3},
        {"dropout": 1.0},
        {"replicates": 0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(memorization.Config, memorization.PRESETS, "quick", over)


def test_smoke_run_end_to_end(smoke):
    store, r = smoke("memorization")
    names = {c.name for c in r.verdict.checks}
    assert "control_consistent_relabel_acc_when_fit" in names and not any("split" in n for n in names)
    assert 0 < r.data["n_relabelled"] < r.data["n_train"]
    assert len(r.data["runs"]["0.0"]) == r.config["replicates"]
    assert all(math.isfinite(a) for a in r.data["runs"]["1.0"][0]["train_acc"])
    assert all(p.endswith(".png") for p in r.figures)


def test_a_random_label_run_that_never_fits_fails_all_fit_and_the_fit_time_checks():
    # one replicate of p = 1 stalls at 0.9 train accuracy: Zhang's headline (random labels are fitted) is absent
    r = make_result()
    r.data["runs"]["1.0"][2] = rep(None, 0.1)
    names = failed(r)
    assert "all_fit" in names and "spearman_noise_steps" in names and "fit_time_ratio" in names
    assert not any(n.startswith("control") for n in names)


def test_random_label_test_gap_bound_is_three_binomial_std_on_the_test_set():
    # 3 * sqrt(0.1 * 0.9 / 449) = 0.0425 > 0.03: a gap of 0.04 passes, one of 0.045 fails
    assert failed(make_result(random_test=0.14)) == []
    assert failed(make_result(random_test=0.145)) == ["random_label_test_gap"]
    assert failed(make_result(random_test=0.055)) == ["random_label_test_gap"]


def test_uniform_dropout_slowdown_is_not_the_effect():
    # dropout slows every example 3x (the noisy subset then hits the cap, counted at 8000 steps): a capacity or
    # training-length effect, not a selective one; slowdown(noisy) = 8000 / 3000 = 2.67 < slowdown(clean) = 3
    assert failed(make_result(arpit=(100, 3000), drop_noisy=(300, None))) == ["dropout_slowdown_ratio"]


def test_clean_subset_never_reaching_the_mark_leaves_the_arpit_checks_undecided():
    # the clean subset never reaches 0.9 in the run without dropout: no lag, no slowdown can be read (n/a fails)
    names = failed(make_result(arpit=(CAP + 100, 1000)))
    assert names == ["noisy_acc_when_clean_fit", "dropout_slowdown_ratio"]
