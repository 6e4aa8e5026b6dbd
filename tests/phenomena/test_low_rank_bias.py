import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.models import MLP
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import low_rank_bias as lrb

BATCHES = (8, 16, 32, 64, 128, 256, 512)
WDS = (2.5e-3, 3.5e-3, 5e-3, 7e-3, 1e-2)
# the phenomenon present: rank rises with B (ratio 0.5/0.8 = 0.625), falls with wd, wd=0 keeps its init rank
GOOD_B = (0.5, 0.55, 0.62, 0.7, 0.75, 0.78, 0.8)
GOOD_W = (0.8, 0.72, 0.62, 0.55, 0.5)


def _run(arms, b, wd, rank, lr=0.4, steps=10000, init_rank=1.0, collapsed=False, depth=3):
    inits = [
        {
            "rank": rank,
            "stable_rank": 10 * rank,
            "init_rank": init_rank,
            "layer_ranks": [rank] * depth,
            "train_acc": 0.8,
            "norm_ratio": [0.001 if collapsed else 1.0] * depth,
            "collapsed": collapsed,
            "diverged": False,
            "trajectory": [init_rank, rank],
        }
    ] * 2
    return {
        "arms": list(arms),
        "batch_size": b,
        "steps": steps,
        "lr": lr,
        "wd": wd,
        "lr_wd_steps": lr * wd * steps,
        "rank": None if collapsed else rank,
        "stable_rank": None if collapsed else 10 * rank,
        "init_rank": init_rank,
        "train_acc": 0.8,
        "collapsed": collapsed,
        "diverged": False,
        "eval_steps": [0, steps],
        "inits": inits,
    }


