"""The training engine: named events, History.column, checkpoint safety (weights_only, unique temporaries)."""

import os
import pickle

import pytest
import torch

from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.models import MLP
from phenomlab.train import CheckpointError, Engine, History, TrainConfig, train
from phenomlab.train.engine import save_checkpoint
from phenomlab.train.ensemble import EnsembleHistory, MLPEnsemble, train_ensemble


def tiny_task(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def make_engine(cfg, **kw):
    torch.manual_seed(0)
    model = MLP(5, 3, width=8, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    return model, opt, Engine(cfg, model, opt, History(), **kw)


def sgd_step(model, opt):
    def step(t, xb, yb):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

    return step


def test_on_step_and_on_eval_fire_at_their_periods():
    cfg = TrainConfig(steps=10, lr=0.1, eval_every=2, batch_size=8)
    model, opt, engine = make_engine(cfg)
    seen_steps, seen_evals, seen_all = [], [], []
    engine.on_step(seen_steps.append, every=3)
    engine.on_eval(lambda t, m: seen_evals.append(t) or m.update(probe=float(t)), every=4)
    engine.on_eval(lambda t, m: seen_all.append(t))
    h = engine.run(tiny_task(), sgd_step(model, opt), lambda t: {"marker": 1.0})
    assert seen_steps == [3, 6, 9]  # optimiser steps taken so far, at multiples of 3
    assert seen_evals == [0, 4, 8, 10]  # evaluations at multiples of 4, and the last step
    assert seen_all == [0, 2, 4, 6, 8, 10]
    assert h.column("step") == [0, 2, 4, 6, 8, 10]
    assert h.column("probe", None) == [0.0, None, 4.0, None, 8.0, 10.0]  # what the hook added is recorded
    assert h.finished and not h.stopped_early


def test_eval_hook_returning_true_stops_after_that_evaluation():
    cfg = TrainConfig(steps=50, lr=0.1, eval_every=5)
    model, opt, engine = make_engine(cfg)
    steps = []
    engine.on_step(steps.append)
    engine.on_eval(lambda t, m: t >= 15, every=5)
    h = engine.run(tiny_task(), sgd_step(model, opt), lambda t: {})
    assert h.stopped_early and h.column("step") == [0, 5, 10, 15] and steps == list(range(1, 16))


def test_event_period_must_be_positive():
    _, _, engine = make_engine(TrainConfig(steps=2))
    with pytest.raises(ConfigError, match="every"):
        engine.on_step(print, every=0)
    with pytest.raises(ConfigError, match="every"):
        engine.on_eval(lambda t, m: None, every=-1)


def test_history_column():
    x, y = tiny_task()
    h = train(MLP(5, 3, 8, 1), (x, y), TrainConfig(steps=20, eval_every=5), callbacks=[lambda s: {"n": s.step}])
    assert h.column("train_loss") == [r["train_loss"] for r in h.records]
    assert h.column("n") == [0.0, 5.0, 10.0, 15.0, 20.0]
    with pytest.raises(KeyError, match="nope"):
        h.column("nope")
    assert h.column("nope", default=-1) == [-1] * 5
    eh = EnsembleHistory(records=[{"step": 0, "train_err": [0.5, 0.25]}, {"step": 3, "train_err": [0.0, 0.5]}])
    assert eh.column("train_err") == [[0.5, 0.25], [0.0, 0.5]] and eh.column("step") == [0, 3]


# --- checkpoints ----------------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this runs a shell command (what a crafted checkpoint could do under weights_only=False)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_crafted_pickle_checkpoint_is_refused_and_nothing_runs(tmp_path, writer):
    marker, ckpt = tmp_path / "pwned", tmp_path / "run.ckpt"
    payload = {"model": Exploit(marker), "step": 3}
    if writer == "torch":
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(payload))
    pickle.loads(pickle.dumps(Exploit(tmp_path / "control")))  # the control: unpickling it does run the command
    assert (tmp_path / "control").exists()
    model = MLP(5, 3, 8, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="--force") as info:
        train(model, tiny_task(), TrainConfig(steps=5), checkpoint=ckpt)
    assert str(ckpt) in str(info.value) and isinstance(info.value, PhenomlabError) and "\n" not in str(info.value)
    assert not marker.exists()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def finished_checkpoint(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    train(MLP(5, 3, 8, 1), tiny_task(), TrainConfig(steps=6, eval_every=3, checkpoint_seconds=0.0), checkpoint=ckpt)
    return ckpt


def test_checkpoints_are_plain_data(tmp_path):
    state = torch.load(finished_checkpoint(tmp_path), weights_only=True)
    assert state["step"] == 6 and state["history"]["finished"] and isinstance(state["torch_rng"], torch.Tensor)
    ens_ckpt = tmp_path / "ens.ckpt"
    cfg = TrainConfig(steps=4, eval_every=2, optimizer="adam", checkpoint_seconds=0.0)
    ens = MLPEnsemble(6, 4, [2, 5], seeds=[0, 1])
    x = torch.randn(10, 6)
    train_ensemble(ens, (x, torch.arange(10) % 4), cfg, checkpoint=ens_ckpt, on_nan="continue")
    state = torch.load(ens_ckpt, weights_only=True)
    assert state["history"]["diverged"] == {} and len(state["history"]["records"]) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "other_model"])
def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, damage):
    ckpt = finished_checkpoint(tmp_path)
    data = ckpt.read_bytes()
    model = MLP(5, 3, 8, 1)
    if damage == "truncate":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        ckpt.write_bytes(os.urandom(1000))
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        model = MLP(5, 3, 9, 1)  # a checkpoint of another architecture
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} cannot be loaded .*--force"):
        train(model, tiny_task(), TrainConfig(steps=6, eval_every=3), checkpoint=ckpt)


def test_checkpoint_temporaries_are_unique_and_cleaned_up(tmp_path, monkeypatch):
    written = []
    real_save = torch.save

    def spy(obj, f, *a, **kw):
        written.append(f)
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", spy)
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert len(written) == 2 and written[0] != written[1]
    for tmp in written:
        assert tmp.parent == tmp_path and tmp.name.startswith(f"a.ckpt.{os.getpid()}.") and tmp.suffix == ".tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]
    assert torch.load(path, weights_only=True) == {"step": 2}

    def failing(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]  # no temporary left, the old file intact
    assert torch.load(path, weights_only=True) == {"step": 2}
