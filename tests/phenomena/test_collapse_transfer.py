import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import collapse_transfer as ct

SMALL = ct.PRESETS["smoke"]
COUNTS = [5, 10, 20, 40]
RAW = 0.2

CHECKS = {
    "spearman(K, cdnv_new)",
    "spearman(cdnv_new, fewshot_error)",
    "fewshot_error(K=40)/input",
    "mnist1d_fewshot_error/input",
    "control_linear_spearman(cdnv_new, fewshot_error)",
    "control_linear_fewshot_error(K=40)/input",
    "control_mnist1d_linear_fewshot_error/input",
    "control_untrained_fewshot_error/input",
    "control_mnist1d_untrained_fewshot_error/input",
}


def arm(cdnvs, errors):
    """Per K the three inits' new-class CDNV and 5-shot error (a small spread around the given means)."""
    return {
        "cdnv_new": [[c * 0.98, c, c * 1.02] for c in cdnvs],
        "fewshot_error": [[e - 0.002, e, e + 0.002] for e in errors],
        "train_acc": [[1.0] * 3 for _ in cdnvs],
        "test_acc": [[0.9] * 3 for _ in cdnvs],
    }


def present(**over):
    """Collapse-transfer present: the trained encoder collapses more with K and transfers; the linear one neither."""
    d = {
        "source_counts": COUNTS,
        "inits": 3,
        "fewshot_error_input": RAW,
        "cdnv_new_input": 3.3,
        "chance_error": 0.8,
        "encoder": arm([2.0, 1.2, 0.8, 0.6], [0.25, 0.15, 0.09, 0.06]),
        # the linear encoder: CDNV falls but few-shot error stays near the raw input's, unordered
        "linear": arm([2.0, 1.9, 1.8, 1.7], [0.19, 0.2, 0.185, 0.195]),
        # the encoder before training: translation-invariant random features, some way below the raw input
        "untrained": {"cdnv_new": [2.6, 2.7, 2.5], "fewshot_error": [0.16, 0.17, 0.155]},
        "mnist1d": {
            "fewshot_error_input": 0.68,
            "cdnv_new_input": 16.0,
            "encoder": {"cdnv_new": [2.4, 2.5, 2.3], "fewshot_error": [0.4, 0.41, 0.39]},
            "linear": {"cdnv_new": [2.5, 2.6, 2.5], "fewshot_error": [0.56, 0.57, 0.56]},
            "untrained": {"cdnv_new": [3.0, 3.1, 2.9], "fewshot_error": [0.52, 0.53, 0.51]},
        },
    }
    d.update(over)
    return Result(ct.ID, build_config(ct.Config, ct.PRESETS, "quick").to_dict(), 0, d)


def checks(v):
    return {c.name: c.passed for c in v.checks}


def test_present_passes_every_check():
    v = ct.signature(present())
    assert v.passed, str(v)
    assert set(checks(v)) == CHECKS


def test_no_collapse_gain_with_more_source_classes_fails():
    # new-class CDNV does not fall with K (few-shot error still tracks it across runs)
    v = ct.signature(present(encoder=arm([0.8, 0.6, 2.0, 1.2], [0.09, 0.06, 0.25, 0.15])))
    c = checks(v)
    assert not c["spearman(K, cdnv_new)"] and c["spearman(cdnv_new, fewshot_error)"]


def test_fewshot_error_unrelated_to_cdnv_fails_link():
    v = ct.signature(present(encoder=arm([2.0, 1.2, 0.8, 0.6], [0.06, 0.25, 0.09, 0.15])))
    c = checks(v)
    assert not c["spearman(cdnv_new, fewshot_error)"] and c["spearman(K, cdnv_new)"]


def test_small_gain_over_raw_input_fails():
    # ordered, but at K=40 the error is 0.8 x the raw input's
    v = ct.signature(present(encoder=arm([2.0, 1.2, 0.8, 0.6], [0.3, 0.22, 0.18, 0.16])))
    c = checks(v)
    assert not c["fewshot_error(K=40)/input"] and c["spearman(cdnv_new, fewshot_error)"]


def test_no_gain_on_mnist1d_fails():
    r = present()
    r.data["mnist1d"]["encoder"]["fewshot_error"] = [0.6, 0.61, 0.6]
    c = checks(ct.signature(r))
    assert not c["mnist1d_fewshot_error/input"] and c["fewshot_error(K=40)/input"]


def test_linear_control_showing_the_link_fails():
    # the linear encoder's error tracks its CDNV across runs (but stays above the gain bar)
    v = ct.signature(present(linear=arm([2.0, 1.9, 1.8, 1.7], [0.2, 0.19, 0.18, 0.17])))
    c = checks(v)
    assert not c["control_linear_spearman(cdnv_new, fewshot_error)"]
    assert c["control_linear_fewshot_error(K=40)/input"]
    assert sum(not ok for ok in c.values()) == 1


