import pytest
import torch

import phenomlab
from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import ssl_clustering as sc

# a reduced config: small data, a tiny encoder, a few dozen steps (a few seconds on 2 cores)
SMALL = sc.PRESETS["smoke"]
LAYERS = ["act1", "act2", "act_fc", "out"]


def run_data(semantic, random):
    return {
        "steps": [0, 1000, 2000],
        "semantic": semantic,
        "random": random,
        "invariance": [None, 0.1, 0.1],
        "variance": [None, 0.1, 0.1],
        "covariance": [None, 0.1, 0.1],
    }


def make_result(full_sem, full_rand, abl_sem=None):
    cfg = build_config(sc.Config, sc.PRESETS)
    data = {
        "layers": LAYERS,
        "chance": 0.1,
        "input_semantic": 0.28,
        "input_random": 0.1,
        "full": run_data(full_sem, full_rand),
    }
    if abl_sem is not None:
        data["no_var_cov"] = run_data(abl_sem, full_rand)
    return Result(sc.ID, cfg.to_dict(), 0, data)


INIT = [0.32, 0.33, 0.34, 0.34]
RAND = [[0.1] * 4] * 3
GOOD = [INIT, [0.33, 0.38, 0.55, 0.6], [0.33, 0.40, 0.62, 0.7]]
ABL = [INIT, [0.3, 0.22, 0.24, 0.24], [0.3, 0.22, 0.24, 0.24]]


def checks(v):
    return {c.name: c.passed for c in v.checks}


def test_signature_passes_on_semantic_clustering():
    v = sc.signature(make_result(GOOD, RAND, ABL))
    assert v.passed, str(v)
    assert set(checks(v)) == {
        "semantic_ncc_rise",
        "semantic_minus_random_ncc",
        "spearman(depth, semantic_ncc)",
        "deepest_minus_shallowest_ncc",
        "ablation_drop",
    }


def test_signature_fails_without_each_part():
    flat = [[0.25] * 4] * 3
    c = checks(sc.signature(make_result(flat, RAND, ABL)))
    assert not c["semantic_ncc_rise"] and not c["semantic_minus_random_ncc"]
    # random labels cluster as well as semantic ones: no semantic preference
    c = checks(sc.signature(make_result(GOOD, [r for r in GOOD], ABL)))
    assert c["semantic_ncc_rise"] and not c["semantic_minus_random_ncc"]
    # clustering falls with depth
    down = [INIT, [0.7, 0.62, 0.5, 0.45], [0.72, 0.65, 0.55, 0.45]]
    c = checks(sc.signature(make_result(down, RAND, ABL)))
    assert not c["spearman(depth, semantic_ncc)"] and not c["deepest_minus_shallowest_ncc"]
    # the ablation clusters just as well
    c = checks(sc.signature(make_result(GOOD, RAND, GOOD)))
    assert not c["ablation_drop"]
    v = sc.signature(make_result(GOOD, RAND, None))  # ablation not run: that check cannot pass
    assert not v.passed and not checks(v)["ablation_drop"]


def test_vicreg_loss_terms():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 8, generator=g)
    total, parts = sc.vicreg_loss(z, z)
    assert parts["invariance"] == 0.0
    assert parts["variance"] < 0.1  # unit-variance columns barely pay the hinge
    assert parts["covariance"] < 0.1
    collapsed = torch.zeros(64, 8)
    _, p = sc.vicreg_loss(collapsed, collapsed)
    assert p["variance"] == pytest.approx(1 - 1e-2, abs=1e-6)  # max(0, 1 - sqrt(0 + 1e-4))
    # perfectly correlated columns: every off-diagonal covariance is 1
    corr = torch.randn(256, 1, generator=g).repeat(1, 4)
    _, p = sc.vicreg_loss(corr, corr)
    c = corr.var(0)[0].item()
    assert p["covariance"] == pytest.approx(2 * 12 * c**2 / 4, rel=1e-4)
    total, p = sc.vicreg_loss(z, z + 1, 25.0, 0.0, 0.0)
    assert float(total) == pytest.approx(25.0 * p["invariance"]) and p["invariance"] == pytest.approx(1.0)


