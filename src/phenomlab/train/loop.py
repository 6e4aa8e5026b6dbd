"""The one training loop every phenomenon uses: a step function on :class:`phenomlab.train.engine.Engine`.

Features: SGD (momentum/Nesterov), Adam, AdamW, SAM on SGD (:mod:`phenomlab.train.sam`); weight decay; full
batch or minibatch; constant, cosine or linear schedules with warm-up; evaluation every ``eval_every`` steps on
named sets; callbacks that log probe measurements or stop training; checkpoints that resume bit-exactly
(model, optimiser, step, history and the batch order, which is a pure function of seed and epoch);
NaN/inf detection that names the step; a rich progress bar. The supervised loss on ``(x, y)`` can be
replaced by any ``objective`` (e.g. a self-supervised loss on augmented views) without giving up
any of these; see :func:`train` for its contract.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.parametrisation import param_groups
from .engine import (
    LOSSES,
    Batch,
    Engine,
    Logger,
    Records,
    TrainConfig,
    callback_hook,
    check_finite,
    evaluate_sets,
    named_sets,
)
from .sam import SAM, sam_gradient


@dataclass
class History(Records):
    """Evaluation records: one dict per evaluation step, e.g. ``{"step": 100, "train_acc": 0.9, ...}``."""

    def _value(self, v: Any) -> float:
        return float(v)

    def last(self, name: str, default: Any = float("nan")) -> float:
        return super().last(name, default)

    def first_step(self, name: str, predicate: Callable[[float], bool]) -> int | None:
        """The first evaluated step where ``predicate(metric)`` holds, or None."""
        for r in self.records:
            if name in r and predicate(float(r[name])):
                return int(r["step"])
        return None


@dataclass
class TrainState:
    """What a callback sees at an evaluation step. Set ``stop = True`` to end training."""

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    metrics: dict[str, float]
    history: History
    config: TrainConfig
    stop: bool = False


Callback = Callable[[TrainState], Mapping[str, float] | None]
#: ``objective(model, xb, yb, step)`` -> scalar loss, or (scalar loss, {part name: value}) to log parts
Objective = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]
]


def make_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names. ``fused=True`` asks for torch's fused Adam/AdamW kernel (one call for all
    parameter tensors; the same update rule, float rounding aside), which pays off when a model has many
    large tensors, e.g. the stacked members of an ensemble; SGD and SAM ignore it."""
    if cfg.optimizer == "sam":
        sgd = {"momentum": cfg.momentum, "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay}
        return SAM(params, lr=cfg.lr, rho=cfg.sam_rho, **sgd)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    adam = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    kw = {"fused": True} if fused else {}
    return adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kw)


def loss_fn(name: str, n_outputs: int | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy on logits, or MSE against one-hot targets for class labels (float targets as is), summed over
    outputs (``mean_n sum_k (f_k - y_k)^2``). ``n_outputs`` is accepted for compatibility and unused."""
    if name not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {name!r}")
    if name == "cross_entropy":
        return F.cross_entropy

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dtype == torch.long:
            y = F.one_hot(y, out.shape[-1]).to(out.dtype)
        return F.mse_loss(out, y.view_as(out)) * (out.shape[-1] if out.ndim > 1 else 1)

    return mse


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Batch,
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
    batch_size: int = 8192,
) -> dict[str, float]:
    """Mean loss and (for class labels) accuracy of ``model`` on ``data``; ``loss`` is a name of
    :func:`loss_fn` or a callable ``loss(out, y)`` returning the batch mean."""
    x, y = data
    if len(y) == 0:
        raise ConfigError("cannot evaluate on an empty set")
    lf = loss if callable(loss) else loss_fn(loss)
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, len(y)
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        out = model(xb)
        total_loss += float(lf(out, yb)) * len(yb)
        if yb.dtype == torch.long and out.ndim == 2:
            correct += int((out.argmax(1) == yb).sum())
    model.train(was_training)
    res = {"loss": total_loss / n}
    if y.dtype == torch.long:
        res["acc"] = correct / n
    return res


def _objective_value(out: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Split what an objective returned into the scalar to minimise and its named parts."""
    parts: Mapping[str, Any] = {}
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ConfigError(f"objective must return a tensor or (tensor, parts), got a {len(out)}-tuple")
        out, parts = out
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"objective must return a scalar tensor, got {shape}")
    if "objective" in parts:
        raise ConfigError("an objective part may not be named 'objective' (train_objective is the total)")
    return out.reshape(()), {str(k): float(v) for k, v in parts.items()}


