"""The training engine under :func:`phenomlab.train.train` and :func:`phenomlab.train.ensemble.train_ensemble`.

A trainer gives a *step function* (one optimiser step on a minibatch) and a *measure function* (the
metrics of an evaluation); the engine owns the rest: resuming from a checkpoint (model, optimiser, step,
history, torch's CPU and CUDA generators; a checkpoint written under another config or minibatch seed is refused),
the lr schedule, the minibatch order (a pure function of seed and epoch),
the evaluation cadence (step 0, every ``eval_every`` steps, the last step; one record per step), checkpoint
writing, the progress bar and named events (``Engine.on_step``, ``Engine.on_eval``, each with a period
``every=``), like open_lth's scheduled callbacks (Frankle et al., github.com/facebookresearch/open_lth) and
minGPT's named events (Karpathy 2020, github.com/karpathy/minGPT).

Checkpoints hold plain data only (tensors, numbers, strings, lists, dicts) and are read with
``torch.load(weights_only=True)``: a file that needs anything else (a crafted pickle) is refused.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..seeding import derive_seed

Batch = tuple[torch.Tensor, torch.Tensor]

OPTIMIZERS = ("sgd", "adam", "adamw", "sam")
SCHEDULES = ("constant", "cosine", "linear")
LOSSES = ("cross_entropy", "mse")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    ``batch_size=None`` (or >= the training set) means full-batch gradient descent.
    ``eval_every`` counts optimiser steps; evaluation also runs at step 0 and at the last step.
    ``weight_decay`` is L2 added to the gradient for SGD/Adam and decoupled for AdamW
    (Loshchilov & Hutter 2019, arXiv 1711.05101).
    ``optimizer="sam"`` is SAM (Foret et al. 2021, arXiv 2010.01412) on SGD with ``momentum``/``nesterov``/
    ``weight_decay``: each step takes the minibatch gradient at ``w + sam_rho g/||g||`` (:mod:`phenomlab.train.sam`).
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
    sam_rho: float = 0.05
    # how often a resumable run writes its checkpoint; the env var lets tests and clusters tune it
    checkpoint_seconds: float = field(
        default_factory=lambda: float(os.environ.get("PHENOMLAB_CHECKPOINT_SECONDS", "10"))
    )

    def validate(self) -> None:
        for key in ("steps", "batch_size", "warmup_steps", "eval_every", "eval_batch_size"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not (isinstance(v, numbers.Integral) or _whole(v))):
                raise ConfigError(f"{key} must be a whole number, got {v!r}")
        for ok, problem in (
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.batch_size is None or self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.eval_every > 0, f"eval_every must be positive, got {self.eval_every}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be positive, got {self.grad_clip}"),
            (0 <= self.sam_rho < math.inf, f"sam_rho must be a finite number >= 0, got {self.sam_rho}"),
            (
                len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                f"betas must be two numbers in [0, 1), got {self.betas}",
            ),
            (self.eval_batch_size > 0, f"eval_batch_size must be positive, got {self.eval_batch_size}"),
        ):
            if not ok:
                raise ConfigError(problem)


#: fields that do not change the trained trajectory: a resume may change them
_FREE_FIELDS = ("checkpoint_seconds", "eval_batch_size", "eval_every")


def trajectory_key(cfg: TrainConfig, seed: int) -> str:
    """What a checkpoint must have been written under to be resumed: the config (less :data:`_FREE_FIELDS`, and less
    ``steps`` under a constant schedule, where training longer continues the same trajectory) and the minibatch
    seed, as canonical JSON."""
    free = _FREE_FIELDS + (("steps",) if cfg.schedule == "constant" else ())
    fields = {k: v for k, v in asdict(cfg).items() if k not in free}
    return json.dumps({"config": fields, "seed": int(seed)}, sort_keys=True, default=_plain)


def _plain(o: object) -> object:
    # numpy scalars (a config built from an array) as the numbers they hold
    return o.item() if hasattr(o, "item") else str(o)


def _whole(v: object) -> bool:
    return isinstance(v, float) and v.is_integer()


def named_sets(train_data: Batch, eval_sets: Mapping[str, Batch] | None) -> dict[str, Batch]:
    """``{"train": train_data, **eval_sets}``, each an ``(x, y)`` pair of equal lengths; an eval set may not be
    named ``train`` (it would replace the training set's ``train_loss``/``train_acc``) or be empty."""
    if eval_sets and "train" in eval_sets:
        raise ConfigError("an eval set may not be named 'train': train_loss and train_acc are the training set's")
    sets = {"train": train_data, **(eval_sets or {})}
    for name, (x, y) in sets.items():
        if isinstance(x, torch.Tensor) and len(x) != len(y):
            raise ConfigError(f"the {name} set has {len(x)} inputs but {len(y)} targets")
        if name != "train" and len(y) == 0:
            raise ConfigError(f"eval set {name!r} is empty")
    return sets


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


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # one randperm per epoch, not per step: for tiny models the permutation cost more than the step
    g = torch.Generator().manual_seed(derive_seed(seed, "batches", epoch))
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, step: int, seed: int, device: torch.device) -> torch.Tensor:
    """Indices of the minibatch used at ``step``: epoch order is a pure function of (seed, epoch),
    so a resumed run draws exactly the batches the uninterrupted run would."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch)[k * batch_size : (k + 1) * batch_size].to(device)


def evaluate_sets(sets: Mapping[str, Batch], evaluate: Callable[[Batch], Mapping[str, Any]]) -> dict[str, Any]:
    """``{f"{set name}_{metric}": value}`` of ``evaluate`` on each named set, in order."""
    return {f"{name}_{k}": v for name, data in sets.items() for k, v in evaluate(data).items()}


def check_finite(step: int, what: str, value: float | torch.Tensor) -> float:
    """``value`` as a float; raises :class:`TrainingDiverged` naming ``step`` and ``what`` if it is NaN/inf."""
    v = float(value.detach() if isinstance(value, torch.Tensor) else value)
    if not math.isfinite(v):
        raise TrainingDiverged(step, what, v)
    return v


_REQUIRED: Any = object()
R = TypeVar("R", bound="Records")


@dataclass
class Records:
    """Evaluation records of a run, one dict per evaluated step: ``{"step": 100, "train_loss": ..., ...}``."""

    records: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False
    wall_time: float = 0.0

    def _value(self, v: Any) -> Any:
        return v  # how a stored value is returned (History: a float; EnsembleHistory: a list of M floats)

    def column(self, name: str, default: Any = _REQUIRED) -> list[Any]:
        """``[r[name] for r in records]``, the values as stored (``default`` where a record lacks ``name``;
        without one, KeyError)."""
        if default is _REQUIRED and (missing := [r["step"] for r in self.records if name not in r]):
            raise KeyError(f"{name!r} is missing from the records of steps {missing}")
        return [r.get(name, default) for r in self.records]

    def series(self, name: str) -> tuple[list[int], list[Any]]:
        """Steps and values of one metric, skipping records that lack it."""
        have = [r for r in self.records if name in r]
        return [int(r["step"]) for r in have], [self._value(r[name]) for r in have]

    def last(self, name: str, default: Any = _REQUIRED) -> Any:
        """The latest value of ``name`` (``default`` if no record has it; without one, KeyError)."""
        values = self.series(name)[1]
        if not values and default is _REQUIRED:
            raise KeyError(name)
        return values[-1] if values else default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any]) -> R:
        stopped, wall = bool(d.get("stopped_early", False)), float(d.get("wall_time", 0.0))
        return cls(records=list(d["records"]), finished=bool(d["finished"]), stopped_early=stopped, wall_time=wall)


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: to a temporary file of a name unique to this writer, then rename,
    so a kill mid-write never leaves a truncated checkpoint and two processes never share a temporary."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        torch.save(dict(payload), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


Logger = Callable[[int, Mapping[str, float]], None]
StepHook = Callable[[int], None]
EvalHook = Callable[[int, dict[str, Any]], bool | None]
StepFn = Callable[[int, torch.Tensor, torch.Tensor], None]
MeasureFn = Callable[[int], dict[str, Any]]


def callback_hook(
    callbacks: Iterable[Callable[[Any], Mapping[str, Any] | None]],
    make_state: Callable[..., Any],
    convert: Callable[[Any], Any],
) -> EvalHook:
    """An eval hook that runs ``callbacks`` on ``make_state(step=step, metrics=metrics)``, adds what each returns to the
    metrics (values through ``convert``) and stops training when a callback set the state's ``stop``."""
    callbacks = list(callbacks)

    def hook(step: int, metrics: dict[str, Any]) -> bool:
        state = make_state(step=step, metrics=metrics)
        for cb in callbacks:
            extra = cb(state)
            if extra:
                metrics.update({k: convert(v) for k, v in extra.items()})
        return state.stop

    return hook


