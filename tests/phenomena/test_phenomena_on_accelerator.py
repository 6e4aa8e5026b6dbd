"""Phenomena on an accelerator (skipped without one; ``PHENOMLAB_TEST_DEVICE=cpu`` runs them on the CPU)."""

import json

import pytest
import torch

import phenomlab
from phenomlab.data import digits
from phenomlab.phenomena import memorization as mem
from phenomlab.phenomena import ssl_clustering as sc
from phenomlab.seeding import deterministic
from phenomlab.train import TrainConfig, train

# an embedding (grokking), 1-D convolutions (ssl-clustering, representation-similarity) and dropout with Gaussian
# inputs (memorization): the kernels whose CUDA versions accumulate with atomics or draw from the device generator
DETERMINISM_IDS = ["grokking", "ssl-clustering", "memorization", "representation-similarity"]


def same(a, b) -> bool:
    """Equal measurements, NaN included (an undefined CKA is NaN in both)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("pid", DETERMINISM_IDS)
def test_one_seed_gives_one_set_of_numbers_on_the_accelerator(pid, accel, tmp_path):
    a = phenomlab.run(pid, preset="smoke", device=str(accel), store=tmp_path / "a")
    b = phenomlab.run(pid, preset="smoke", device=str(accel), store=tmp_path / "b")
    assert not b.cached and same(a.data, b.data)


def test_interrupted_run_resumes_bit_exactly_on_the_accelerator(accel, tmp_path, monkeypatch):
    monkeypatch.setenv("PHENOMLAB_CHECKPOINT_SECONDS", "0")
    small = sc.PRESETS["smoke"]
    ref = phenomlab.run(sc.ID, device=str(accel), store=tmp_path / "ref", seed=1, **small)
    original, calls = sc._ncc_table, []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return original(*args)

    monkeypatch.setattr(sc, "_ncc_table", interrupt)
    with pytest.raises(RuntimeError, match="interrupted"):
        phenomlab.run(sc.ID, device=str(accel), store=tmp_path / "cut", seed=1, **small)
    monkeypatch.setattr(sc, "_ncc_table", original)
    resumed = phenomlab.run(sc.ID, device=str(accel), store=tmp_path / "cut", seed=1, **small)
    assert not resumed.cached and same(resumed.data, ref.data)


def test_dropout_training_resumes_bit_exactly_on_the_accelerator(accel, tmp_path):
    """The checkpoint carries the device generator's state: dropout after a resume draws what it would have."""
    ds = digits(seed=0).to(accel)

    def net():
        torch.manual_seed(0)
        return mem.DropoutMLP(ds.input_dim, ds.n_classes, 32, 2, 0.5).to(accel)

    cfg = TrainConfig(steps=40, lr=1e-2, batch_size=32, optimizer="adam", eval_every=20, checkpoint_seconds=0.0)

    def stop(state):
        if state.step == 20:
            raise KeyboardInterrupt

    torch.manual_seed(1)
    ref = net()
    train(ref, ds.train(), cfg)
    cut, ckpt = net(), tmp_path / "t.ckpt"
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        train(cut, ds.train(), cfg, checkpoint=ckpt, callbacks=[stop])
    torch.manual_seed(123)  # the resume must not depend on the generators' state at the time
    if accel.type == "cuda":
        torch.cuda.manual_seed_all(123)
    resumed = net()
    train(resumed, ds.train(), cfg, checkpoint=ckpt)
    for p, q in zip(ref.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_gaussian_inputs_are_the_same_noise_on_either_device(accel):
    ds = digits(seed=0)
    cpu = mem.gaussian_inputs(ds, seed=3)
    acc = mem.gaussian_inputs(ds.to(accel), seed=3)
    assert acc.x_train.device.type == accel.type
    assert torch.allclose(acc.x_train.cpu(), cpu.x_train, rtol=1e-6, atol=1e-6)


def test_deterministic_block_sets_and_restores_the_flags(accel):
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    with deterministic(accel):
        if accel.type == "cuda":
            assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
            assert not torch.backends.cudnn.benchmark
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