def train(
    model: nn.Module,
    train_data: Batch,
    cfg: TrainConfig,
    *,
    eval_sets: Mapping[str, Batch] | None = None,
    callbacks: Iterable[Callback] = (),
    logger: Logger | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress: bool | str = False,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    objective: Objective | None = None,
    batch_seed: int | None = None,
) -> History:
    """Train ``model`` in place on ``train_data = (x, y)`` and return the evaluation history.

    Metrics at each evaluation: ``train_loss``, ``train_acc`` and ``{name}_loss``, ``{name}_acc``
    for each of ``eval_sets`` (e.g. ``{"test": (x_test, y_test)}``), plus whatever callbacks return.
    ``logger(step, metrics)`` receives each record (the run store uses it).

    With ``checkpoint`` a file is written at most every ``cfg.checkpoint_seconds`` and at the end;
    if it exists when ``train`` starts, training resumes from it (a finished checkpoint returns
    its history at once). Raises :class:`TrainingDiverged` when the loss becomes NaN/inf.

    The minibatch order is a pure function of ``seed`` (or of ``batch_seed`` when given: a wrapper
    such as ``RunContext.train`` derives ``seed`` from the run's name, and ``batch_seed`` lets two
    named runs, e.g. a run and its ablation, see exactly the same batches). ``seed`` fixes nothing else:
    Dropout and other in-model randomness draw from torch's global generator (``torch.manual_seed``).

    ``loss(out, y)`` (a batch mean) replaces ``cfg.loss`` as the quantity minimised and the one logged as
    ``train_loss`` / ``{name}_loss``. ``optimizer`` replaces the one ``cfg`` would build (its ``optimizer``,
    ``lr``, ``betas``, ``momentum`` and ``weight_decay`` are then unused; the schedule still scales each
    group's initial ``lr``). The model's train/eval flags are put back when training ends.

    ``objective(model, xb, yb, step)`` replaces ``loss(model(xb), yb)`` as the quantity minimised at
    ``step`` (0-based, the step about to be taken) on the minibatch ``(xb, yb)`` the loop drew; ``yb``
    may be ignored (self-supervised objectives) and ``y`` then only fixes the number of examples. It
    returns a scalar tensor, or ``(scalar, {name: value})`` with named parts to log. Contract:

    * randomness inside the objective (augmented views, masks, noise) must be a pure function of
      ``(seed, step)``, e.g. ``torch.Generator().manual_seed(derive_seed(my_seed, "objective", step))``;
      then a run resumed from a checkpoint sees exactly the draws of the uninterrupted run. (torch's
      global CPU generator is also restored from the checkpoint, but no other generator is, CUDA's
      included, and a per-step generator does not depend on what else consumed the global one.)
    * the objective must not change the model except through the gradient of what it returns
      (BatchNorm running statistics in train mode are the usual, harmless exception).
    * a NaN/inf objective raises :class:`TrainingDiverged` naming the step; grad clipping, the lr
      schedule, callbacks, checkpoints and the progress bar work as for the supervised loss.

    An objective has no supervised evaluation, so ``eval_sets`` (and ``loss``) cannot be combined
    with it (:class:`ConfigError`). Each evaluation records ``train_objective``, the mean of the
    objective over the optimiser steps since the previous evaluation, and ``train_{part}``, the same
    mean of each named part, plus what callbacks return. The step-0 evaluation records only the
    callbacks' metrics: evaluating the objective there would run the model in train mode (updating
    e.g. BatchNorm statistics) outside training. These running means restart at every evaluation,
    which is also the only time a checkpoint is written, so a resumed run records the same values.
    """
    cfg.validate()
    x, y = train_data
    if len(y) == 0:
        raise ConfigError("training set is empty")
    if objective is not None and eval_sets:
        raise ConfigError(
            f"eval_sets ({', '.join(eval_sets)}) cannot be used with an objective: there is no "
            "supervised loss to evaluate; measure held-out data in a callback instead"
        )
    if objective is not None and loss is not None:
        raise ConfigError("give either loss or objective, not both: the objective replaces the loss")
    lf = loss or loss_fn(cfg.loss)
    # a parametrised model (models.parametrisation) carries per-parameter learning rates and weight decays
    opt = optimizer or make_optimizer(param_groups(model, cfg.optimizer, cfg.lr, cfg.weight_decay), cfg)
    sets = named_sets((x, y), eval_sets)
    order_seed = seed if batch_seed is None else batch_seed
    engine = Engine(cfg, model, opt, History(), seed=order_seed, checkpoint=checkpoint, progress=progress)
    obj_sums: dict[str, float] = {}  # the objective and its parts summed since the previous evaluation
    obj_count = 0

    def minibatch_loss(xb: torch.Tensor, yb: torch.Tensor, t: int) -> torch.Tensor:
        return lf(model(xb), yb) if objective is None else _objective_value(objective(model, xb, yb, t))[0]

    def step(t: int, xb: torch.Tensor, yb: torch.Tensor) -> None:
        nonlocal obj_count
        opt.zero_grad(set_to_none=True)
        if objective is None:
            batch_loss = lf(model(xb), yb)
            check_finite(t, "loss", batch_loss)
        else:
            batch_loss, parts = _objective_value(objective(model, xb, yb, t))
            for k, v in {"objective": check_finite(t, "objective", batch_loss), **parts}.items():
                obj_sums[k] = obj_sums.get(k, 0.0) + v
            obj_count += 1
        batch_loss.backward()
        if isinstance(opt, SAM):  # the gradient at w + rho g/||g|| on the same minibatch replaces g
            check_finite(t, "SAM perturbed loss", sam_gradient(opt, lambda: minibatch_loss(xb, yb, t)))
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    def measure(t: int) -> dict[str, float]:
        nonlocal obj_count
        if objective is not None:
            means = {
                ("train_objective" if k == "objective" else f"train_{k}"): v / obj_count for k, v in obj_sums.items()
            }
            obj_sums.clear()
            obj_count = 0
            return means
        # the loss being minimised is the one logged (and checked for divergence)
        metrics = evaluate_sets(sets, lambda d: evaluate(model, d, loss or cfg.loss, cfg.eval_batch_size))
        check_finite(t, "train loss", metrics["train_loss"])
        return metrics

    state = functools.partial(TrainState, model=model, optimizer=opt, history=engine.history, config=cfg)
    engine.on_eval(callback_hook(callbacks, state, float))
    if logger is not None:
        engine.on_eval(lambda t, m: logger(t, m))
    return engine.run((x, y), step, measure)
