import math

import pytest
import torch

from phenomlab.errors import ConfigError, TrainingDiverged
from phenomlab.models import MLP
from phenomlab.train import TrainConfig, lr_factor, train


def tiny_task(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def test_tiny_net_reaches_zero_loss():
    torch.manual_seed(0)
    x, y = tiny_task()
    m = MLP(5, 3, width=64, depth=2)
    h = train(m, (x, y), TrainConfig(steps=400, lr=1e-2, optimizer="adam", eval_every=50))
    assert h.last("train_acc") == 1.0
    assert h.last("train_loss") < 1e-2
    assert h.records[0]["step"] == 0 and h.records[-1]["step"] == 400
    assert h.finished and not h.stopped_early


class Interrupt(Exception):
    pass


def train_until_interrupted(init, data, cfg, ckpt, at_step, callbacks=(), **kwargs):
    """Train a fresh MLP(5, 3, 16, 2) from ``init`` with a checkpoint and stop it by an exception at ``at_step``."""

    def boom(state):
        if state.step == at_step:
            raise Interrupt

    m = MLP(5, 3, width=16, depth=2)
    m.load_state_dict(init)
    with pytest.raises(Interrupt):
        train(m, data, cfg, seed=7, checkpoint=ckpt, callbacks=[*callbacks, boom], **kwargs)


@pytest.mark.parametrize("opt, bs", [("sgd", 8), ("adamw", None), ("adam", 10)])
def test_resume_gives_same_final_weights(tmp_path, opt, bs):
    x, y = tiny_task(40)
    cfg = TrainConfig(
        steps=60,
        lr=0.05,
        optimizer=opt,
        momentum=0.9 if opt == "sgd" else 0.0,
        weight_decay=1e-3,
        batch_size=bs,
        eval_every=5,
        schedule="cosine",
        warmup_steps=5,
        checkpoint_seconds=0.0,
    )

    torch.manual_seed(1)
    ref = MLP(5, 3, width=16, depth=2)
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    h_ref = train(ref, (x, y), cfg, seed=7, eval_sets={"test": (x, y)})

    ckpt = tmp_path / "run.ckpt"
    train_until_interrupted(init, (x, y), cfg, ckpt, 35, eval_sets={"test": (x, y)})
    assert ckpt.exists()
    # a fresh process would rebuild the model from scratch; the checkpoint supplies the rest
    m2 = MLP(5, 3, width=16, depth=2)
    h = train(m2, (x, y), cfg, seed=7, checkpoint=ckpt, eval_sets={"test": (x, y)})
    for k, v in ref.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert [r["step"] for r in h.records] == [r["step"] for r in h_ref.records]
    assert h.records[-1]["train_loss"] == h_ref.records[-1]["train_loss"]
    # a finished checkpoint returns at once, without training
    m3 = MLP(5, 3, width=16, depth=2)
    h3 = train(m3, (x, y), cfg, seed=7, checkpoint=ckpt)
    assert h3.finished and torch.equal(m3.out.weight, ref.out.weight)


def test_divergence_names_the_step():
    x, y = tiny_task()
    m = MLP(5, 3, width=16, depth=2)
    with pytest.raises(TrainingDiverged, match=r"step \d+"):
        train(m, (x * 1e3, y), TrainConfig(steps=200, lr=1e4, optimizer="sgd", loss="mse", eval_every=10))


def test_callback_can_stop_and_log():
    x, y = tiny_task()
    m = MLP(5, 3, width=16, depth=1)

    def cb(state):
        if state.step >= 20:
            state.stop = True
        return {"w_norm": float(m.out.weight.norm())}

    h = train(m, (x, y), TrainConfig(steps=1000, lr=1e-2, eval_every=10), callbacks=[cb])
    assert h.stopped_early and h.records[-1]["step"] == 20
    assert all("w_norm" in r for r in h.records)


def test_schedules():
    cfg = TrainConfig(steps=100, schedule="cosine", warmup_steps=10)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(0.0, abs=1e-12)
    lin = TrainConfig(steps=100, schedule="linear")
    assert lr_factor(50, lin) == pytest.approx(0.5)
    assert lr_factor(7, TrainConfig(steps=10)) == 1.0


@pytest.mark.parametrize(
    "bad",
    [
        dict(lr=-1.0),
        dict(lr=math.nan),
        dict(optimizer="rmsprop"),
        dict(batch_size=0),
        dict(momentum=1.0),
        dict(schedule="step"),
        dict(eval_every=0),
        dict(steps=-1),
        dict(betas=(1.5, 0.9)),
        dict(eval_batch_size=0),
        dict(steps=2.5),
        dict(batch_size=True),
    ],
)
def test_invalid_config(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad).validate()


def test_mse_loss_with_class_labels():
    x, y = tiny_task()
    m = MLP(5, 3, width=32, depth=1)
    h = train(m, (x, y), TrainConfig(steps=300, lr=1e-2, optimizer="adam", loss="mse", eval_every=100))
    assert h.last("train_loss") < h.records[0]["train_loss"]


# --- objective: a loss other than loss(model(x), y), e.g. self-supervised ---------------------------------------


def noisy_objective(noise_seed=3, log=None):
    """A denoising-style objective with per-step randomness drawn as the loop's contract asks."""
    from phenomlab.seeding import derive_seed

    def objective(model, xb, yb, step):
        g = torch.Generator().manual_seed(derive_seed(noise_seed, "objective", step))
        noisy = xb + 0.3 * torch.randn(xb.shape, generator=g)
        ce = torch.nn.functional.cross_entropy(model(noisy), yb)
        reg = model.out.weight.square().mean()
        total = ce + 0.1 * reg
        if log is not None:
            log.append((step, float(total), float(ce)))
        return total, {"ce": float(ce), "reg": float(reg)}

    return objective


OBJ_CFG = dict(
    steps=40,
    lr=0.05,
    optimizer="sgd",
    momentum=0.9,
    batch_size=8,
    eval_every=5,
    schedule="cosine",
    warmup_steps=4,
    grad_clip=1.0,
    checkpoint_seconds=0.0,
)


def test_objective_run_is_deterministic_and_logs_means():
    x, y = tiny_task(36)  # 36 = 4 batches of 8 and one of 4: the epoch remainder is exercised too
    torch.manual_seed(2)
    init = MLP(5, 3, width=16, depth=2).state_dict()
    runs = []
    for noise_seed in (3, 3, 4):
        m = MLP(5, 3, width=16, depth=2)
        m.load_state_dict(init)
        log = []
        h = train(m, (x, y), TrainConfig(**OBJ_CFG), seed=5, objective=noisy_objective(noise_seed, log))
        runs.append((m.state_dict(), h, log))
    (w0, h0, log0), (w1, h1, _), (w2, _, _) = runs
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert h0.records == h1.records
    assert not all(torch.equal(w0[k], w2[k]) for k in w0)  # the objective's draws really matter
    # no supervised evaluation; step 0 records nothing of the objective (documented)
    assert h0.records[0] == {"step": 0}
    assert not any("train_loss" in r or "train_acc" in r for r in h0.records)
    assert [r["step"] for r in h0.records] == list(range(0, 41, 5))
    # train_objective = mean over the steps since the previous evaluation, and likewise each part
    assert [s for s, _, _ in log0] == list(range(40))
    for r in h0.records[1:]:
        window = [(t, ce) for s, t, ce in log0 if r["step"] - 5 <= s < r["step"]]
        assert r["train_objective"] == pytest.approx(sum(t for t, _ in window) / 5, rel=1e-12)
        assert r["train_ce"] == pytest.approx(sum(c for _, c in window) / 5, rel=1e-12)
        assert "train_reg" in r
    assert h0.last("train_ce") < h0.records[1]["train_ce"]  # it does optimise the objective


def test_objective_resume_gives_same_final_weights(tmp_path):
    x, y = tiny_task(36)
    cfg = TrainConfig(**OBJ_CFG)
    torch.manual_seed(1)
    ref = MLP(5, 3, width=16, depth=2)
    init = {k: v.clone() for k, v in ref.state_dict().items()}

    def norm_cb(state):
        return {"w_norm": float(state.model.out.weight.detach().norm())}

    h_ref = train(ref, (x, y), cfg, seed=7, objective=noisy_objective(), callbacks=[norm_cb])

    ckpt = tmp_path / "obj.ckpt"
    train_until_interrupted(init, (x, y), cfg, ckpt, 25, callbacks=[norm_cb], objective=noisy_objective())
    assert torch.load(ckpt, weights_only=False)["step"] == 20  # interrupted mid-way, resumes from step 20
    m2 = MLP(5, 3, width=16, depth=2)
    log = []
    h = train(m2, (x, y), cfg, seed=7, checkpoint=ckpt, objective=noisy_objective(log=log), callbacks=[norm_cb])
    assert log[0][0] == 20  # the resumed run really restarted mid-way
    for k, v in ref.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert h.records == h_ref.records


def test_objective_nan_raises_training_diverged_at_its_step():
    x, y = tiny_task()
    m = MLP(5, 3, width=16, depth=1)

    def objective(model, xb, yb, step):
        out = model(xb).square().mean()
        return out * float("nan") if step == 7 else out

    with pytest.raises(TrainingDiverged, match=r"step 7: objective") as info:
        train(m, (x, y), TrainConfig(steps=20, eval_every=5, batch_size=8), objective=objective)
    assert info.value.step == 7


def test_objective_with_eval_sets_or_loss_is_config_error():
    x, y = tiny_task()
    m = MLP(5, 3, width=16, depth=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ConfigError, match="eval_sets.*objective"):
        train(m, (x, y), TrainConfig(steps=5), objective=noisy_objective(), eval_sets={"test": (x, y)})
    with pytest.raises(ConfigError, match="loss or objective"):
        train(m, (x, y), TrainConfig(steps=5), objective=noisy_objective(), loss=torch.nn.functional.cross_entropy)
    with pytest.raises(ConfigError, match="scalar"):
        train(m, (x, y), TrainConfig(steps=5), objective=lambda model, xb, yb, step: model(xb))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # nothing trained


def test_batch_seed_overrides_seed_for_the_batch_order():
    x, y = tiny_task(40)
    cfg = TrainConfig(steps=15, lr=0.05, optimizer="sgd", batch_size=8, eval_every=5)
    torch.manual_seed(0)
    init = MLP(5, 3, width=8, depth=1).state_dict()

    def weights(**kw):
        m = MLP(5, 3, width=8, depth=1)
        m.load_state_dict(init)
        train(m, (x, y), cfg, **kw)
        return m.out.weight.detach().clone()

    assert torch.equal(weights(seed=1, batch_seed=9), weights(seed=2, batch_seed=9))
    assert torch.equal(weights(seed=9), weights(seed=2, batch_seed=9))
    assert not torch.equal(weights(seed=1), weights(seed=2))


def test_a_custom_loss_is_the_one_logged():
    x, y = tiny_task()
    torch.manual_seed(0)
    m = MLP(5, 3, width=8, depth=1)

    def scaled(out, target):
        return 100.0 * torch.nn.functional.cross_entropy(out, target)

    h = train(m, (x, y), TrainConfig(steps=0, eval_every=1), loss=scaled)
    ce = torch.nn.functional.cross_entropy(m(x), y).item()
    assert h.column("train_loss")[0] == pytest.approx(100.0 * ce, rel=1e-6)


def test_an_eval_set_named_train_mismatched_lengths_and_empty_sets_are_refused():
    from phenomlab.train import evaluate

    x, y = tiny_task()
    m = MLP(5, 3, width=8, depth=1)
    cfg = TrainConfig(steps=1, eval_every=1)
    with pytest.raises(ConfigError, match="may not be named 'train'"):
        train(m, (x, y), cfg, eval_sets={"train": (x[:4], y[:4])})
    with pytest.raises(ConfigError, match="32 inputs but 31 targets"):
        train(m, (x, y[:-1]), cfg)
    with pytest.raises(ConfigError, match="eval set 'test' is empty"):
        train(m, (x, y), cfg, eval_sets={"test": (x[:0], y[:0])})
    with pytest.raises(ConfigError, match="empty set"):
        evaluate(m, (x[:0], y[:0]))
    with pytest.raises(ConfigError, match="loss must be one of"):
        evaluate(m, (x, y), loss="hinge")


def test_train_puts_back_the_modes_it_found():
    x, y = tiny_task()
    m = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    m.eval()
    m[1].train()  # e.g. a caller keeping one BatchNorm in train mode on purpose
    train(m, (x, y), TrainConfig(steps=2, eval_every=1, optimizer="sgd", lr=0.1))
    assert [mod.training for mod in m.modules()] == [False, False, True, False]


def test_runs_default_to_the_cpu_and_auto_picks_cuda_when_present(monkeypatch):
    from phenomlab.seeding import resolve_device

    # the catalogue's verdicts are the CPU's: a GPU present must not change what `phenomlab run` computes
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_unusable_devices_are_refused_before_any_work(monkeypatch):
    from phenomlab.errors import ConfigError
    from phenomlab.seeding import resolve_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for device, message in [
        ("mps", "MPS is not available"),
        ("meta", "not supported"),
        ("tpu", "invalid device 'tpu': choose cpu, cuda, cuda:N, mps or auto"),
        ("cuda:1", "there are 1 CUDA device"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_device(device)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(lr=0.1), "lr: 0.05 -> 0.1"),
        (dict(optimizer="adam"), "optimizer: 'sgd' -> 'adam'"),
        (dict(steps=80), "steps: 60 -> 80"),  # under a cosine schedule more steps change every step's lr
        (dict(seed=8), "seed: 7 -> 8"),  # another minibatch order
    ],
)
def test_a_checkpoint_written_under_another_config_is_refused(tmp_path, change, named):
    from dataclasses import replace

    from phenomlab.errors import CheckpointError

    x, y = tiny_task(40)
    cfg = TrainConfig(steps=60, lr=0.05, optimizer="sgd", batch_size=8, eval_every=5, schedule="cosine")
    cfg = replace(cfg, checkpoint_seconds=0.0)
    init = MLP(5, 3, width=16, depth=2).state_dict()
    ckpt = tmp_path / "run.ckpt"
    train_until_interrupted(init, (x, y), cfg, ckpt, 35)
    seed = change.pop("seed", 7)
    m = MLP(5, 3, width=16, depth=2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError, match=f"another training config \\({named}\\)"):
        train(m, (x, y), replace(cfg, **change), seed=seed, checkpoint=ckpt)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # refused before loading anything
    # what leaves the trajectory as it was may change: evaluation cadence and chunking, checkpoint interval
    free = replace(cfg, eval_every=7, eval_batch_size=3, checkpoint_seconds=5.0)
    assert train(m, (x, y), free, seed=7, checkpoint=ckpt).finished


def test_a_checkpoint_from_before_the_config_check_is_still_resumed(tmp_path):
    x, y = tiny_task(40)
    cfg = TrainConfig(steps=60, lr=0.05, optimizer="sgd", batch_size=8, eval_every=5, checkpoint_seconds=0.0)
    ckpt = tmp_path / "run.ckpt"
    train_until_interrupted(MLP(5, 3, width=16, depth=2).state_dict(), (x, y), cfg, ckpt, 35)
    state = torch.load(ckpt, weights_only=True)
    del state["trajectory"]
    torch.save(state, ckpt)
    assert train(MLP(5, 3, width=16, depth=2), (x, y), cfg, seed=7, checkpoint=ckpt).finished
