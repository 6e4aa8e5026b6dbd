"""The one training loop every phenomenon uses.

Features: SGD (momentum/Nesterov), Adam, AdamW; weight decay; full batch or minibatch; constant,
cosine or linear schedules with warm-up; evaluation every ``eval_every`` steps on named sets;
callbacks that log probe measurements or stop training; checkpoints that resume bit-exactly
(model, optimiser, step, history and the batch order, which is a pure function of seed and epoch);
NaN/inf detection that names the step; a rich progress bar. The supervised loss on ``(x, y)`` can be
replaced by any ``objective`` (e.g. a self-supervised loss on augmented views) without giving up
any of these; see :func:`train` for its contract.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, TrainingDiverged
from ..seeding import derive_seed

Batch = tuple[torch.Tensor, torch.Tensor]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear")
LOSSES = ("cross_entropy", "mse")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    ``batch_size=None`` (or >= the training set) means full-batch gradient descent.
    ``eval_every`` counts optimiser steps; evaluation also runs at step 0 and at the last step.
    ``weight_decay`` is L2 added to the gradient for SGD/Adam and decoupled for AdamW
    (Loshchilov & Hutter 2019, arXiv 1711.05101).
    """

    steps: int = 1000
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    eval_every: int = 100
    loss: str = "cross_entropy"
    grad_clip: float | None = None
    eval_batch_size: int = 8192
    # how often a resumable run writes its checkpoint; the env var lets tests and clusters tune it
    checkpoint_seconds: float = field(
        default_factory=lambda: float(os.environ.get("PHENOMLAB_CHECKPOINT_SECONDS", "10"))
    )

    def validate(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.eval_every <= 0:
            raise ConfigError(f"eval_every must be positive, got {self.eval_every}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be positive, got {self.grad_clip}")


@dataclass
class History:
    """Evaluation records: one dict per evaluation step, e.g. ``{"step": 100, "train_acc": 0.9, ...}``."""

    records: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False
    wall_time: float = 0.0

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric, skipping records that lack it."""
        steps, values = [], []
        for r in self.records:
            if name in r:
                steps.append(int(r["step"]))
                values.append(float(r[name]))
        return steps, values

    def last(self, name: str, default: float = float("nan")) -> float:
        for r in reversed(self.records):
            if name in r:
                return float(r[name])
        return default

    def first_step(self, name: str, predicate: Callable[[float], bool]) -> int | None:
        """The first evaluated step where ``predicate(metric)`` holds, or None."""
        for r in self.records:
            if name in r and predicate(float(r[name])):
                return int(r["step"])
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        return cls(
            records=list(d["records"]),
            finished=bool(d["finished"]),
            stopped_early=bool(d.get("stopped_early", False)),
            wall_time=float(d.get("wall_time", 0.0)),
        )


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
Logger = Callable[[int, Mapping[str, float]], None]
#: ``objective(model, xb, yb, step)`` -> scalar loss, or (scalar loss, {part name: value}) to log parts
Objective = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]
]


def make_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: TrainConfig, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names. ``fused=True`` asks for torch's fused Adam/AdamW kernel (one call for all
    parameter tensors; the same update rule, float rounding aside), which pays off when a model has many
    large tensors, e.g. the stacked members of an ensemble; SGD ignores it."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    kw = {"fused": True} if fused else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kw)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kw)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (linear warm-up, then the schedule)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or cfg.steps <= cfg.warmup_steps:
        return 1.0
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return max(0.0, 1.0 - t)


def loss_fn(name: str, n_outputs: int | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy on logits, or MSE against one-hot targets for class labels (float targets as is)."""
    if name == "cross_entropy":
        return F.cross_entropy

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dtype == torch.long:
            y = F.one_hot(y, out.shape[-1]).to(out.dtype)
        return F.mse_loss(out, y.view_as(out)) * (out.shape[-1] if out.ndim > 1 else 1)

    return mse


@torch.no_grad()
def evaluate(model: nn.Module, data: Batch, loss: str = "cross_entropy", batch_size: int = 8192) -> dict[str, float]:
    """Mean loss and (for class labels) accuracy of ``model`` on ``data``."""
    was_training = model.training
    model.eval()
    x, y = data
    lf = loss_fn(loss)
    total_loss, correct, n = 0.0, 0, len(y)
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        out = model(xb)
        total_loss += float(lf(out, yb)) * len(yb)
        if yb.dtype == torch.long and out.ndim == 2:
            correct += int((out.argmax(1) == yb).sum())
    model.train(was_training)
    res = {"loss": total_loss / max(n, 1)}
    if y.dtype == torch.long:
        res["acc"] = correct / max(n, 1)
    return res


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # one randperm per epoch, not per step: for tiny models the permutation cost more than the step
    g = torch.Generator().manual_seed(derive_seed(seed, "batches", epoch))
    return torch.randperm(n, generator=g)


def _batch_indices(n: int, batch_size: int, step: int, seed: int, device: torch.device) -> torch.Tensor:
    """Indices of the minibatch used at ``step``: epoch order is a pure function of (seed, epoch),
    so a resumed run draws exactly the batches the uninterrupted run would."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch)[k * batch_size : (k + 1) * batch_size].to(device)


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


def _save(path: Path, payload: dict[str, Any]) -> None:
    # write then rename: a kill mid-write never leaves a truncated checkpoint
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


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
    named runs, e.g. a run and its ablation, see exactly the same batches).

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
    n = len(y)
    if n == 0:
        raise ConfigError("training set is empty")
    if objective is not None and eval_sets:
        raise ConfigError(
            f"eval_sets ({', '.join(eval_sets)}) cannot be used with an objective: there is no "
            "supervised loss to evaluate; measure held-out data in a callback instead"
        )
    if objective is not None and loss is not None:
        raise ConfigError("give either loss or objective, not both: the objective replaces the loss")
    device = next(model.parameters()).device
    lf = loss or loss_fn(cfg.loss)
    order_seed = seed if batch_seed is None else batch_seed
    opt = optimizer or make_optimizer(model.parameters(), cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    eval_sets = dict(eval_sets or {})
    callbacks = list(callbacks)
    full_batch = cfg.batch_size is None or cfg.batch_size >= n

    history = History()
    start = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = History.from_dict(state["history"])
        start = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        if history.finished:
            return history

    def save(step: int) -> None:
        if ckpt_path is not None:
            _save(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "history": history.to_dict(),
                    "torch_rng": torch.get_rng_state(),
                },
            )

    # running sums of the objective and its parts since the previous evaluation (see the docstring)
    obj_sums: dict[str, float] = {}
    obj_count = 0

    def do_eval(step: int) -> bool:
        nonlocal obj_count
        metrics: dict[str, float] = {}
        if objective is None:
            for k, v in evaluate(model, (x, y), cfg.loss, cfg.eval_batch_size).items():
                metrics[f"train_{k}"] = v
            for name, data in eval_sets.items():
                for k, v in evaluate(model, data, cfg.loss, cfg.eval_batch_size).items():
                    metrics[f"{name}_{k}"] = v
            if not math.isfinite(metrics["train_loss"]):
                raise TrainingDiverged(step, "train loss", metrics["train_loss"])
        elif obj_count:
            metrics["train_objective"] = obj_sums.pop("objective") / obj_count
            metrics.update({f"train_{k}": v / obj_count for k, v in obj_sums.items()})
            obj_sums.clear()
            obj_count = 0
        ts = TrainState(step, model, opt, metrics, history, cfg)
        for cb in callbacks:
            extra = cb(ts)
            if extra:
                metrics.update({k: float(v) for k, v in extra.items()})
        record = {"step": step, **metrics}
        # a resumed run re-evaluates its checkpoint step; keep one record per step
        if history.records and history.records[-1]["step"] == step:
            history.records[-1] = record
        else:
            history.records.append(record)
        if logger is not None:
            logger(step, metrics)
        return ts.stop

    bar = _Progress(progress, cfg.steps, start)
    t0 = time.perf_counter() - history.wall_time
    last_save = time.perf_counter()
    stopped = False
    model.train()
    try:
        if start == 0 or not history.records or history.records[-1]["step"] != start:
            stopped = do_eval(start)
        step = start
        while step < cfg.steps and not stopped:
            f = lr_factor(step, cfg)
            for g, base in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * f
            if full_batch:
                xb, yb = x, y
            else:
                idx = _batch_indices(n, cfg.batch_size, step, order_seed, x.device)  # type: ignore[arg-type]
                xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            if objective is None:
                batch_loss = lf(model(xb), yb)
                if not torch.isfinite(batch_loss):
                    raise TrainingDiverged(step, "loss", float(batch_loss.detach()))
            else:
                batch_loss, parts = _objective_value(objective(model, xb, yb, step))
                value = float(batch_loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(step, "objective", value)
                obj_sums["objective"] = obj_sums.get("objective", 0.0) + value
                for k, v in parts.items():
                    obj_sums[k] = obj_sums.get(k, 0.0) + v
                obj_count += 1
            batch_loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            if step % cfg.eval_every == 0 or step == cfg.steps:
                stopped = do_eval(step)
                bar.update(step, history.records[-1])
                if time.perf_counter() - last_save > cfg.checkpoint_seconds:
                    history.wall_time = time.perf_counter() - t0
                    save(step)
                    last_save = time.perf_counter()
    finally:
        bar.close()
    history.finished = True
    history.stopped_early = stopped
    history.wall_time = time.perf_counter() - t0
    save(step if not stopped else history.records[-1]["step"])
    return history


class _Progress:
    """A rich progress bar that shows the latest train/test accuracy; silent when disabled."""

    def __init__(self, enabled: bool | str, total: int, start: int) -> None:
        self.p = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        label = enabled if isinstance(enabled, str) else "training"
        self.p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=True,
        )
        self.p.start()
        self.task = self.p.add_task(label, total=total, completed=start, info="")

    def update(self, step: int, record: Mapping[str, float]) -> None:
        if self.p is None:
            return
        info = " ".join(f"{k}={v:.3f}" for k, v in record.items() if k.endswith("acc") or k == "train_objective")
        self.p.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
