import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from phenomlab.errors import ConfigError, PhenomlabError, TrainingDiverged
from phenomlab.models import MLP
from phenomlab.train import TrainConfig, evaluate, train
from phenomlab.train.ensemble import (
    EnsembleDiverged,
    MLPEnsemble,
    clip_member_grads_,
    plan_buckets,
    train_ensemble,
)

ATOL = 1e-6


def task(n=48, d=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


def standalone(seed, width, depth=1, act="relu", d=6, c=4):
    torch.manual_seed(seed)
    return MLP(d, c, width, depth, act)


def max_diff(a: MLP, b: MLP) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("depth, act", [(1, "relu"), (2, "relu"), (1, "sigmoid"), (2, "tanh")])
def test_masked_member_equals_standalone_mlp(depth, act):
    """A width-w member padded inside a wider bucket computes the same function, gets the same gradients
    and takes the same SGD step as a plain MLP of width w."""
    x, y = task()
    widths, seeds = [1, 3, 7, 7, 12], [10, 11, 12, 13, 14]
    ens = MLPEnsemble(6, 4, widths, depth, act, seeds=seeds, buckets="single")  # all padded to 12
    assert len(ens.buckets) == 1
    out = ens(x)
    opt = torch.optim.SGD(ens.parameters(), lr=0.1)
    ens.member_losses(x, y).sum().backward()
    grads = [{k: v.clone() for k, v in ens.member_grad(m).items()} for m in range(len(widths))]
    opt.step()
    for m, (w, s) in enumerate(zip(widths, seeds, strict=True)):
        ref = standalone(s, w, depth, act)
        assert torch.allclose(ref(x), out[m], atol=ATOL)
        F.cross_entropy(ref(x), y).backward()
        for name, p in ref.named_parameters():
            assert torch.allclose(p.grad, grads[m][name], atol=ATOL), (m, name)
        torch.optim.SGD(ref.parameters(), lr=0.1).step()
        exported = ens.member(m)
        assert max_diff(ref, exported) < ATOL
        assert torch.allclose(ref(x), exported(x), atol=ATOL)


def test_padding_stays_zero_and_export_roundtrip():
    x, y = task()
    ens = MLPEnsemble(6, 4, [2, 5, 9], depth=2, activation_name="sigmoid", buckets="single")
    cfg = TrainConfig(steps=20, lr=1e-2, optimizer="adamw", weight_decay=0.1, eval_every=10)
    train_ensemble(ens, (x, y), cfg)
    w1, w2, wout = ens.buckets[0].weights  # member 0 (width 2) is padded to 9 with zeros that never move
    assert w1[0, :, 2:].abs().max() == 0 and w2[0, 2:].abs().max() == 0 and w2[0, :, 2:].abs().max() == 0
    assert wout[0, 2:].abs().max() == 0 and ens.buckets[0].biases[0][0, :, 2:].abs().max() == 0
    models = ens.to_models()
    assert [m.width for m in models] == [2, 5, 9]
    again = MLPEnsemble.from_models(models)
    assert torch.allclose(again(x), ens(x), atol=ATOL)


def test_gradients_do_not_mix_between_members():
    """The objective is the SUM of per-member mean losses: changing one member leaves another's gradient."""
    x, y = task()
    a = MLPEnsemble(6, 4, [4, 8, 8], seeds=[1, 2, 3], buckets="single")
    b = MLPEnsemble(6, 4, [4, 8, 8], seeds=[1, 2, 3], buckets="single")
    with torch.no_grad():
        b.buckets[0].weights[0][2].mul_(-3.0)  # perturb member 2 only
    for e in (a, b):
        e.member_losses(x, y).sum().backward()
    for m in (0, 1):
        ga, gb = a.member_grad(m), b.member_grad(m)
        for k in ga:
            assert torch.equal(ga[k], gb[k])
    # and the member gradient equals the standalone gradient, not 1/M of it
    ref = standalone(2, 8)
    F.cross_entropy(ref(x), y).backward()
    assert torch.allclose(ref.fc1.weight.grad, a.member_grad(1)["fc1.weight"], atol=ATOL)


@pytest.mark.parametrize(
    "opt, bs, extra",
    [
        ("sgd", 8, {"momentum": 0.9, "nesterov": True}),
        ("adam", 16, {"weight_decay": 1e-3}),
        ("adamw", None, {"weight_decay": 0.1, "schedule": "cosine", "warmup_steps": 3}),
        ("sgd", None, {"loss": "mse", "grad_clip": 0.05}),
    ],
)
def test_training_matches_plain_loop(opt, bs, extra):
    x, y = task()
    cfg = TrainConfig(steps=30, lr=0.05 if opt == "sgd" else 1e-2, optimizer=opt, batch_size=bs, eval_every=10, **extra)
    widths, seeds = [1, 3, 8, 20], [5, 6, 7, 8]
    ens = MLPEnsemble(6, 4, widths, seeds=seeds, bucket_overhead=8.0)
    h = train_ensemble(ens, (x, y), cfg, seed=3, eval_sets={"test": task(seed=1)})
    assert [r["step"] for r in h.records] == [0, 10, 20, 30]
    for m, (w, s) in enumerate(zip(widths, seeds, strict=True)):
        ref = standalone(s, w)
        hr = train(ref, (x, y), cfg, seed=3, eval_sets={"test": task(seed=1)})
        assert max_diff(ref, ens.member(m)) < 1e-5, m
        assert math.isclose(hr.last("test_loss"), h.last("test_loss")[m], abs_tol=1e-5)
        assert hr.last("train_acc") == h.last("train_acc")[m]
        assert h.last("test_err")[m] == pytest.approx(1 - hr.last("test_acc"))
    assert h.member(0)["step"] == [0.0, 10.0, 20.0, 30.0]


def test_eval_matches_evaluate_of_exported_members():
    x, y = task(n=100)
    ens = MLPEnsemble(6, 4, [3, 30], seeds=[0, 1])
    from phenomlab.train.ensemble import evaluate_ensemble

    res = evaluate_ensemble(ens, (x, y), batch_size=17)
    for m, model in enumerate(ens.to_models()):
        ref = evaluate(model, (x, y))
        assert res["loss"][m] == pytest.approx(ref["loss"], abs=1e-6)
        assert res["acc"][m] == ref["acc"]


def test_per_member_grad_clip_matches_clip_grad_norm():
    x, y = task()
    ens = MLPEnsemble(6, 4, [2, 9], seeds=[0, 1], buckets="single")
    ens.member_losses(x, y).sum().backward()
    clip_member_grads_(ens, 0.01)
    for m, (w, s) in enumerate([(2, 0), (9, 1)]):
        ref = standalone(s, w)
        F.cross_entropy(ref(x), y).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.01)
        g = ens.member_grad(m)
        for name, p in ref.named_parameters():
            assert torch.allclose(p.grad, g[name], atol=1e-8)