def make_result(b_ranks=GOOD_B, w_ranks=GOOD_W, ctrl=(0.99, 1.0), steps=10000, collapsed=(), scaled=(0.6, 0.6)):
    cfg = build_config(lrb.Config, lrb.PRESETS)
    runs = []
    for b, r in zip(BATCHES, b_ranks, strict=True):
        runs.append(_run(["batch"], b, 5e-3, r, steps=steps, collapsed=("batch", b) in collapsed))
    for w, r in zip(WDS, w_ranks, strict=True):
        runs.append(_run(["wd"], 32, w, r, steps=steps, collapsed=("wd", w) in collapsed))
    for b, r in zip((8, 32), ctrl, strict=True):
        runs.append(_run(["control_wd0"], b, 0.0, r))
    for b, r in zip((8, 64), scaled, strict=True):
        runs.append(_run(["lr_scaled"], b, 5e-3, r, lr=0.4 * b / 64, steps=10000 * 64 // b))
    data = {
        "layers": ["fc1", "fc2", "fc3"],
        "runs": runs,
        "lr": 0.4,
        "wd": 5e-3,
        "steps": steps,
        "wd_batch_size": 32,
        "rank_tol": 1e-3,
        "n_inits": 2,
    }
    return Result(lrb.ID, cfg.to_dict(), 0, data)


def names(v):
    return {c.name: c for c in v.checks}


CHECKS = {
    "spearman(batch_size, rank)",
    "rank_ratio(min_batch/max_batch)",
    "spearman(weight_decay, rank)",
    "init_forgotten(min lr*wd*T)",
    "control_wd0_rank_ratio",
}


def fails_only(v, name):
    c = names(v)
    assert not v.passed and not c[name].passed, str(v)
    assert all(c[n].passed for n in CHECKS - {name}), str(v)


def test_phenomenon_present_passes_every_check():
    v = lrb.signature(make_result())
    assert v.passed, str(v)
    assert set(names(v)) == CHECKS
    c = names(v)
    assert c["spearman(batch_size, rank)"].value == pytest.approx(1.0)
    assert c["rank_ratio(min_batch/max_batch)"].value == pytest.approx(0.625)
    assert c["spearman(weight_decay, rank)"].value == pytest.approx(-1.0)
    assert c["init_forgotten(min lr*wd*T)"].value == pytest.approx(10.0)
    assert c["control_wd0_rank_ratio"].value == pytest.approx(0.99)
    assert "lr/B const" in v.summary


def test_batch_spearman_fails_when_rank_does_not_rise_with_batch():
    # low rank at B=8 but a rank that peaks at B=32 and falls for large batches: ratio passes, Spearman fails
    v = lrb.signature(make_result(b_ranks=(0.5, 0.7, 0.9, 0.85, 0.8, 0.75, 0.7)))
    fails_only(v, "spearman(batch_size, rank)")
    # the opposite bias fails both batch checks
    v = lrb.signature(make_result(b_ranks=tuple(reversed(GOOD_B))))
    assert not names(v)["spearman(batch_size, rank)"].passed and not v.passed
    # a flat rank has no defined correlation
    v = lrb.signature(make_result(b_ranks=(0.6,) * 7))
    assert names(v)["spearman(batch_size, rank)"].value is None and not v.passed


def test_rank_ratio_fails_when_the_effect_is_small():
    # monotone, but only 10% lower at B=8: the ordering alone is not a low-rank bias
    fails_only(
        lrb.signature(make_result(b_ranks=(0.72, 0.73, 0.74, 0.75, 0.76, 0.78, 0.8))), "rank_ratio(min_batch/max_batch)"
    )


def test_weight_decay_spearman_fails_when_rank_does_not_fall_with_wd():
    fails_only(lrb.signature(make_result(w_ranks=tuple(reversed(GOOD_W)))), "spearman(weight_decay, rank)")
    fails_only(lrb.signature(make_result(w_ranks=(0.6, 0.62, 0.58, 0.61, 0.6))), "spearman(weight_decay, rank)")


def test_init_forgotten_fails_when_the_initialisation_has_not_decayed():
    # 2000 steps at lr 0.4: lr * wd * T = 2 at the smallest wd; the rank might be the init's
    fails_only(lrb.signature(make_result(steps=2000)), "init_forgotten(min lr*wd*T)")


def test_control_fails_when_rank_falls_without_weight_decay():
    # the rank falls as much without weight decay: the bias is not weight decay's
    fails_only(lrb.signature(make_result(ctrl=(0.6, 0.95))), "control_wd0_rank_ratio")


def test_collapsed_runs_are_left_out():
    # a run whose weights decayed to zero has a meaningless scale-free rank: reported, not correlated
    r = make_result(w_ranks=(0.8, 0.72, 0.62, 0.55, 1.0), collapsed={("wd", 1e-2)})
    v = lrb.signature(r)
    assert v.passed and "collapsed runs left out: B=32, wd=0.01" in v.summary
    r = make_result(collapsed={("wd", 3.5e-3), ("wd", 5e-3), ("wd", 7e-3)})
    assert names(lrb.signature(r))["spearman(weight_decay, rank)"].value is None
    # a collapsed end point of the batch sweep leaves the effect size unmeasured
    v = lrb.signature(make_result(collapsed={("batch", 8)}))
    assert names(v)["rank_ratio(min_batch/max_batch)"].value is None and not v.passed


def test_diverged_control_is_reported_and_left_out():
    r = make_result()
    ctrl = lrb.arm(r.data, "control_wd0")[0]
    ctrl.update(rank=None, stable_rank=None, collapsed=True, diverged=True)
    v = lrb.signature(r)
    assert v.passed and "diverged (NaN) inits left out: B=8, wd=0" in v.summary
    # no control left: the control is not measured and fails
    for c in lrb.arm(r.data, "control_wd0"):
        c.update(rank=None, stable_rank=None, collapsed=True, diverged=True)
    v = lrb.signature(r)
    assert names(v)["control_wd0_rank_ratio"].value is None and not v.passed


def test_spectra_stats():
    # singular values 1, 1e-2, 1e-5: ||W||_F ~ 1, two above 1e-3 ||W||_F; stable rank 1 + 1e-4
    w = torch.diag(torch.tensor([1.0, 1e-2, 1e-5]))[None]
    rel, stable, fro = lrb.spectra_stats(w, 1e-3)
    assert rel.tolist() == pytest.approx([2 / 3])
    assert stable.tolist() == pytest.approx([1.0001], abs=1e-6)
    assert fro.tolist() == pytest.approx([1.00005], abs=1e-5)
    # a zero (or diverged, non-finite) matrix has rank 0
    rel, stable, _ = lrb.spectra_stats(torch.full((1, 3, 3), float("nan")), 1e-3)
    assert rel.tolist() == [0.0] and stable.tolist() == [0.0]


def test_train_group_member_is_plain_sgd_with_weight_decay():
    # a member follows torch.optim.SGD(lr, weight_decay) on a standalone MLP with the same batches
    torch.manual_seed(0)
    x, y = torch.randn(24, 5), torch.randint(0, 3, (24,))
    lrs, wds, seeds = [0.1, 0.3], [0.0, 0.05], [11, 12]
    steps, batch = 6, 8
    out = lrb.train_group(x, y, batch, steps, lrs, wds, seeds, 4, 2, 2, 1e-3, batch_seed=5)
    for m in range(2):
        torch.manual_seed(seeds[m])
        model = MLP(5, 3, 4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=lrs[m], weight_decay=wds[m])
        gen = torch.Generator().manual_seed(5)
        perm, pos = torch.randperm(24, generator=gen), 0
        for _ in range(steps):
            if pos + batch > 24:
                perm, pos = torch.randperm(24, generator=gen), 0
            idx = perm[pos : pos + batch]
            pos += batch
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        norms = [float(getattr(model, f"fc{i}").weight.detach().norm()) for i in (1, 2)]
        assert out["norm"][-1][m] == pytest.approx(norms, rel=1e-4)
    assert out["step"] == [0, 3, 6] and out["finite"] == [True, True]
    # a member pushed to NaN is flagged, the other trains on
    out = lrb.train_group(x, y, batch, steps, [0.1, 1e30], wds, seeds, 4, 2, 2, 1e-3, batch_seed=5)
    assert out["finite"] == [True, False] and out["norm"][-1][1] == [0.0, 0.0]


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(lrb.ID)
    d = r.data
    batch = lrb.arm(d, "batch")
    assert [x["batch_size"] for x in batch] == [8, 32, 128]
    assert {x["steps"] for x in batch} == {40}  # equal steps for every batch size
    assert [x["wd"] for x in lrb.arm(d, "wd")] == [2.5e-3, 5e-3, 1e-2]
    assert [(x["batch_size"], x["wd"]) for x in lrb.arm(d, "control_wd0")] == [(8, 0.0), (32, 0.0)]
    scaled = lrb.arm(d, "lr_scaled")
    # lr / B and lr * T fixed in the lr-scaled arm
    assert [(x["batch_size"], x["steps"], x["lr"]) for x in scaled] == [(16, 80, 0.2), (32, 40, 0.4)]
    # the (B=32, wd=5e-3) run is shared by the batch and weight-decay sweeps
    shared = [x for x in d["runs"] if x["batch_size"] == 32 and x["wd"] == 5e-3 and x["steps"] == 40]
    assert len(shared) == 1 and set(shared[0]["arms"]) == {"batch", "wd", "lr_scaled"}
    run = batch[0]
    assert len(run["inits"]) == 2 and 0 < run["rank"] <= 1 and run["stable_rank"] >= 1
    assert len(run["eval_steps"]) == 5
    assert {c.name for c in r.verdict.checks} == CHECKS
    assert not names(r.verdict)["init_forgotten(min lr*wd*T)"].passed  # smoke: lr wd T << 10
    assert r.figures and all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"batch_sizes": (8, 8, 16)},
        {"weight_decay_values": (1e-3, 1e-3, 1e-2)},
        {"weight_decay_values": (0.0, 1e-3, 1e-2)},
        {"batch_sizes": (8, 16, 8192)},
        {"lr_scaled_batch_sizes": (8,)},
        {"lr": 0.0},
        {"rank_tol": 1.5},
        {"depth": 0},
        {"weight_decay": 0.0},
        {"evals_per_run": 2},
        {"n_inits": 0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(lrb.Config, lrb.PRESETS, "quick", over)