def test_reduced_run_end_to_end(smoke):
    _, r = smoke(sc.ID)
    d = r.data
    assert d["layers"] == ["act1", "act_fc", "out"]
    for name in ("full", "no_var_cov"):
        assert d[name]["steps"] == [0, 10, 20]
        assert all(len(row) == 3 for row in d[name]["semantic"] + d[name]["random"])
        assert all(0.0 <= a <= 1.0 for row in d[name]["semantic"] for a in row)
    assert len(r.verdict.checks) == 5
    assert len(r.figures) == 3 and all(p.endswith(".png") for p in r.figures)


def test_main_and_ablation_see_the_same_batches_and_views_and_no_labels(tmp_path, monkeypatch):
    seen = []
    original = sc.vicreg_objective

    def spy(cfg, views_seed, std_coeff, cov_coeff):
        objective = original(cfg, views_seed, std_coeff, cov_coeff)
        batches = []
        seen.append((views_seed, std_coeff, batches))

        def wrapped(model, xb, yb, step):
            assert not yb.any()  # placeholders: the semantic labels never reach the objective
            batches.append((step, xb.clone()))
            return objective(model, xb, yb, step)

        return wrapped

    monkeypatch.setattr(sc, "vicreg_objective", spy)
    r = phenomlab.run(sc.ID, out=str(tmp_path), seed=0, **SMALL)
    (seed_full, mu_full, full), (seed_abl, mu_abl, abl) = seen
    assert (mu_full, mu_abl) == (25.0, 0.0) and seed_full == seed_abl
    assert [s for s, _ in full] == list(range(20))
    assert all(s1 == s2 and torch.equal(b1, b2) for (s1, b1), (s2, b2) in zip(full, abl, strict=True))
    assert len({b.shape[0] for _, b in full}) == 2  # epoch permutations: 4 batches of 64, then 44
    # the objective's parts are logged per evaluation window; step 0 has none
    for name in ("full", "no_var_cov"):
        assert r.data[name]["invariance"][0] is None
        assert all(v is not None and v >= 0 for v in r.data[name]["invariance"][1:])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 40, generator=g)
    net = sc._network(sc.Config(**SMALL), 0)
    obj = original(sc.Config(**SMALL), 11, 25.0, 1.0)
    a, b, c = obj(net, x, None, 3), obj(net, x, None, 3), obj(net, x, None, 4)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])  # views: a pure function of (seed, step)


def test_interrupted_run_resumes_bit_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("PHENOMLAB_CHECKPOINT_SECONDS", "0")
    ref = phenomlab.run(sc.ID, out=str(tmp_path / "ref"), seed=1, **SMALL)
    original, calls = sc._ncc_table, []

    def interrupt_mid_ablation(*args):
        calls.append(1)
        if len(calls) == 6:  # full: steps 0, 10, 20; ablation: steps 0, 10, then here at its step 20
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(sc, "_ncc_table", interrupt_mid_ablation)
    with pytest.raises(RuntimeError, match="interrupted"):
        phenomlab.run(sc.ID, out=str(tmp_path / "cut"), seed=1, **SMALL)
    (ckpt,) = (tmp_path / "cut").rglob("no_var_cov.ckpt")
    assert torch.load(ckpt, weights_only=False)["step"] == 10  # the ablation resumes mid-way
    monkeypatch.setattr(sc, "_ncc_table", original)
    resumed = phenomlab.run(sc.ID, out=str(tmp_path / "cut"), seed=1, **SMALL)
    assert not resumed.cached and resumed.data == ref.data


@pytest.mark.parametrize(
    "over",
    [
        {"channels": ()},
        {"scale_low": 1.5},
        {"batch_size": 10000},
        {"std_coeff": -1.0},
        {"mask_fraction": 1.5},
        {"eval_every": 5000},
        {"lr": 0.0},
        {"channels": (0, 8)},
        {"n_train": 257, "batch_size": 256},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(sc.Config, sc.PRESETS, "quick", over)
