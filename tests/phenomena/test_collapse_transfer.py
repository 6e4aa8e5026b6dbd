import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import collapse_transfer as ct

# a reduced config: 12 classes, a tiny net, a few dozen steps (a few seconds on 2 cores)
SMALL = ct.PRESETS["smoke"]


def make_result(train, test, new, fewshot):
    cfg = build_config(ct.Config, ct.PRESETS)
    steps = [100 * i for i in range(len(train))]
    data = {
        "steps": steps,
        "cdnv_source_train": train,
        "cdnv_source_test": test,
        "cdnv_new": new,
        "fewshot_error": fewshot,
        "train_acc": [0.5] * len(steps),
        "test_acc": [0.5] * len(steps),
        "fewshot_error_input": 0.2,
        "chance_error": 0.8,
    }
    return Result(ct.ID, cfg.to_dict(), 0, data)


FALLING = [4.0, 2.0, 1.0, 0.6, 0.4, 0.3]


def checks(v):
    return {c.name: c.passed for c in v.checks}


def test_signature_passes_when_collapse_transfers():
    v = ct.signature(make_result(FALLING, FALLING, [5.0, 3.0, 2.0, 1.5, 1.2, 1.0], [0.4, 0.3, 0.2, 0.15, 0.12, 0.1]))
    assert v.passed, str(v)
    assert set(checks(v)) == {
        "cdnv_source_train_final/initial",
        "cdnv_source_test_final/initial",
        "cdnv_new_final/initial",
        "fewshot_error_final/random_init",
        "spearman(cdnv_new, fewshot_error)",
    }


def test_signature_fails_when_new_classes_do_not_collapse():
    # source collapses, new classes only fall to 0.8x: no transfer of collapse
    v = ct.signature(make_result(FALLING, FALLING, [5.0, 4.8, 4.5, 4.3, 4.1, 4.0], [0.4, 0.39, 0.38, 0.37, 0.36, 0.35]))
    assert not v.passed
    c = checks(v)
    assert not c["cdnv_new_final/initial"] and c["cdnv_source_train_final/initial"]


def test_signature_fails_when_fewshot_gets_worse_or_does_not_track():
    worse = ct.signature(make_result(FALLING, FALLING, FALLING, [0.1, 0.15, 0.2, 0.25, 0.3, 0.35]))
    c = checks(worse)
    assert not worse.passed and not c["fewshot_error_final/random_init"]
    assert not c["spearman(cdnv_new, fewshot_error)"]
    # few-shot error falls overall but its ordering across checkpoints is unrelated to CDNV
    scrambled = ct.signature(make_result(FALLING, FALLING, FALLING, [0.4, 0.1, 0.35, 0.12, 0.3, 0.2]))
    c = checks(scrambled)
    assert c["fewshot_error_final/random_init"] and not c["spearman(cdnv_new, fewshot_error)"]
    constant = ct.signature(make_result(FALLING, FALLING, FALLING, [0.2] * 6))
    assert not constant.passed  # an undefined rank correlation fails


def test_data_structure():
    cfg = build_config(ct.Config, ct.PRESETS, "quick", SMALL)
    ds = ct.make_data(cfg, seed=3)
    assert ds.input_dim == cfg.signal_dim + cfg.nuisance_dim
    assert ds.n_classes == cfg.n_classes and ds.n_train == cfg.n_classes * cfg.n_train_per_class
    again = ct.make_data(cfg, seed=3)
    assert (ds.x_train == again.x_train).all()


def test_reduced_run_end_to_end(smoke):
    store, r = smoke(ct.ID)
    d = r.data
    assert d["steps"] == [0, 10, 20, 30]
    for k in ("cdnv_source_train", "cdnv_source_test", "cdnv_new", "fewshot_error"):
        assert len(d[k]) == 4 and all(v >= 0 for v in d[k])
    assert 0.0 <= d["fewshot_error_input"] <= 1.0
    assert len(r.verdict.checks) == 5
    assert len(r.figures) == 2 and all(p.endswith(".png") for p in r.figures)
    assert all((store.root / "runs" / r.run_id / p.rsplit("/", 1)[-1]).exists() for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"source_classes": 60},
        {"ways": 25},
        {"lr": -0.1},
        {"optimizer": "lbfgs"},
        {"eval_every": 5000},
        {"shots": 0},
        {"nuisance_std": -1.0},
        {"n_classes": 2},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ct.Config, ct.PRESETS, "quick", over)