def poison(ens: MLPEnsemble, m: int) -> None:
    b, j = ens._where[m]
    with torch.no_grad():
        ens.buckets[b].weights[-1][j].fill_(float("inf"))


def test_nan_member_is_reported_with_index_and_step():
    x, y = task()
    cfg = TrainConfig(steps=10, lr=1e-2, optimizer="adam", eval_every=5)
    ens = MLPEnsemble(6, 4, [3, 5, 8], seeds=[0, 1, 2])
    poison(ens, 1)
    with pytest.raises(EnsembleDiverged) as info:
        train_ensemble(ens, (x, y), cfg)
    assert info.value.member == 1 and info.value.step == 0
    assert isinstance(info.value, TrainingDiverged) and "member 1" in str(info.value)

    clean = MLPEnsemble(6, 4, [3, 5, 8], seeds=[0, 1, 2])
    train_ensemble(clean, (x, y), cfg)
    ens = MLPEnsemble(6, 4, [3, 5, 8], seeds=[0, 1, 2])
    poison(ens, 1)
    h = train_ensemble(ens, (x, y), cfg, on_nan="continue")
    assert h.diverged == {1: 0}
    assert not math.isfinite(h.last("train_loss")[1])
    for m in (0, 2):  # the diverged member does not contaminate the others
        assert max_diff(ens.member(m), clean.member(m)) == 0.0


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    x, y = task()
    cfg = TrainConfig(steps=40, lr=1e-2, optimizer="adam", batch_size=8, eval_every=5, checkpoint_seconds=0.0)
    ref = MLPEnsemble(6, 4, [2, 6, 6], seeds=[0, 1, 2])
    h_ref = train_ensemble(ref, (x, y), cfg, seed=4)

    class Stop(Exception):
        pass

    def boom(state):
        if state.step == 25:
            raise Stop

    ckpt = tmp_path / "ens.ckpt"
    with pytest.raises(Stop):
        train_ensemble(
            MLPEnsemble(6, 4, [2, 6, 6], seeds=[0, 1, 2]), (x, y), cfg, seed=4, checkpoint=ckpt, callbacks=[boom]
        )
    resumed = MLPEnsemble(6, 4, [2, 6, 6], seeds=[0, 1, 2])
    h = train_ensemble(resumed, (x, y), cfg, seed=4, checkpoint=ckpt)
    for a, b in zip(ref.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert h.records[-1]["train_loss"] == h_ref.records[-1]["train_loss"]


def test_callback_metrics_and_stop():
    x, y = task()

    def cb(state):
        state.stop = state.step >= 10
        return {"mean_width": [float(w) for w in state.ensemble.widths]}

    h = train_ensemble(MLPEnsemble(6, 4, [2, 4]), (x, y), TrainConfig(steps=50, eval_every=5), callbacks=[cb])
    assert h.stopped_early and h.records[-1]["step"] == 10 and h.last("mean_width") == [2.0, 4.0]


def test_plan_buckets_is_optimal_partition():
    widths = [1, 2, 2, 5, 9, 30, 31, 100]
    for ov in (0.0, 3.0, 20.0, 200.0, math.inf):
        groups = plan_buckets(widths, ov)
        assert sorted(i for g in groups for i in g) == list(range(len(widths)))
        cost = sum(ov if math.isfinite(ov) else 0 for _ in groups) + sum(
            len(g) * max(widths[i] for i in g) for g in groups
        )
        # brute force over all contiguous splits of the sorted widths
        ws = sorted(widths)
        best = math.inf
        for k in range(len(ws)):
            for cuts in itertools.combinations(range(1, len(ws)), k):
                bounds = [0, *cuts, len(ws)]
                parts = [ws[a:b] for a, b in itertools.pairwise(bounds)]
                c = sum((ov if math.isfinite(ov) else 1e9) + len(p) * p[-1] for p in parts)
                best = min(best, c)
        if math.isfinite(ov):
            assert cost == pytest.approx(best)
    assert len(plan_buckets(widths, math.inf)) == 1
    assert [sorted(widths[i] for i in g) for g in plan_buckets(widths, 0.0)] == [
        [1],
        [2, 2],
        [5],
        [9],
        [30],
        [31],
        [100],
    ]
    assert all(len(g) * max(widths[i] for i in g) <= 60 or len(g) == 1 for g in plan_buckets(widths, 1e6, 60))


def test_bad_inputs():
    with pytest.raises(PhenomlabError):
        MLPEnsemble(6, 4, [])
    with pytest.raises(PhenomlabError):
        MLPEnsemble(6, 4, [3, 0])
    with pytest.raises(PhenomlabError):
        MLPEnsemble(6, 4, [3, 4], seeds=[1])
    with pytest.raises(PhenomlabError):
        MLPEnsemble(6, 4, [3, 4], buckets=[[0]])
    with pytest.raises(PhenomlabError):
        MLPEnsemble(6, 4, [3], activation_name="swish")
    with pytest.raises(ConfigError):
        train_ensemble(MLPEnsemble(6, 4, [3]), task(), TrainConfig(steps=2), on_nan="ignore")
    with pytest.raises(ConfigError):
        train_ensemble(MLPEnsemble(6, 4, [3]), task(), TrainConfig(steps=2, optimizer="lbfgs"))


# --- per-member learning rates and frozen diverged members ----------------------------------------------------


@pytest.mark.parametrize(
    "opt, extra",
    [
        ("sgd", {}),
        ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2, "batch_size": 8}),
        ("adamw", {"weight_decay": 0.1, "schedule": "cosine", "warmup_steps": 3}),
    ],
)
def test_lr_scale_equals_members_trained_alone_with_their_own_lr(opt, extra):
    x, y = task()
    base = 0.05 if opt == "sgd" else 1e-2
    cfg = TrainConfig(steps=25, lr=base, optimizer=opt, eval_every=5, **extra)
    widths, seeds, scales = [3, 8, 8, 20], [5, 6, 7, 8], [1.0, 0.5, 2.0, 0.1]
    ens = MLPEnsemble(6, 4, widths, seeds=seeds, bucket_overhead=8.0)
    h = train_ensemble(ens, (x, y), cfg, seed=3, lr_scale=scales)
    for m, (w, s, c) in enumerate(zip(widths, seeds, scales, strict=True)):
        ref = standalone(s, w)
        hr = train(ref, (x, y), TrainConfig(**{**cfg.__dict__, "lr": base * c}), seed=3)
        assert max_diff(ref, ens.member(m)) < 1e-5, m
        assert h.last("train_loss")[m] == pytest.approx(hr.last("train_loss"), abs=1e-5)
    # the multiplier really acts: the same member without it ends elsewhere
    plain = MLPEnsemble(6, 4, widths, seeds=seeds, bucket_overhead=8.0)
    train_ensemble(plain, (x, y), cfg, seed=3)
    assert max_diff(plain.member(1), ens.member(1)) > 1e-3 and max_diff(plain.member(0), ens.member(0)) < 1e-6


