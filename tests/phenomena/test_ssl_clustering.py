import pytest
import torch

import phenomlab
from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import ssl_clustering as sc

# a reduced config: small data, a tiny encoder, a few dozen steps (a few seconds on 2 cores)
SMALL = sc.PRESETS["smoke"]
LAYERS = ["act1", "act2", "act_fc", "out"]


def make_result(sem, sem_train=None, rnd_train=None, reg=None, inv=None, input_semantic=0.28):
    """A hand-built result: ``sem`` is held-out semantic NCC [checkpoint][layer] at steps 0, 1000, 2000;
    ``reg``/``inv`` the one-step NCC changes at the attribution checkpoints."""
    cfg = build_config(sc.Config, sc.PRESETS)
    reg = [0.004, 0.002, 0.003] if reg is None else reg
    inv = [-0.001, 0.001, -0.002] if inv is None else inv
    data = {
        "layers": LAYERS,
        "chance": 0.1,
        "input_semantic": input_semantic,
        "full": {
            "steps": [0, 1000, 2000],
            "semantic": sem,
            "semantic_train": sem if sem_train is None else sem_train,
            "random_train": [[0.12] * 4] * 3 if rnd_train is None else rnd_train,
            "invariance": [None, 0.1, 0.1],
            "variance": [None, 0.1, 0.1],
            "covariance": [None, 0.1, 0.1],
        },
        "attribution": {
            "steps": [500, 1000, 2000][: len(reg)],
            "regulariser": reg,
            "invariance": inv,
            "both": [r + i for r, i in zip(reg, inv, strict=True)],
        },
    }
    return Result(sc.ID, cfg.to_dict(), 0, data)


INIT = [0.32, 0.33, 0.34, 0.34]
GOOD = [INIT, [0.33, 0.38, 0.55, 0.6], [0.33, 0.40, 0.62, 0.7]]
NAMES = {
    "semantic_ncc_rise",
    "semantic_ncc_minus_raw_input",
    "spearman(depth, semantic_ncc)",
    "deepest_minus_shallowest_ncc",
    "regulariser_step_helps_more_fraction",
    "control_random_label_train_ncc_gap",
}


def checks(v):
    return {c.name: c.passed for c in v.checks}


def failing(result):
    return {name for name, ok in checks(sc.signature(result)).items() if not ok}


def test_signature_passes_on_semantic_clustering():
    v = sc.signature(make_result(GOOD))
    assert v.passed, str(v)
    assert set(checks(v)) == NAMES


def test_no_rise_fails_the_rise_check():
    flat = [[0.33, 0.40, 0.62, 0.7]] * 3  # already clustered at initialisation, no change during training
    assert failing(make_result(flat)) == {"semantic_ncc_rise"}


def test_no_better_than_raw_input_fails():
    # clustering rises during training but only to the level of the raw signals
    assert failing(make_result(GOOD, input_semantic=0.65)) == {"semantic_ncc_minus_raw_input"}


def test_clustering_falling_with_depth_fails_both_depth_checks():
    down = [INIT, [0.7, 0.62, 0.5, 0.45], [0.72, 0.65, 0.55, 0.45]]
    c = checks(sc.signature(make_result(down, input_semantic=0.2)))
    assert not c["spearman(depth, semantic_ncc)"] and not c["deepest_minus_shallowest_ncc"]
    assert c["semantic_ncc_rise"] and c["semantic_ncc_minus_raw_input"]


def test_invariance_step_helping_as_much_fails_the_attribution_check():
    # the regulariser wins at 1 of 3 checkpoints only (a tie is not a win)
    r = make_result(GOOD, reg=[0.004, 0.001, 0.0], inv=[0.001, 0.002, 0.0])
    assert failing(r) == {"regulariser_step_helps_more_fraction"}
    # 2 of 3 is enough
    assert not failing(make_result(GOOD, reg=[0.004, 0.001, 0.001], inv=[0.001, 0.002, 0.0]))
    # no attribution checkpoint (a run too short to have one): the check cannot pass
    assert failing(make_result(GOOD, reg=[], inv=[])) == {"regulariser_step_helps_more_fraction"}


def test_random_labels_clustering_as_well_on_the_training_points_fails_the_control():
    # e.g. a representation that memorises the training points: any labelling of them clusters
    memorised = [[0.3] * 4, [0.9] * 4, [0.95] * 4]
    r = make_result(GOOD, sem_train=memorised, rnd_train=[[0.1] * 4, [0.7] * 4, [0.8] * 4])
    assert failing(r) == {"control_random_label_train_ncc_gap"}


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
    full = d["full"]
    assert full["steps"] == [0, 10, 20]
    for kind in ("semantic", "semantic_train", "random_train"):
        assert all(len(row) == 3 and all(0.0 <= a <= 1.0 for a in row) for row in full[kind])
    att = d["attribution"]
    assert att["steps"] == [10, 20]  # step 0 has no Adam second moment yet
    assert all(len(att[t]) == 2 and all(-1.0 <= v <= 1.0 for v in att[t]) for t in ("regulariser", "invariance"))
    assert set(checks(r.verdict)) == NAMES
    assert len(r.figures) == 3 and all(p.endswith(".png") for p in r.figures)