def test_linear_control_showing_the_gain_fails():
    # the measured Gaussian-mixture pattern: a linear projection onto the signal subspace transfers too
    v = ct.signature(present(linear=arm([2.0, 1.9, 1.8, 1.7], [0.03, 0.05, 0.04, 0.035])))
    c = checks(v)
    assert not c["control_linear_fewshot_error(K=40)/input"]
    assert c["control_linear_spearman(cdnv_new, fewshot_error)"]
    assert sum(not ok for ok in c.values()) == 1


def test_linear_control_gain_on_mnist1d_fails():
    r = present()
    r.data["mnist1d"]["linear"]["fewshot_error"] = [0.4, 0.42, 0.41]
    c = checks(ct.signature(r))
    assert not c["control_mnist1d_linear_fewshot_error/input"]
    assert sum(not ok for ok in c.values()) == 1


def test_untrained_encoder_reaching_the_gain_fails():
    # the architecture alone (random features) would explain the gain: not transfer from training
    v = ct.signature(present(untrained={"cdnv_new": [1.0] * 3, "fewshot_error": [0.1, 0.11, 0.1]}))
    c = checks(v)
    assert not c["control_untrained_fewshot_error/input"]
    assert sum(not ok for ok in c.values()) == 1


def test_untrained_encoder_reaching_the_gain_on_mnist1d_fails():
    r = present()
    r.data["mnist1d"]["untrained"]["fewshot_error"] = [0.45, 0.46, 0.45]
    c = checks(ct.signature(r))
    assert not c["control_mnist1d_untrained_fewshot_error/input"]
    assert sum(not ok for ok in c.values()) == 1


def test_runs_stored_without_the_untrained_arm_have_no_such_checks():
    r = present()
    del r.data["untrained"], r.data["mnist1d"]["untrained"]
    names = set(checks(ct.signature(r)))
    assert names == CHECKS - {"control_untrained_fewshot_error/input", "control_mnist1d_untrained_fewshot_error/input"}


def test_without_mnist1d_its_checks_are_absent():
    v = ct.signature(present(mnist1d=None))
    assert v.passed and set(checks(v)) == CHECKS - {
        "mnist1d_fewshot_error/input",
        "control_mnist1d_linear_fewshot_error/input",
        "control_mnist1d_untrained_fewshot_error/input",
    }


@pytest.mark.parametrize("dataset", ct.DATASETS)
def test_data_structure(dataset):
    cfg = build_config(ct.Config, ct.PRESETS, "quick", {**SMALL, "dataset": dataset})
    ds = ct.make_data(cfg, seed=3)
    assert ds.input_dim == (40 if dataset == "templates" else cfg.signal_dim + cfg.nuisance_dim)
    assert ds.n_classes == cfg.n_classes and ds.n_train == cfg.n_classes * cfg.n_train_per_class
    assert ds.n_test == cfg.n_classes * cfg.n_test_per_class
    again = ct.make_data(cfg, seed=3)
    assert (ds.x_train == again.x_train).all()


def test_runs_stored_before_the_encoder_key_get_the_same_verdict():
    r = present()
    old = dict(r.data)
    old["mlp"] = old.pop("encoder")
    old["mnist1d"] = dict(old["mnist1d"])
    old["mnist1d"]["mlp"] = old["mnist1d"].pop("encoder")
    before = ct.signature(Result(ct.ID, {**r.config, "encoder": "mlp"}, 0, old))
    assert checks(before) == checks(ct.signature(r))
    assert [c.value for c in before.checks] == [c.value for c in ct.signature(r).checks]


def test_reduced_run_end_to_end(smoke):
    store, r = smoke(ct.ID)
    d = r.data
    assert d["source_counts"] == list(SMALL["source_counts"])
    for enc in ("encoder", "linear"):
        assert len(d[enc]["cdnv_new"]) == len(SMALL["source_counts"])
        assert all(len(row) == SMALL["inits"] and min(row) >= 0 for row in d[enc]["cdnv_new"])
        assert all(0.0 <= e <= 1.0 for row in d[enc]["fewshot_error"] for e in row)
    assert 0.0 <= d["fewshot_error_input"] <= 1.0 and d["mnist1d"] is not None
    assert {c.name for c in r.verdict.checks} == {n.replace("K=40", "K=8") for n in CHECKS}
    assert len(r.figures) == 2 and all(p.endswith(".png") for p in r.figures)
    assert all((store.root / "runs" / r.run_id / p.rsplit("/", 1)[-1]).exists() for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"source_classes": 60},
        {"source_counts": (5, 10, 50)},
        {"source_counts": (10, 40)},
        {"inits": 0},
        {"ways": 25},
        {"lr": -0.1},
        {"optimizer": "lbfgs"},
        {"eval_every": 5000},
        {"shots": 0},
        {"nuisance_std": -1.0},
        {"n_classes": 2},
        {"mnist1d_train": -1},
        {"dataset": "cifar"},
        {"encoder": "resnet"},
        {"channels": (32, 0)},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ct.Config, ct.PRESETS, "quick", over)