def test_lr_scale_zero_keeps_a_member_exactly_and_bad_scales_are_refused():
    x, y = task()
    ens = MLPEnsemble(6, 4, [3, 5], seeds=[0, 1])
    start = ens.member(0)
    train_ensemble(ens, (x, y), TrainConfig(steps=5, optimizer="adam", lr=0.1), lr_scale=[0.0, 1.0])
    assert max_diff(start, ens.member(0)) == 0.0
    for bad in ([1.0], [1.0, -1.0], [1.0, float("nan")]):
        with pytest.raises(ConfigError, match="lr_scale"):
            train_ensemble(ens, (x, y), TrainConfig(steps=2), lr_scale=bad)


def test_diverged_member_is_frozen_and_the_others_train_on():
    x, y = task()
    cfg = TrainConfig(steps=12, lr=1e-2, optimizer="adam", eval_every=4, batch_size=16)
    ens = MLPEnsemble(6, 4, [3, 5, 8], seeds=[0, 1, 2], buckets="single")
    poison(ens, 1)
    frozen = ens.member(1)
    h = train_ensemble(ens, (x, y), cfg, on_nan="continue")
    assert h.diverged == {1: 0}
    after = ens.member(1)
    for p, q in zip(frozen.parameters(), after.parameters(), strict=True):
        assert torch.equal(p, q)  # not one NaN update: the member is exactly where it diverged
    assert not any(torch.isnan(p).any() for p in ens.parameters())
    clean = MLPEnsemble(6, 4, [3, 5, 8], seeds=[0, 1, 2], buckets="single")
    train_ensemble(clean, (x, y), cfg)
    for m in (0, 2):
        assert max_diff(ens.member(m), clean.member(m)) == 0.0