def test_training_sees_no_labels_and_views_are_a_function_of_seed_and_step(tmp_path, monkeypatch):
    seen = []
    original = sc.vicreg_objective

    def spy(cfg, views_seed, std_coeff, cov_coeff):
        objective = original(cfg, views_seed, std_coeff, cov_coeff)

        def wrapped(model, xb, yb, step):
            assert not yb.any()  # placeholders: the semantic labels never reach the objective
            seen.append(step)
            return objective(model, xb, yb, step)

        return wrapped

    monkeypatch.setattr(sc, "vicreg_objective", spy)
    r = phenomlab.run(sc.ID, store=str(tmp_path), seed=0, **SMALL)
    assert seen == list(range(20))
    # the objective's parts are logged per evaluation window; step 0 has none
    assert r.data["full"]["invariance"][0] is None
    assert all(v is not None and v >= 0 for v in r.data["full"]["invariance"][1:])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 40, generator=g)
    net = sc._network(sc.Config(**SMALL), 0)
    obj = original(sc.Config(**SMALL), 11, 25.0, 1.0)
    a, b, c = obj(net, x, None, 3), obj(net, x, None, 3), obj(net, x, None, 4)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])  # views: a pure function of (seed, step)


def _trained_net(cfg, steps=3):
    from phenomlab.data import mnist1d

    ds = mnist1d(cfg.n_train, cfg.n_test, seed=0)
    net = sc._network(cfg, 0)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    obj = sc.vicreg_objective(cfg, 1, cfg.std_coeff, cfg.cov_coeff)
    for step in range(steps):
        opt.zero_grad()
        obj(net, ds.x_train[: cfg.batch_size], None, step)[0].backward()
        opt.step()
    return ds, net, opt


def test_term_attribution_splits_the_update_and_leaves_the_training_untouched():
    cfg = sc.Config(**SMALL)
    ds, net, opt = _trained_net(cfg, steps=0)
    assert sc.term_attribution(net, opt, ds, cfg, seed=0) is None  # no second-moment estimate before a step
    ds, net, opt = _trained_net(cfg)
    weights = {k: v.clone() for k, v in net.state_dict().items()}  # includes BatchNorm running statistics
    moments = [opt.state[p]["exp_avg_sq"].clone() for p in net.parameters()]
    rng = torch.random.get_rng_state()
    att = sc.term_attribution(net, opt, ds, cfg, seed=0, step_sizes=(1e-3, 1e-2))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(m, opt.state[p]["exp_avg_sq"]) for m, p in zip(moments, net.parameters(), strict=True))
    assert torch.equal(rng, torch.random.get_rng_state())
    assert set(att) == {"regulariser", "invariance", "both"} and all(len(v) == 2 for v in att.values())
    assert att == sc.term_attribution(net, opt, ds, cfg, seed=0, step_sizes=(1e-3, 1e-2))  # deterministic
    # without the invariance coefficient its step is no step, and the regulariser's step is the whole update
    no_inv = sc.Config(**(SMALL | {"sim_coeff": 0.0}))
    att = sc.term_attribution(net, opt, ds, no_inv, seed=0, step_sizes=(1e-2, 1e-1))
    assert att["invariance"] == [0.0, 0.0] and att["regulariser"] == att["both"]
    assert any(v != 0.0 for v in att["regulariser"])  # a step of 0.1 does move the NCC accuracy


def test_interrupted_run_resumes_bit_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("PHENOMLAB_CHECKPOINT_SECONDS", "0")
    ref = phenomlab.run(sc.ID, store=str(tmp_path / "ref"), seed=1, **SMALL)
    original, calls = sc._ncc_table, []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 3:  # steps 0, 10, then here at step 20
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(sc, "_ncc_table", interrupt)
    with pytest.raises(RuntimeError, match="interrupted"):
        phenomlab.run(sc.ID, store=str(tmp_path / "cut"), seed=1, **SMALL)
    (ckpt,) = (tmp_path / "cut").rglob("full.ckpt")
    assert torch.load(ckpt, weights_only=False)["step"] == 10  # resumes mid-way, Adam state included
    monkeypatch.setattr(sc, "_ncc_table", original)
    resumed = phenomlab.run(sc.ID, store=str(tmp_path / "cut"), seed=1, **SMALL)
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
