"""The training engine, models and data on an accelerator (CUDA), compared with the CPU.

Every test takes the ``accel`` fixture (tests/conftest.py): the accelerator's device, or a skip when there is none;
``PHENOMLAB_TEST_DEVICE=cpu`` runs them with the CPU as the "accelerator" (to check the tests themselves).

What is compared: the same float64 model (built on the CPU, then copied) trained or evaluated on the CPU and on the
accelerator. The engine's minibatch order is drawn on the CPU (``engine._epoch_order``: a CPU ``torch.Generator``,
then ``.to(device)``), SAM's random directions, the sparse regrowth and the data generators are CPU generators too,
so both sides see the same batches and draws and agree to float64 rounding (GPU float64 kernels differ from the
CPU's at ~1e-13 per op: ``rtol=1e-6`` after a few steps leaves a wide margin). Each test also checks that what it
produced is finite and lives on the accelerator. Models are tiny: the whole file runs in seconds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from phenomlab.data import (
    class_split,
    digits,
    gaussian_mixture,
    hidden_attributes,
    modular_arithmetic,
    teacher_student,
    with_label_noise,
    with_random_labels,
)
from phenomlab.data.augment import Augment1D
from phenomlab.data.causal import quantile_vectors
from phenomlab.data.lms import shuffle_columns
from phenomlab.models import (
    MLP,
    NTKMLP,
    NTKRNN,
    DiscreteAttributeNet,
    EmbedMLP,
    HyperNet,
    HyperSinGAN,
    MLPEnsemble,
    MultiplicativeNet,
    NTKAttention,
    SmallCNN,
    StackedNets,
    StackedResNet,
    SubspaceModel,
    Transformer1L,
    hyperkernel_limit,
    param_groups,
    parametrise,
)
from phenomlab.models.parametrisation import make_optimizer as param_optimizer
from phenomlab.seeding import derive_seed
from phenomlab.train import TrainConfig, evaluate, make_optimizer, train
from phenomlab.train.contrastive import info_nce, sample_vmf
from phenomlab.train.ensemble import evaluate_ensemble, train_ensemble
from phenomlab.train.pruning import (
    apply_masks,
    attach_masks,
    full_masks,
    magnitude_prune,
    random_masks,
    rewind,
    sparsity,
    state_copy,
)
from phenomlab.train.sam import SAM
from phenomlab.train.sparse import DynamicSparsity, MaskSchedule, erk_masks
from phenomlab.train.supervised_contrastive import supcon_loss, supcon_objective

CPU = torch.device("cpu")
RTOL, ATOL = 1e-6, 1e-9


# --- helpers ----------------------------------------------------------------------------------------------------


def task(n: int = 40, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 3-class task on the CPU."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def moved(dev: torch.device, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(dev) for t in ts)


def mlp(seed: int = 0, d: int = 5, k: int = 3, width: int = 8, depth: int = 2) -> MLP:
    torch.manual_seed(seed)
    return MLP(d, k, width=width, depth=depth).double()


def on(t: torch.Tensor, dev: torch.device) -> bool:
    return t.device.type == dev.type


def assert_on_and_finite(module: torch.nn.Module, dev: torch.device) -> None:
    for n, p in module.named_parameters():
        assert on(p, dev), f"{n} is on {p.device}, expected {dev}"
        assert bool(torch.isfinite(p).all()), f"{n} is not finite"


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str = "") -> None:
    torch.testing.assert_close(a.detach().cpu(), b.detach().cpu(), rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


def assert_same_weights(cpu_model: torch.nn.Module, dev_model: torch.nn.Module) -> None:
    dev_state = dev_model.state_dict()
    for k, v in cpu_model.state_dict().items():
        if v.is_floating_point():
            assert_close(v, dev_state[k], k)
        else:
            assert torch.equal(v, dev_state[k].cpu()), k


def assert_same_history(h_cpu, h_dev) -> None:
    """Same evaluated steps, the same metric names, every value finite and equal to float64 rounding."""
    assert [r["step"] for r in h_cpu.records] == [r["step"] for r in h_dev.records]
    for rc, rd in zip(h_cpu.records, h_dev.records, strict=True):
        assert rc.keys() == rd.keys()
        for k, v in rc.items():
            vd = rd[k]
            assert isinstance(vd, (float, int, list)), f"{k} is a {type(vd).__name__}, not a plain number"
            vals_c, vals_d = (v, vd) if isinstance(v, list) else ([v], [vd])
            assert all(math.isfinite(x) for x in vals_d), f"{k} at step {rd['step']}: {vd}"
            assert vals_d == pytest.approx(vals_c, rel=RTOL, abs=ATOL), f"{k} at step {rd['step']}"


class Interrupt(Exception):
    pass


def interrupt_at(step: int):
    def cb(state):
        if state.step == step:
            raise Interrupt

    return cb


# --- the training loop ------------------------------------------------------------------------------------------

CONFIGS = {
    "sgd_nesterov_wd_full_batch_cosine": dict(
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3, schedule="cosine", warmup_steps=2
    ),
    "sgd_minibatch_grad_clip": dict(optimizer="sgd", lr=0.2, batch_size=8, grad_clip=0.5),
    "adam_wd_minibatch_linear": dict(optimizer="adam", lr=0.01, weight_decay=1e-3, batch_size=10, schedule="linear"),
    "adamw_full_batch": dict(optimizer="adamw", lr=0.01, weight_decay=0.1, betas=(0.8, 0.99)),
    "sam_momentum_minibatch": dict(optimizer="sam", lr=0.1, momentum=0.9, sam_rho=0.1, batch_size=16),
    "mse_minibatch": dict(optimizer="sgd", lr=0.05, loss="mse", batch_size=12),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_train_on_accelerator_matches_cpu(accel, name):
    cfg = TrainConfig(steps=12, eval_every=4, eval_batch_size=16, **CONFIGS[name])
    x, y = task(40)
    xt, yt = task(24, seed=1)
    model = mlp()
    cpu, dev = copy.deepcopy(model), copy.deepcopy(model).to(accel)
    h_cpu = train(cpu, (x, y), cfg, eval_sets={"test": (xt, yt)}, seed=3)
    h_dev = train(dev, moved(accel, x, y), cfg, eval_sets={"test": moved(accel, xt, yt)}, seed=3)
    assert h_dev.finished and h_dev.column("step") == [0, 4, 8, 12]
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} <= h_dev.records[-1].keys()
    assert_on_and_finite(dev, accel)
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(cpu, dev)
    assert h_dev.last("train_loss") < h_dev.records[0]["train_loss"]  # it learned something
    assert evaluate(dev, moved(accel, xt, yt), cfg.loss) == pytest.approx(evaluate(cpu, (xt, yt), cfg.loss), rel=RTOL)


def test_custom_loss_callbacks_logger_and_optimizer_on_accelerator(accel):
    """A label-smoothing loss (TrainConfig has none: ``loss=`` is the way), a callback measuring the model, a logger
    and a user optimiser with two parameter groups."""
    cfg = TrainConfig(steps=10, eval_every=5, batch_size=8, schedule="cosine", warmup_steps=3)
    x, y = task(32)

    def smooth(out, t):
        return F.cross_entropy(out, t, label_smoothing=0.1)

    def run(model, data):
        logged = []
        opt = torch.optim.SGD(
            [{"params": model.out.parameters(), "lr": 0.05}, {"params": model.fc1.parameters(), "lr": 0.2}],
            lr=0.1,
            momentum=0.5,
        )
        wnorm = lambda s: {"wnorm": s.model.out.weight.detach().norm()}  # noqa: E731 - a tensor on the model's device
        h = train(model, data, cfg, loss=smooth, optimizer=opt, callbacks=[wnorm], logger=lambda t, m: logged.append(t))
        return h, logged

    model = mlp()
    cpu, dev = copy.deepcopy(model), copy.deepcopy(model).to(accel)
    h_cpu, _ = run(cpu, (x, y))
    h_dev, logged = run(dev, moved(accel, x, y))
    assert logged == [0, 5, 10]
    assert isinstance(h_dev.records[-1]["wnorm"], float)
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(cpu, dev)
    assert_on_and_finite(dev, accel)


def test_supervised_contrastive_objective_on_accelerator(accel):
    cfg = TrainConfig(steps=9, lr=0.01, optimizer="adam", batch_size=12, eval_every=3)
    x, y = task(36)
    model = mlp(k=4)
    cpu, dev = copy.deepcopy(model), copy.deepcopy(model).to(accel)
    h_cpu = train(cpu, (x, y), cfg, objective=supcon_objective(0.2))
    h_dev = train(dev, moved(accel, x, y), cfg, objective=supcon_objective(0.2))
    assert "train_objective" in h_dev.records[-1]
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(cpu, dev)
    assert_on_and_finite(dev, accel)
    z = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lab = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3, 1])
    zc, zd = z.clone().requires_grad_(), z.to(accel).requires_grad_()
    lc, ld = supcon_loss(zc, lab, 0.3), supcon_loss(zd, lab.to(accel), 0.3)
    assert on(ld, accel) and bool(torch.isfinite(ld))
    assert_close(lc, ld, "supcon")
    lc.backward()
    ld.backward()
    assert on(zd.grad, accel)
    assert_close(zc.grad, zd.grad, "supcon grad")


def test_info_nce_and_vmf_objective_on_accelerator(accel):
    """A self-supervised objective whose randomness (noise views, vMF positives) comes from a per-step CPU generator,
    as the objective contract asks: the accelerator run sees the same draws as the CPU run."""
    cfg = TrainConfig(steps=8, lr=0.01, optimizer="adam", batch_size=10, eval_every=4)
    x, y = task(30)

    def objective(model, xb, yb, step):
        g = torch.Generator().manual_seed(derive_seed(5, "objective", step))
        noise = torch.randn(xb.shape, generator=g, dtype=xb.dtype).to(xb.device)
        z1 = F.normalize(model(xb), dim=1)
        z2 = F.normalize(model(xb + 0.1 * noise), dim=1)
        pos = sample_vmf(z1.detach(), 8.0, generator=g)
        assert on(pos, xb.device) and pos.dtype == z1.dtype
        nce, vmf = info_nce(z1, z2, 0.5), info_nce(z1, pos, 0.5)
        return nce + vmf, {"nce": nce.detach(), "vmf": vmf.detach()}

    model = mlp(k=4)
    cpu, dev = copy.deepcopy(model), copy.deepcopy(model).to(accel)
    h_cpu = train(cpu, (x, y), cfg, objective=objective)
    h_dev = train(dev, moved(accel, x, y), cfg, objective=objective)
    assert {"train_objective", "train_nce", "train_vmf"} <= h_dev.records[-1].keys()
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(cpu, dev)
    assert_on_and_finite(dev, accel)


# --- checkpoints ------------------------------------------------------------------------------------------------


def _ckpt_cfg(opt: str) -> TrainConfig:
    kw = dict(momentum=0.9) if opt in ("sgd", "sam") else {}
    return TrainConfig(
        steps=16, lr=0.05, optimizer=opt, batch_size=8, eval_every=4, schedule="cosine", checkpoint_seconds=0.0, **kw
    )


def _optimizer(kind: str, model: torch.nn.Module, cfg: TrainConfig):
    # SAM with random directions draws them from a CPU generator whose state lives in the optimiser's state dict
    return SAM(model.parameters(), lr=cfg.lr, rho=0.1, momentum=0.9, direction="random", seed=3) if kind else None


@pytest.mark.parametrize("opt", ["adam", "sgd", "sam", "sam_random"])
def test_checkpoint_on_accelerator_resumes_on_accelerator(accel, tmp_path, opt):
    cfg = _ckpt_cfg("sam" if opt == "sam_random" else opt)
    random_dir = opt == "sam_random"
    x, y = task(40)
    data, test = moved(accel, x, y), {"test": moved(accel, *task(12, seed=2))}
    ref = mlp().to(accel)
    init = copy.deepcopy(ref.state_dict())
    h_ref = train(ref, data, cfg, eval_sets=test, seed=1, optimizer=_optimizer(random_dir and "r", ref, cfg))

    ckpt = tmp_path / "run.ckpt"
    m1 = mlp(seed=9).to(accel)
    m1.load_state_dict(init)
    with pytest.raises(Interrupt):
        train(m1, data, cfg, eval_sets=test, seed=1, checkpoint=ckpt, callbacks=[interrupt_at(12)],
              optimizer=_optimizer(random_dir and "r", m1, cfg))  # fmt: skip
    raw = torch.load(ckpt, weights_only=True)  # no map_location: the tensors come back where they were saved
    assert raw["step"] == 8
    assert all(on(v, accel) for v in raw["model"].values())
    assert on(raw["torch_rng"], CPU)
    if accel.type == "cuda":
        assert "cuda_rng" in raw

    m2 = mlp(seed=9).to(accel)  # a fresh process rebuilds the model; the checkpoint supplies the rest
    h = train(m2, data, cfg, eval_sets=test, seed=1, checkpoint=ckpt, optimizer=_optimizer(random_dir and "r", m2, cfg))
    assert_on_and_finite(m2, accel)
    assert_same_weights(ref, m2)
    assert_same_history(h_ref, h)


@pytest.mark.parametrize("opt", ["adam", "sam_random"])
def test_checkpoint_written_on_accelerator_resumes_on_cpu_and_back(accel, tmp_path, opt):
    """The user case: a run checkpointed on a GPU machine is resumed on a laptop (``torch.load`` must map the
    tensors to the model's device), and the other way round."""
    cfg = _ckpt_cfg("sam" if opt == "sam_random" else opt)
    r = "r" if opt == "sam_random" else ""
    x, y = task(40)
    ref = mlp()
    init = copy.deepcopy(ref.state_dict())
    h_ref = train(ref, (x, y), cfg, seed=1, optimizer=_optimizer(r, ref, cfg))

    for i, (first, second) in enumerate(((accel, CPU), (CPU, accel))):
        ckpt = tmp_path / f"{i}-{first.type}-{second.type}.ckpt"
        m1 = mlp(seed=9).to(first)
        m1.load_state_dict(init)
        with pytest.raises(Interrupt):
            train(m1, moved(first, x, y), cfg, seed=1, checkpoint=ckpt, callbacks=[interrupt_at(12)],
                  optimizer=_optimizer(r, m1, cfg))  # fmt: skip
        m2 = mlp(seed=9).to(second)
        opt2 = _optimizer(r, m2, cfg)
        h = train(m2, moved(second, x, y), cfg, seed=1, checkpoint=ckpt, optimizer=opt2)
        assert h.records[0]["step"] == 0 and h.finished
        assert_on_and_finite(m2, second)
        assert_same_weights(ref, m2)
        assert_same_history(h_ref, h)


# --- ensembles --------------------------------------------------------------------------------------------------


def _ensemble() -> MLPEnsemble:
    return MLPEnsemble(5, 3, [4, 7, 7], depth=2, seeds=[0, 1, 2]).double()


def test_ensemble_trainer_on_accelerator_matches_cpu(accel):
    """Fused Adam over the stacked tensors, per-member lr scales (the masked step), per-member clipping."""
    cfg = TrainConfig(steps=12, lr=0.02, optimizer="adam", batch_size=10, eval_every=4, grad_clip=1.0)
    x, y = task(40)
    xt, yt = task(16, seed=3)
    ens = _ensemble()
    cpu, dev = copy.deepcopy(ens), copy.deepcopy(ens).to(accel)
    kw = dict(lr_scale=[1.0, 0.5, 0.0], seed=2)
    h_cpu = train_ensemble(cpu, (x, y), cfg, eval_sets={"test": (xt, yt)}, **kw)
    h_dev = train_ensemble(dev, moved(accel, x, y), cfg, eval_sets={"test": moved(accel, xt, yt)}, **kw)
    assert len(h_dev.last("test_err")) == 3
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(cpu, dev)
    assert_on_and_finite(dev, accel)
    assert_same_weights(ens.member(2), dev.member(2))  # lr scale 0: the member did not move
    xd = x.to(accel)
    out = dev(xd)
    assert on(out, accel) and out.shape == (3, 40, 3)
    for m in range(3):
        member = dev.member(m)  # on the ensemble's device, in its dtype (float64 here)
        assert_on_and_finite(member, accel)
        assert next(member.parameters()).dtype == torch.float64
        assert_close(member(xd), out[m], f"member {m}")
    ev = evaluate_ensemble(dev, (xd, y.to(accel)))
    assert ev["loss"] == pytest.approx(evaluate_ensemble(cpu, (x, y))["loss"], rel=RTOL)


def test_ensemble_divergence_freezes_a_member_on_accelerator(accel):
    cfg = TrainConfig(steps=8, lr=0.05, optimizer="sgd", loss="mse", eval_every=2)
    x, y = task(24)
    ens = _ensemble()
    dev = copy.deepcopy(ens).to(accel)
    h = train_ensemble(dev, moved(accel, x, y), cfg, on_nan="continue", lr_scale=[1.0, 1e200, 1.0])
    assert 1 in h.diverged and 0 not in h.diverged and 2 not in h.diverged
    cpu = copy.deepcopy(ens)
    h_cpu = train_ensemble(cpu, (x, y), cfg, on_nan="continue", lr_scale=[1.0, 1e200, 1.0])
    for m in (0, 2):
        assert_on_and_finite(dev.member(m), accel)
        assert h.member(m)["train_loss"] == pytest.approx(h_cpu.member(m)["train_loss"], rel=RTOL)


def test_ensemble_checkpoint_resumes_on_accelerator_and_on_cpu(accel, tmp_path):
    cfg = TrainConfig(steps=12, lr=0.02, optimizer="adam", batch_size=10, eval_every=4, checkpoint_seconds=0.0)
    x, y = task(40)
    ref = _ensemble()
    init = copy.deepcopy(ref)
    h_ref = train_ensemble(ref, (x, y), cfg, seed=2)
    ckpt = tmp_path / "ens.ckpt"
    train_ensemble(copy.deepcopy(init).to(accel), moved(accel, x, y), replace(cfg, steps=8), checkpoint=ckpt, seed=2)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["history"]["finished"] = False  # as if the 12-step run had been stopped at step 8
    torch.save(state, ckpt)
    ck2 = tmp_path / "ens2.ckpt"
    ck2.write_bytes(ckpt.read_bytes())
    for dev, path in ((accel, ckpt), (CPU, ck2)):
        ens = _ensemble().to(dev)
        h = train_ensemble(ens, moved(dev, x, y), cfg, checkpoint=path, seed=2)
        assert_on_and_finite(ens, dev)
        assert_same_weights(ref, ens)
        assert h.last("train_loss") == pytest.approx(h_ref.last("train_loss"), rel=RTOL)


# --- sparse training and pruning --------------------------------------------------------------------------------


def _sparse_run(dev, method, x, y, cfg, checkpoint=None, callbacks=()):
    model = mlp(width=12).to(dev)
    opt = make_optimizer(model.parameters(), cfg)
    params = {n: p for n, p in model.named_parameters() if p.ndim == 2}
    masks = erk_masks(params, 0.4, torch.Generator().manual_seed(0))
    dyn = DynamicSparsity(model, masks, opt, MaskSchedule(method, interval=3, drop_fraction=0.4, end_step=13), seed=4)
    h = train(model, moved(dev, x, y), cfg, optimizer=opt, seed=1, checkpoint=checkpoint, callbacks=callbacks)
    return model, dyn, h


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_dynamic_sparse_training_on_accelerator_matches_cpu(accel, method, tmp_path):
    cfg = TrainConfig(steps=15, lr=0.1, optimizer="sgd", momentum=0.9, batch_size=8, eval_every=5)
    x, y = task(40)
    m_cpu, d_cpu, h_cpu = _sparse_run(CPU, method, x, y, cfg)
    m_dev, d_dev, h_dev = _sparse_run(accel, method, x, y, cfg)
    for n, m in d_dev.masks.items():
        assert on(m, accel) and on(d_dev.ever[n], accel)
        assert torch.equal(m.cpu(), d_cpu.masks[n]), n
        assert torch.equal(d_dev.ever[n].cpu(), d_cpu.ever[n]), n
        assert not bool(d_dev.params[n][~m].any()), f"inactive weights of {n} are not zero"
    assert d_dev.itop_rate() > d_dev.density() and d_dev.step == 15
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(m_cpu, m_dev)
    assert_on_and_finite(m_dev, accel)
    # resumed from a checkpoint on the accelerator: the masks, their union and the step counter come back
    ckpt = tmp_path / "sparse.ckpt"
    cfg0 = replace(cfg, checkpoint_seconds=0.0)
    with pytest.raises(Interrupt):
        _sparse_run(accel, method, x, y, cfg0, checkpoint=ckpt, callbacks=[interrupt_at(10)])
    m_res, d_res, h_res = _sparse_run(accel, method, x, y, cfg0, checkpoint=ckpt)
    assert d_res.step == 15
    for n, m in d_res.masks.items():
        assert torch.equal(m.cpu(), d_cpu.masks[n]) and torch.equal(d_res.ever[n].cpu(), d_cpu.ever[n]), n
    assert_same_weights(m_cpu, m_res)


def test_sparse_ensemble_members_on_accelerator(accel):
    cfg = TrainConfig(steps=12, lr=0.05, optimizer="sgd", momentum=0.9, batch_size=16, eval_every=6)
    x, y = task(40)

    def run(dev):
        ens = MLPEnsemble(5, 3, [10, 10, 10], depth=1, seeds=[0, 0, 0]).double().to(dev)
        opt = make_optimizer(ens.parameters(), cfg)
        params = {n: p for n, p in ens.named_parameters() if "weights" in n}
        masks = erk_masks(params, 0.3, torch.Generator().manual_seed(0), member_dim=True)
        scheds = [MaskSchedule("static"), MaskSchedule("set", 4, 0.5, 10), MaskSchedule("rigl", 4, 0.5, 10, False)]
        dyn = DynamicSparsity(ens, masks, opt, scheds, member_dim=True, seed=1)
        return ens, dyn, train_ensemble(ens, moved(dev, x, y), cfg, optimizer=opt)

    e_cpu, d_cpu, h_cpu = run(CPU)
    e_dev, d_dev, h_dev = run(accel)
    for n, m in d_dev.masks.items():
        assert on(m, accel) and torch.equal(m.cpu(), d_cpu.masks[n]), n
    assert d_dev.itop_rate(1) > d_dev.density(1)
    assert d_dev.itop_rate(2) == pytest.approx(d_dev.density(2))  # no exploration
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(e_cpu, e_dev)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_lottery_ticket_round_on_accelerator_matches_cpu(accel, scope):
    """Train, magnitude-prune (the output layer at its own rate), rewind to init, retrain with the masks attached."""
    cfg = TrainConfig(steps=8, lr=0.05, optimizer="adam", batch_size=10, eval_every=4)
    x, y = task(40)

    def lottery(dev):
        model = mlp(width=12).to(dev)
        init = state_copy(model)
        train(model, moved(dev, x, y), cfg, seed=1)
        masks = magnitude_prune(model, full_masks(model), 0.5, scope=scope, layer_fractions={"out.weight": 0.25})
        masks = magnitude_prune(model, masks, 0.2, scope=scope)
        rewind(model, init, masks)
        opt = make_optimizer(model.parameters(), cfg)
        handle = attach_masks(model, masks, opt)
        h = train(model, moved(dev, x, y), replace(cfg, weight_decay=1e-2), optimizer=opt, seed=1)
        handle.remove()
        return model, masks, h

    m_cpu, k_cpu, h_cpu = lottery(CPU)
    m_dev, k_dev, h_dev = lottery(accel)
    assert sparsity(k_dev) == pytest.approx(sparsity(k_cpu)) and 0.5 < sparsity(k_dev) < 0.7
    params = dict(m_dev.named_parameters())
    for n, m in k_dev.items():
        assert on(m, accel) and m.dtype == torch.bool, n
        assert torch.equal(m.cpu(), k_cpu[n]), n
        assert not bool(params[n][~m].any()), f"pruned weights of {n} came back"
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(m_cpu, m_dev)
    rnd_dev = random_masks(k_dev, torch.Generator().manual_seed(0))
    rnd_cpu = random_masks(k_cpu, torch.Generator().manual_seed(0))
    for n, m in rnd_dev.items():
        assert on(m, accel) and torch.equal(m.cpu(), rnd_cpu[n]) and int(m.sum()) == int(k_dev[n].sum()), n
    apply_masks(m_dev, rnd_dev)
    assert_on_and_finite(m_dev, accel)


# --- parametrisations -------------------------------------------------------------------------------------------


def _mup_pair(d_model: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    base = Transformer1L(7, 7, seq_len=2, d_model=8, n_heads=2, d_mlp=16)
    torch.manual_seed(1)
    return Transformer1L(7, 7, seq_len=2, d_model=d_model, n_heads=2, d_mlp=2 * d_model).double(), base


@pytest.mark.parametrize("scheme", ["sp", "ntk", "mup"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_parametrised_mlp_trains_on_accelerator_like_cpu(accel, scheme, optimizer):
    cfg = TrainConfig(steps=8, lr=0.05 if optimizer == "sgd" else 0.01, optimizer=optimizer, batch_size=10,
                      eval_every=4, weight_decay=1e-3)  # fmt: skip
    x, y = task(40)
    torch.manual_seed(5)
    base = MLP(5, 3, width=4, depth=2)

    def build(dev):
        m = mlp(width=12)
        parametrise(m, scheme, base=base if scheme == "mup" else None)
        return m.to(dev)

    cpu, dev = build(CPU), build(accel)
    groups = param_groups(dev, optimizer, cfg.lr, cfg.weight_decay)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (g["lr"], g["weight_decay"]) for g in param_groups(cpu, optimizer, cfg.lr, cfg.weight_decay)
    ]
    assert all(on(p, accel) for g in groups for p in g["params"])
    for b in dev.buffers():
        assert on(b, accel)
    h_cpu = train(cpu, (x, y), cfg, seed=1)
    h_dev = train(dev, moved(accel, x, y), cfg, seed=1)
    assert_same_history(h_cpu, h_dev)
    assert_same_weights(cpu, dev)
    assert_on_and_finite(dev, accel)
    opt = param_optimizer(dev, optimizer if optimizer == "sgd" else "adamw", 0.01, 1e-3)
    dev(x.to(accel)).square().sum().backward()
    opt.step()
    assert_on_and_finite(dev, accel)


@pytest.mark.parametrize("when", ["before_to", "after_to"])
def test_mup_transformer_parametrised_before_or_after_moving_to_accelerator(accel, when):
    """muP puts a per-row multiplier (a float64 tensor buffer) on the attention's query rows; a model moved to the
    accelerator *before* ``parametrise`` must still compute on one device."""
    tokens = torch.randint(0, 7, (12, 2), generator=torch.Generator().manual_seed(0))
    y = (tokens.sum(1) % 7).long()
    cpu, base = _mup_pair(16)
    parametrise(cpu, "mup", base=base)
    dev, base2 = _mup_pair(16)
    if when == "after_to":
        dev = dev.to(accel)
        parametrise(dev, "mup", base=base2)
    else:
        parametrise(dev, "mup", base=base2)
        dev = dev.to(accel)
    out = dev(tokens.to(accel))
    assert on(out, accel)
    assert_close(cpu(tokens), out, "muP transformer")
    cfg = TrainConfig(steps=6, lr=0.01, optimizer="adam", eval_every=3)
    h_cpu = train(cpu, (tokens, y), cfg)
    h_dev = train(dev, moved(accel, tokens, y), cfg)
    assert_same_history(h_cpu, h_dev)
    assert_on_and_finite(dev, accel)


# --- every model family: forward and backward, equal to the CPU -------------------------------------------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hypergan_out(model, x):
    theta_g = model.emit(model.embed(x, "g"), "g")
    noises = [torch.randn(2, x.shape[0], 1, s, s, generator=_gen(1), dtype=x.dtype).to(x.device) for s in model.sizes]
    fakes = model.generate(theta_g, noises, [1.0, 0.5])
    theta_d = model.emit(model.embed(x, "d"), "d")
    real = model.pyramid(x)[-1].unsqueeze(0)
    return torch.cat([model.discriminate(theta_d, real, 1).flatten(), fakes[-1].flatten(), fakes[0].flatten()])


def _hypernet_out(model, x):
    z, xx = model.split(x)
    return torch.cat(
        [
            model(x).flatten(),
            model.meta_ntk_diag(z, z).flatten(),
            model.primary_weight_kernel(x, x).flatten(),
            hyperkernel_limit(z, xx, z, xx).flatten(),
        ]
    )


def _discrete_out(model, x):
    y = torch.arange(len(x), device=x.device) % 3
    mask = (torch.arange(4, device=x.device) % 2).to(x.dtype)
    total, parts = model.loss(x, y, sparsity=0.1, mask=mask)
    assert all(math.isfinite(v) for v in parts.values())
    return torch.cat([model(x).flatten(), model.parts(x)["tree"].flatten(), total.reshape(1)])


def _hypernet_input():
    z = torch.randn(3, 3, generator=_gen(2), dtype=torch.float64).repeat_interleave(2, 0)  # tasks shared by 2 rows
    return torch.cat([z, torch.randn(6, 4, generator=_gen(3), dtype=torch.float64)], 1)


def _f64(*shape):
    return lambda: torch.randn(*shape, generator=_gen(7), dtype=torch.float64)


def _tokens(vocab, *shape):
    return lambda: torch.randint(0, vocab, shape, generator=_gen(7))


MODELS = {
    "mlp": (lambda: MLP(5, 3, width=8, depth=2), _f64(6, 5), None),
    "mlp_he_tanh": (lambda: MLP(5, 3, width=8, depth=3, activation_name="tanh", init="he"), _f64(6, 5), None),
    "cnn_1d": (lambda: SmallCNN(1, 3, dims=1, channels=(4, 6), kernel_size=3, hidden=8), _f64(6, 16), None),
    "cnn_2d": (lambda: SmallCNN(1, 3, dims=2, channels=(4, 6), kernel_size=3, hidden=8), _f64(6, 1, 8, 8), None),
    "discrete_attributes": (
        lambda: DiscreteAttributeNet(5, 3, n_units=4, width=8, enc_depth=1, head_width=8, tree_depth=2),
        _f64(6, 5),
        _discrete_out,
    ),
    "discrete_continuous": (
        lambda: DiscreteAttributeNet(5, 3, n_units=4, width=8, enc_depth=2, head_width=8, discrete=False),
        _f64(6, 5),
        None,
    ),
    "hypernet": (lambda: HyperNet(3, 4, meta_width=8, primary_width=6), _hypernet_input, _hypernet_out),
    "hypersingan": (
        lambda: HyperSinGAN(channels=1, size=8, n_scales=2, width=4, layers=2, embed_dim=6, enc_width=4),
        _f64(3, 1, 8, 8),
        _hypergan_out,
    ),
    "multiplicative": (lambda: MultiplicativeNet(5, 3, width=6, depth=2), _f64(6, 5), None),
    "stacked_mult": (lambda: StackedNets("mult", 3, 5, 6, 2), _f64(6, 5), None),
    "stacked_relu": (lambda: StackedNets("relu", 2, 5, 6, 2), _f64(6, 5), None),
    "ntk_mlp": (lambda: NTKMLP(5, 8, depth=2), _f64(6, 5), None),
    "ntk_mlp_mup_readout": (lambda: NTKMLP(5, 8, depth=1, readout="mup", activation="tanh"), _f64(6, 5), None),
    "ntk_rnn": (lambda: NTKRNN(3, 8), _f64(6, 4, 3), None),
    "ntk_attention": (lambda: NTKAttention(3, 8, max_len=5), _f64(6, 4, 3), None),
    "resnet_iid": (lambda: StackedResNet(4, 6, 3, n_models=2, init="iid"), _f64(6, 4), None),
    "resnet_smooth_relu": (
        lambda: StackedResNet(4, 6, 5, n_models=2, init="smooth", scaling="1/sqrt(L)", act="relu"),
        _f64(2, 6, 4),
        None,
    ),
    "subspace_dense": (lambda: SubspaceModel(MLP(5, 3, 8, 1), d=6, projection="dense", seed=1), _f64(6, 5), None),
    "subspace_fastfood": (
        lambda: SubspaceModel(MLP(5, 3, 8, 1), d=6, projection="fastfood", seed=1),
        _f64(6, 5),
        None,
    ),
    "embed_mlp": (lambda: EmbedMLP(7, 7, n_tokens=2, embed_dim=4, width=8), _tokens(7, 6, 2), None),
    "transformer_1l": (lambda: Transformer1L(7, 7, seq_len=3, d_model=8, n_heads=2, d_mlp=16), _tokens(7, 6, 3), None),
    "mlp_ensemble": (lambda: MLPEnsemble(5, 3, [3, 6], depth=1, seeds=[0, 1]), _f64(6, 5), None),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_backward_on_accelerator_matches_cpu(accel, name):
    build, make_input, forward = MODELS[name]
    forward = forward or (lambda m, x: m(x))
    torch.manual_seed(0)
    cpu = build().double()
    torch.manual_seed(1)  # a different init on purpose: the weights come from the CPU model's state dict
    dev = build().double().to(accel)
    dev.load_state_dict(cpu.state_dict())
    for n, b in dev.named_buffers():
        assert on(b, accel), f"buffer {n} is on {b.device}"
    x = make_input()
    out_cpu, out_dev = forward(cpu, x), forward(dev, x.to(accel))
    assert on(out_dev, accel) and bool(torch.isfinite(out_dev).all())
    assert_close(out_cpu, out_dev, f"{name} output")
    out_cpu.square().sum().backward()
    out_dev.square().sum().backward()
    grads = {n: p.grad for n, p in dev.named_parameters()}
    assert any(g is not None for g in grads.values())
    for n, p in cpu.named_parameters():
        if p.grad is None:
            assert grads[n] is None, n
            continue
        assert on(grads[n], accel) and bool(torch.isfinite(grads[n]).all()), n
        assert_close(p.grad, grads[n], f"{name} grad {n}")


def test_stacked_members_match_their_standalone_nets_on_accelerator(accel):
    """``StackedNets.member`` and ``MLPEnsemble.member`` on an accelerator-resident stack: the standalone copy
    must run on the inputs of that device."""
    x = torch.randn(6, 5, generator=_gen(7)).to(accel)
    torch.manual_seed(0)
    st = StackedNets("mult", 3, 5, 6, 2).to(accel)
    out = st(x)
    for m in range(3):
        member = st.member(m)
        assert_on_and_finite(member, accel)
        torch.testing.assert_close(member(x).squeeze(-1), out[:, m], rtol=1e-5, atol=1e-6)
    ens = MLPEnsemble.from_models([mlp(seed=s).float().to(accel) for s in (0, 1)])
    assert_on_and_finite(ens, accel)
    member = ens.member(1)
    assert_on_and_finite(member, accel)
    torch.testing.assert_close(member(x), ens(x)[1], rtol=1e-5, atol=1e-6)


def test_train_a_model_of_each_kind_on_accelerator(accel):
    """A few engine steps on models whose forward does more than matmuls: the loop must run them on the device."""
    x, y = task(24)
    img = torch.randn(24, 16, generator=_gen(4), dtype=torch.float64)
    tok = torch.randint(0, 7, (24, 3), generator=_gen(5))
    cases = [
        (SmallCNN(1, 3, channels=(4,), kernel_size=3, hidden=8), img, y),
        (DiscreteAttributeNet(5, 3, n_units=4, width=8, enc_depth=1, head_width=8), x, y),
        (Transformer1L(7, 7, seq_len=3, d_model=8, n_heads=2, d_mlp=16), tok, tok.sum(1) % 7),
        (SubspaceModel(MLP(5, 3, 8, 1), d=6), x, y),
        (NTKAttention(3, 8, max_len=5), x[:, :3].reshape(24, 1, 3), x[:, 0]),
    ]
    cfg = TrainConfig(steps=4, lr=0.01, optimizer="adam", batch_size=8, eval_every=2)
    for model, xs, ys in cases:
        torch.manual_seed(0)
        model = model.double()
        cpu, dev = copy.deepcopy(model), copy.deepcopy(model).to(accel)
        loss = None if ys.dtype == torch.long else (lambda o, t: F.mse_loss(o.squeeze(-1), t))
        h_cpu = train(cpu, (xs, ys), cfg, loss=loss)
        h_dev = train(dev, moved(accel, xs, ys), cfg, loss=loss)
        assert_same_history(h_cpu, h_dev)
        assert_on_and_finite(dev, accel)


# --- data -------------------------------------------------------------------------------------------------------


def _assert_dataset_on(ds, dev):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert on(getattr(ds, k), dev), f"{ds.name}.{k} is on {getattr(ds, k).device}"


def _assert_same_dataset(a, b):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, k).cpu(), getattr(b, k).cpu()), k
    assert a.n_classes == b.n_classes


def test_datasets_move_with_to_and_train_on_accelerator(accel):
    """A Dataset has ``.to(device)`` (what the phenomena call with ``ctx.device``); generators stay on the CPU."""
    sets = {
        "gaussian_mixture": gaussian_mixture(n_classes=3, dim=6, n_train_per_class=10, n_test_per_class=5),
        "teacher_student": teacher_student(dim=6, n_classes=3, n_train=30, n_test=10, teacher_width=8),
        "hidden_attributes": hidden_attributes(4, 4, input_dim=6, n_train=30, n_test=10)[0],
        "modular_arithmetic": modular_arithmetic(p=7, train_fraction=0.5),
        "digits": digits(),
    }
    for ds in sets.values():
        dd = ds.to(accel)
        _assert_dataset_on(dd, accel)
        _assert_same_dataset(ds, dd)
        assert dd.input_shape == ds.input_shape and dd.n_train == ds.n_train
    ds = sets["gaussian_mixture"]
    cfg = TrainConfig(steps=6, lr=0.05, optimizer="sgd", batch_size=8, eval_every=3)
    dd = ds.to(accel)
    torch.manual_seed(0)
    model = MLP(ds.input_dim, ds.n_classes, 8, 1)
    cpu, dev = copy.deepcopy(model), copy.deepcopy(model).to(accel)
    h_cpu = train(cpu, ds.train(), cfg, eval_sets={"test": ds.test()})
    h_dev = train(dev, dd.train(), cfg, eval_sets={"test": dd.test()})
    # float32 data: the CPU and the GPU may round differently, so only a loose comparison
    assert h_dev.column("train_loss") == pytest.approx(h_cpu.column("train_loss"), rel=1e-4)
    assert_on_and_finite(dev, accel)


def test_dataset_wrappers_keep_a_device_dataset_on_the_device(accel):
    ds = gaussian_mixture(n_classes=4, dim=6, n_train_per_class=10, n_test_per_class=5)
    dd = ds.to(accel)
    for fn in (
        lambda d: with_label_noise(d, 0.3, seed=1),
        lambda d: with_random_labels(d, seed=1, fraction=0.5),
        lambda d: d.subset_train(20, seed=2),
        lambda d: with_label_noise(d, 0.3, seed=1).subset_train(20, seed=2),
    ):
        a, b = fn(ds), fn(dd)
        _assert_dataset_on(b, accel)
        _assert_same_dataset(a, b)
        for k in ("y_train_clean", "noisy_mask"):
            if k in a.meta:
                assert torch.equal(a.meta[k].cpu(), b.meta[k].cpu()), k
    for a, b in zip(class_split(ds, 2, seed=0), class_split(dd, 2, seed=0), strict=True):
        _assert_same_dataset(a, b)
        _assert_dataset_on(b, accel)  # labels remapped on the CPU must come back to the inputs' device


def test_augmentations_and_data_helpers_on_accelerator(accel):
    x = torch.randn(8, 40, generator=_gen(0))
    aug = Augment1D()
    a_cpu, a_dev = aug(x, _gen(3)), aug(x.to(accel), _gen(3))
    assert on(a_dev, accel) and a_dev.shape == x.shape
    torch.testing.assert_close(a_dev.cpu(), a_cpu, rtol=1e-5, atol=1e-6)
    v_cpu, v_dev = aug.views(x, 2, _gen(4)), aug.views(x.to(accel), 2, _gen(4))
    for c, d in zip(v_cpu, v_dev, strict=True):
        assert on(d, accel)
        torch.testing.assert_close(d.cpu(), c, rtol=1e-5, atol=1e-6)
    m = torch.randn(10, 6, generator=_gen(1))
    s_cpu, s_dev = shuffle_columns(m, [1, 3], _gen(2)), shuffle_columns(m.to(accel), [1, 3], _gen(2))
    assert on(s_dev, accel) and torch.equal(s_dev.cpu(), s_cpu)
    v = torch.randn(2, 30, generator=_gen(5), dtype=torch.float64)
    q_cpu, q_dev = quantile_vectors(v, 3, 10, 4, _gen(6)), quantile_vectors(v.to(accel), 3, 10, 4, _gen(6))
    assert torch.equal(q_dev.cpu(), q_cpu)