def test_member_diverging_mid_run_is_frozen_from_that_step():
    x, y = task()
    cfg = TrainConfig(steps=10, lr=0.5, optimizer="sgd", eval_every=5)
    ens = MLPEnsemble(6, 4, [4, 4], seeds=[0, 1], buckets="single")
    snapshots = []

    def blow_up(state):  # at step 5 member 0 gets an infinite weight, as a runaway update would give it
        if state.step == 5:
            poison(state.ensemble, 0)
            snapshots.append(state.ensemble.member(0))

    h = train_ensemble(ens, (x, y), cfg, callbacks=[blow_up], on_nan="continue")
    assert h.diverged == {0: 5}
    assert all(torch.equal(p, q) for p, q in zip(snapshots[0].parameters(), ens.member(0).parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in ens.member(1).parameters())


def test_models_import_path_is_the_same_class():
    from phenomlab.models import MLPEnsemble as FromModels
    from phenomlab.models.ensemble import per_member_loss as pml
    from phenomlab.train.ensemble import per_member_loss

    assert FromModels is MLPEnsemble and pml is per_member_loss
    ens = MLPEnsemble(6, 4, [9, 1, 4, 1], bucket_overhead=0.0)
    v = torch.arange(4.0)
    assert torch.equal(ens.gather(ens.split(v)), v)


def test_copies_param_groups_give_each_layer_its_parametrisation_rate_and_each_member_its_scale() -> None:
    from phenomlab.models.ensemble import copies_param_groups
    from phenomlab.models.parametrisation import parametrise
    from phenomlab.train.ensemble import masked_step_

    torch.manual_seed(0)
    model = MLP(3, 2, width=32, depth=2)
    rules = parametrise(model, "mup", base=MLP(3, 2, width=8, depth=2), fold_for="adam").rules
    ens = MLPEnsemble.from_models([model] * 2)
    lr, scales = 1e-2, torch.tensor([1.0, 0.25], dtype=torch.float64)
    groups = copies_param_groups(ens, rules, "adam", lr)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in ens.parameters())
    before = [p.detach().clone() for p in ens.buckets[0].parameters()]
    opt = torch.optim.Adam(groups, lr=lr)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    opt.zero_grad()
    (out,) = ens.bucket_outputs(x)  # [members, batch, classes]
    F.cross_entropy(out.reshape(-1, 2), y.repeat(2), reduction="sum").backward()
    grads = [p.grad.clone() for p in ens.buckets[0].parameters()]
    masked_step_(ens, opt, scales, torch.zeros(2, dtype=torch.bool))
    # Adam's first step moves every coordinate by lr_group * scale_m * sign(g) (up to eps): the rate is readable
    names = [f"fc{i}" for i in (1, 2)] + ["out"]
    expected = [rules[f"{n}.weight"].lr_scale("adam") for n in names] + [
        rules[f"{n}.bias"].lr_scale("adam") for n in names
    ]
    assert len(set(expected)) > 1  # muP gives the layers different rates
    for p, p0, g, rate in zip(ens.buckets[0].parameters(), before, grads, expected, strict=True):
        big = g.abs() > 1e-4
        step = (p0 - p.detach()) / g.sign()
        for m in range(2):
            assert torch.allclose(step[m][big[m]], torch.tensor(lr * rate * float(scales[m])), rtol=1e-4)
    with pytest.raises(PhenomlabError, match="one bucket"):
        copies_param_groups(MLPEnsemble(3, 2, [8, 512], depth=2), rules, "adam", lr)


def test_float64_models_stack_and_come_back_exactly():
    torch.manual_seed(0)
    nets = [MLP(5, 3, width=w, depth=2).double() for w in (4, 6)]
    ens = MLPEnsemble.from_models(nets)
    assert next(ens.parameters()).dtype == torch.float64  # the stack was float32: each weight rounded
    for net, back in zip(nets, ens.to_models(), strict=True):
        assert next(back.parameters()).dtype == torch.float64
        for p, q in zip(net.parameters(), back.parameters(), strict=True):
            assert torch.equal(p, q)
