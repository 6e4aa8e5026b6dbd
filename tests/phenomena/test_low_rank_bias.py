import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import low_rank_bias as lrb
from phenomlab.phenomena._stats import spearman

# a reduced run: tiny MLP on a Gaussian mixture (cheaper to make than mnist1d), one epoch per run;
# it checks the machinery, not the phenomenon
SMALL = lrb.PRESETS["smoke"]


def _run(batch, wd, rel, collapsed=False, depth=3, width=64):
    ranks = [round(rel * width)] * depth
    return {
        "batch_size": batch,
        "wd": wd,
        "n_steps": 100,
        "lr_wd_steps": 1.0,
        "ranks": ranks,
        "full": [width] * depth,
        "mean_relative_rank": rel,
        "sv": [[1.0] * width] * depth,
        "train_acc": 0.9,
        "test_acc": 0.8,
        "norm_ratio": [0.001 if collapsed else 1.0] * depth,
        "collapsed": collapsed,
        "steps": [0, 100],
        "rank_trajectory": [1.0, rel],
    }


def make_result(batch_rels, wd_rels, batches=(8, 16, 32, 64, 128, 256, 512), wds=(0.0, 1e-3, 3e-3, 1e-2), collapsed=()):
    cfg = build_config(lrb.Config, lrb.PRESETS)
    data = {
        "layers": ["fc1", "fc2", "fc3"],
        "batch_runs": [_run(b, 0.01, r, (b, 0.01) in collapsed) for b, r in zip(batches, batch_rels, strict=True)],
        "wd_runs": [_run(32, w, r, (32, w) in collapsed) for w, r in zip(wds, wd_rels, strict=True)],
        "lr": 0.1,
        "wd": 0.01,
        "wd_batch_size": 32,
        "rank_tol": 1e-3,
        "protocol": "epochs",
    }
    return Result(lrb.ID, cfg.to_dict(), 0, data)


def names(v):
    return {c.name: c for c in v.checks}


def test_signature_on_constructed_data():
    ok = make_result([0.3, 0.35, 0.5, 0.6, 0.8, 0.95, 0.95], [1.0, 0.98, 0.8, 0.5])
    v = lrb.signature(ok)
    assert v.passed, str(v)
    assert names(v)["spearman(1/batch_size, rank)"].value == pytest.approx(-0.991, abs=1e-3)
    # rank that grows as the batch shrinks is the opposite bias
    v = lrb.signature(make_result([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [1.0, 0.98, 0.8, 0.5]))
    assert not v.passed and not names(v)["spearman(1/batch_size, rank)"].passed
    # a peaked (non-monotone) dependence on the batch size fails too
    assert not lrb.signature(make_result([0.4, 0.6, 0.8, 0.9, 0.7, 0.5, 0.45], [1.0, 0.98, 0.8, 0.5])).passed
    # wd=0 must stay near full rank
    v = lrb.signature(make_result([0.3, 0.35, 0.5, 0.6, 0.8, 0.95, 0.95], [0.85, 0.8, 0.7, 0.5]))
    assert not v.passed and not names(v)["wd=0 min relative rank"].passed
    # a flat rank (no bias) has no defined correlation and fails
    v = lrb.signature(make_result([0.5] * 7, [1.0, 0.98, 0.8, 0.5]))
    assert names(v)["spearman(1/batch_size, rank)"].value is None and not v.passed


def test_collapsed_runs_are_left_out():
    # a run whose weights decayed to zero reads "full rank" numerically: it is reported, not correlated
    r = make_result([0.3, 0.35, 0.5, 0.6, 0.8, 0.95, 0.95], [1.0, 0.98, 0.8, 1.0], collapsed={(32, 1e-2)})
    v = lrb.signature(r)
    assert v.passed and "collapsed runs left out: B=32, wd=0.01" in v.summary
    # too few surviving runs: the correlation is not measured
    r = make_result(
        [0.3, 0.35, 0.5, 0.6, 0.8, 0.95, 0.95], [1.0, 0.98, 0.8, 0.5], collapsed={(32, 1e-3), (32, 3e-3), (32, 1e-2)}
    )
    assert names(lrb.signature(r))["spearman(weight_decay, rank)"].value is None


def test_spearman_helper():
    assert spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1, 2, 3, 4], [1, 1, 2, 3]) == pytest.approx(0.9487, abs=1e-4)


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(lrb.ID)
    d = r.data
    assert [x["batch_size"] for x in d["batch_runs"]] == [32, 64, 128]
    assert [x["wd"] for x in d["wd_runs"]] == [0.0, 1e-3, 1e-2]
    run = d["batch_runs"][0]
    assert run["n_steps"] == 16  # ceil(1 epoch * 510 samples / 32): the paper's fixed-epoch protocol
    assert len(run["ranks"]) == 2 and all(0 < k <= f for k, f in zip(run["ranks"], run["full"], strict=True))
    assert run["full"] == [16, 16]
    # the (B=64, wd=1e-2) run is shared by both sweeps
    assert d["wd_runs"][2] == d["batch_runs"][1]
    assert {c.name for c in r.verdict.checks} == {
        "spearman(1/batch_size, rank)",
        "spearman(weight_decay, rank)",
        "wd=0 min relative rank",
    }
    assert r.figures and all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"batch_sizes": (8, 8, 16)},
        {"weight_decay_values": (1e-3, 1e-2, 1e-1)},
        {"batch_sizes": (8, 16, 8192)},
        {"protocol": "time"},
        {"lr": 0.0},
        {"rank_tol": 1.5},
        {"depth": 0},
        {"weight_decay": 0.0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(lrb.Config, lrb.PRESETS, "quick", over)