def _period(every: int) -> int:
    if every <= 0:
        raise ConfigError(f"every must be a positive number of steps, got {every}")
    return every


def _changed(written: str, cfg: TrainConfig, seed: int) -> str:
    """``key: old -> new`` for each field that differs between a checkpoint's trajectory key and this run's."""
    try:
        old = json.loads(written)
        old = {**old.get("config", {}), "seed": old.get("seed")}
    except (ValueError, AttributeError):
        return "unreadable key"
    new = json.loads(trajectory_key(cfg, seed))
    new = {**new["config"], "seed": new["seed"]}
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(diffs) or "unreadable key"


class Engine:
    """Runs a step function from step 0 (or the checkpoint's step) to ``cfg.steps``; see the module docstring.

    ``history`` is an empty :class:`Records` (its class is what a checkpoint is read back as); after a
    resume ``engine.history`` and ``engine.start`` hold the checkpoint's. ``seed`` fixes the minibatch order.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        history: Records,
        *,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        progress: bool | str = False,
    ) -> None:
        self.cfg, self.module, self.optimizer, self.history = cfg, module, optimizer, history
        self.seed, self.progress = seed, progress
        # taken before a resume: the checkpointed param groups hold the scheduled lr of their step
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.path = Path(checkpoint) if checkpoint is not None else None
        self.start = 0
        self._step_hooks: list[tuple[int, StepHook]] = []
        self._eval_hooks: list[tuple[int, EvalHook]] = []
        self._device = next(module.parameters(), torch.empty(0)).device
        if self.path is not None and self.path.exists():
            try:  # weights_only: plain data (tensors, numbers, lists, dicts) or nothing; a crafted pickle is refused
                state = torch.load(self.path, map_location=self._device, weights_only=True)
                written = state.get("trajectory")
            except Exception as exc:  # crafted, truncated or corrupt: refused alike
                raise CheckpointError.unreadable(self.path, exc) from exc
            # before anything is loaded into the model: another lr, schedule or batch order would go on from these
            # weights without a word (checkpoints from before this check carry no key and are trusted, as they were)
            if written is not None and written != trajectory_key(cfg, seed):
                raise CheckpointError(
                    f"checkpoint {self.path} was written under another training config ({_changed(written, cfg, seed)}"
                    "); delete it, or train with the config it was written under"
                )
            try:
                module.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                self.history = type(history).from_dict(state["history"])
                self.start = int(state["step"])
                torch.set_rng_state(state["torch_rng"].cpu())
                if "cuda_rng" in state and self._device.type == "cuda":  # dropout on CUDA draws from its own
                    torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self._device)
            except Exception as exc:  # another model's, or a state that does not fit: refused alike
                raise CheckpointError.unreadable(self.path, exc) from exc

    def on_step(self, fn: StepHook, every: int = 1) -> None:
        """Call ``fn(step)`` after the optimiser step that brings the step count to a multiple of ``every``."""
        self._step_hooks.append((_period(every), fn))

    def on_eval(self, fn: EvalHook, every: int = 1) -> None:
        """Call ``fn(step, metrics)`` at evaluations of a step that is a multiple of ``every`` or the last step.
        Hooks run in the order registered; ``fn`` may add metrics and returns True to stop training."""
        self._eval_hooks.append((_period(every), fn))

    def save(self, step: int) -> None:
        if self.path is not None:
            model, opt, history = self.module.state_dict(), self.optimizer.state_dict(), self.history.to_dict()
            state = {"model": model, "optimizer": opt, "step": step, "history": history}
            state["trajectory"] = trajectory_key(self.cfg, self.seed)
            rng = {"torch_rng": torch.get_rng_state()}
            if self._device.type == "cuda":
                rng["cuda_rng"] = torch.cuda.get_rng_state(self._device)
            save_checkpoint(self.path, state | rng)

    def _evaluate(self, step: int, measure: MeasureFn) -> bool:
        metrics = measure(step)
        stop = False
        for every, fn in self._eval_hooks:
            if step % every == 0 or step == self.cfg.steps:
                stop = bool(fn(step, metrics)) or stop
        record = {"step": step, **metrics}
        records = self.history.records
        if records and records[-1]["step"] == step:  # a resumed run re-evaluates its checkpoint step
            records[-1] = record
        else:
            records.append(record)
        return stop

    def run(self, data: Batch, step_fn: StepFn, measure: MeasureFn) -> Any:
        """Train on ``data = (x, y)``: ``step_fn(step, xb, yb)`` takes optimiser step ``step`` (0-based) on its
        minibatch, ``measure(step)`` returns the metrics of an evaluation. Returns the finished history."""
        cfg, history = self.cfg, self.history
        if history.finished:
            return history
        x, y = data
        n = len(y)
        full_batch = cfg.batch_size is None or cfg.batch_size >= n
        bar = _Progress(self.progress, cfg.steps, self.start)
        t0 = time.perf_counter() - history.wall_time
        last_save = time.perf_counter()
        stopped = False
        # each submodule's flag is put back afterwards (a model passed in eval mode, or a frozen BatchNorm in it)
        modes = {m: m.training for m in self.module.modules()}
        self.module.train()
        step = self.start
        try:
            if step == 0 or not history.records or history.records[-1]["step"] != step:
                stopped = self._evaluate(step, measure)
            while step < cfg.steps and not stopped:
                f = lr_factor(step, cfg)
                for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                    g["lr"] = base * f
                if full_batch:
                    step_fn(step, x, y)
                else:
                    idx = batch_indices(n, cfg.batch_size, step, self.seed, x.device)  # type: ignore[arg-type]
                    step_fn(step, x[idx], y[idx])
                step += 1
                for every, fn in self._step_hooks:
                    if step % every == 0:
                        fn(step)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    stopped = self._evaluate(step, measure)
                    bar.update(step, history.records[-1])
                    if time.perf_counter() - last_save > cfg.checkpoint_seconds:
                        history.wall_time = time.perf_counter() - t0
                        self.save(step)
                        last_save = time.perf_counter()
        finally:
            bar.close()
            for m, flag in modes.items():
                m.training = flag
        history.finished = True
        history.stopped_early = stopped
        history.wall_time = time.perf_counter() - t0
        self.save(step if not stopped else history.records[-1]["step"])
        return history


class _Progress:
    """A rich progress bar that shows the latest accuracies (member means for an ensemble); silent when disabled."""

    def __init__(self, enabled: bool | str, total: int, start: int) -> None:
        self.p = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        label = enabled if isinstance(enabled, str) else "training"
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}")]
        columns += [TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        # stderr, as the sweep's bar: `phenomlab run ... > out.txt` keeps the bar on screen and the file clean
        self.p = Progress(*columns, transient=True, console=Console(stderr=True))
        self.p.start()
        self.task = self.p.add_task(label, total=total, completed=start, info="")

    def update(self, step: int, record: Mapping[str, Any]) -> None:
        if self.p is None:
            return
        shown = {k: v for k, v in record.items() if k.endswith("acc") or k == "train_objective"}
        info = " ".join(f"{k}={sum(v) / len(v) if isinstance(v, list) else v:.3f}" for k, v in shown.items())
        self.p.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
