"""Train many small MLPs at once: the trainer of :class:`MLPEnsemble`, a step function on the engine.

The objective is the SUM over members of each member's mean loss, so member m's slice of the stacked
gradient is its standalone gradient and the elementwise optimisers act on each member independently;
clipping, learning-rate multipliers and divergence (a diverged member is frozen) are per member.
How, why and measured speed-ups: docs/ENSEMBLE.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, TrainingDiverged
from ..models.ensemble import BUCKET_OVERHEAD, MLPEnsemble, per_member_loss, plan_buckets
from .engine import Batch, Engine, Logger, Records, TrainConfig, callback_hook, evaluate_sets, named_sets
from .loop import make_optimizer


class EnsembleDiverged(TrainingDiverged):
    """A member's loss became NaN/inf: carries the member index (``member``) and the ``step``."""

    def __init__(self, step: int, member: int, value: float | None = None, width: int | None = None) -> None:
        self.member = member
        what = f"loss of ensemble member {member}" + (f" (width {width})" if width is not None else "")
        super().__init__(step, what, value)


@dataclass
class EnsembleHistory(Records):
    """Evaluation records: ``{"step": s, "train_loss": [M values], "test_err": [M values], ...}``.

    ``diverged`` maps a member index to the step where its loss became NaN/inf.
    """

    diverged: dict[int, int] = field(default_factory=dict)

    def _value(self, v: Any) -> list[float]:
        return list(v)

    def member(self, m: int) -> dict[str, list[float]]:
        """Member ``m``'s curves: ``{"step": [...], "test_err": [...], ...}``."""
        out: dict[str, list[float]] = {}
        for r in self.records:
            for k, v in r.items():
                out.setdefault(k, []).append(float(v) if k == "step" else float(v[m]))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "diverged": {str(k): v for k, v in self.diverged.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnsembleHistory:
        h = super().from_dict(d)
        h.diverged = {int(k): int(v) for k, v in d.get("diverged", {}).items()}
        return h


@torch.no_grad()
def evaluate_ensemble(
    ens: MLPEnsemble, data: Batch, loss: str = "cross_entropy", batch_size: int = 8192
) -> dict[str, list[float]]:
    """Per-member mean ``loss`` and, for class labels, ``acc`` and ``err = 1 - acc`` on ``data``."""
    was_training = ens.training
    ens.eval()
    x, y = data
    n = len(y)
    classes = y.dtype == torch.long
    tot = [torch.zeros(len(b.mask), device=x.device) for b in ens.buckets]
    cor = [torch.zeros(len(b.mask), dtype=torch.long, device=x.device) for b in ens.buckets]
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        for b, out in enumerate(ens.bucket_outputs(xb)):
            tot[b] += per_member_loss(out, yb, loss, reduction="sum")
            if classes:
                cor[b] += (out.argmax(2) == yb).sum(1)
    ens.train(was_training)
    res = {"loss": (ens.gather(tot) / max(n, 1)).tolist()}
    if classes:
        acc = [c / max(n, 1) for c in ens.gather(cor).tolist()]  # exact counts, as evaluate()
        res["acc"] = acc
        res["err"] = [1.0 - a for a in acc]
    return res


@dataclass
class EnsembleState:
    """What an ensemble callback sees at an evaluation step. Set ``stop = True`` to end training."""

    step: int
    ensemble: MLPEnsemble
    optimizer: torch.optim.Optimizer
    metrics: dict[str, list[float]]
    history: EnsembleHistory
    config: TrainConfig
    stop: bool = False


EnsembleCallback = Callable[[EnsembleState], Mapping[str, Sequence[float]] | None]


@torch.no_grad()
def clip_member_grads_(ens: MLPEnsemble, max_norm: float) -> torch.Tensor:
    """Clip each member's gradient to norm ``max_norm`` on its own (as ``clip_grad_norm_`` would on
    the standalone model: ``g *= min(1, max_norm / (||g_m|| + 1e-6))``); returns the ``[M]`` norms."""
    norms = []
    for bucket in ens.buckets:
        params = [p for p in bucket.parameters() if p.grad is not None]
        sq = sum(p.grad.pow(2).flatten(1).sum(1) for p in params)
        norm = torch.as_tensor(sq).sqrt()
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(coef.view(-1, *([1] * (p.grad.dim() - 1))))
        norms.append(norm)
    return ens.gather(norms)


@torch.no_grad()
def masked_step_(
    ens: MLPEnsemble, opt: torch.optim.Optimizer, scale: torch.Tensor | None, frozen: torch.Tensor
) -> None:
    """``opt.step()`` with member m's update times ``scale[m]`` (``p_m <- p_m + scale[m] (step(p)_m - p_m)``: a
    learning rate ``scale[m] lr``, see docs/ENSEMBLE.md) and the members where ``frozen`` is True left as they are."""
    params = [list(b.parameters()) for b in ens.buckets]
    before = [[p.clone() for p in ps] for ps in params]
    opt.step()
    scales = ens.split(scale) if scale is not None else [None] * len(params)
    for ps, olds, s, keep in zip(params, before, scales, ens.split(frozen), strict=True):
        for p, p0 in zip(ps, olds, strict=True):
            shape = (-1,) + (1,) * (p.dim() - 1)
            new = p if s is None else p0 + s.to(p).view(shape) * (p - p0)
            p.copy_(torch.where(keep.view(shape), p0, new))


def train_ensemble(
    ens: MLPEnsemble,
    train_data: Batch,
    cfg: TrainConfig,
    *,
    eval_sets: Mapping[str, Batch] | None = None,
    callbacks: Iterable[EnsembleCallback] = (),
    logger: Logger | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress: bool | str = False,
    on_nan: str = "raise",
    optimizer: torch.optim.Optimizer | None = None,
    lr_scale: Sequence[float] | torch.Tensor | None = None,
) -> EnsembleHistory:
    """Train every member of ``ens`` in place on ``train_data = (x, y)``; see docs/ENSEMBLE.md.

    ``cfg`` is the :class:`TrainConfig` of :func:`phenomlab.train.train` with the same meaning
    (optimiser, lr, schedule, weight decay, momentum, batch size, loss, ``grad_clip`` per member,
    ``eval_every``) and ``seed`` draws the same minibatch order, so each member follows the
    trajectory its standalone training would (up to float summation order). ``lr_scale[m]`` (>= 0)
    multiplies member ``m``'s learning rate (see :func:`masked_step_`).

    At step 0, every ``eval_every`` steps and at the end each member is evaluated on the training
    set and each of ``eval_sets``: record keys ``train_loss``, ``train_acc``, ``train_err``,
    ``{name}_loss``, ... each a list of M values. ``logger(step, metrics)`` gets them flattened as
    ``"{metric}/{member}"``.

    ``on_nan='raise'`` raises :class:`EnsembleDiverged` (member index and step) when a member's
    loss becomes NaN/inf; ``'continue'`` records ``history.diverged[member] = step``, freezes that
    member (its parameters stay as they were when its loss stopped being finite) and trains the others on.
    ``checkpoint``: resumable like :func:`phenomlab.train.train`.
    """
    cfg.validate()
    if cfg.optimizer == "sam":  # one perturbation per member would need per-member gradient norms
        raise ConfigError("optimizer 'sam' is not supported for ensembles; train the members with train()")
    if on_nan not in ("raise", "continue"):
        raise ConfigError(f"on_nan must be 'raise' or 'continue', got {on_nan!r}")
    x, y = train_data
    if len(y) == 0:
        raise ConfigError("training set is empty")
    device = next(ens.parameters()).device
    scale = None if lr_scale is None else torch.as_tensor(lr_scale, dtype=torch.float64).flatten().to(device)
    if scale is not None and (len(scale) != len(ens) or not bool(torch.isfinite(scale).all() and (scale >= 0).all())):
        raise ConfigError(f"lr_scale must hold {len(ens)} finite numbers >= 0, got {scale.tolist()}")
    # stacked tensors are few and large: the fused Adam kernel saves ~20% of a double-descent sweep's step
    opt = optimizer or make_optimizer(ens.parameters(), cfg, fused=True)
    sets = named_sets((x, y), eval_sets)
    engine = Engine(cfg, ens, opt, EnsembleHistory(), seed=seed, checkpoint=checkpoint, progress=progress)
    history = engine.history
    frozen = torch.zeros(len(ens), dtype=torch.bool, device=device)
    frozen[list(history.diverged)] = True

    def diverged(t: int, losses: list[float]) -> None:
        for m, v in enumerate(losses):
            if not math.isfinite(v) and m not in history.diverged:
                if on_nan == "raise":
                    raise EnsembleDiverged(t, m, v, ens.widths[m])
                history.diverged[m] = t
                frozen[m] = True

    def step(t: int, xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        losses = [per_member_loss(out, yb, cfg.loss) for out in ens.bucket_outputs(xb.flatten(1))]
        total = torch.cat(losses)
        if not bool(torch.isfinite(total).all()):
            diverged(t, ens.gather(losses).detach().tolist())
        total.sum().backward()
        if cfg.grad_clip is not None:
            clip_member_grads_(ens, cfg.grad_clip)
        if scale is None and not history.diverged:
            opt.step()
        else:
            masked_step_(ens, opt, scale, frozen)

    def measure(t: int) -> dict[str, list[float]]:
        metrics = evaluate_sets(sets, lambda d: evaluate_ensemble(ens, d, cfg.loss, cfg.eval_batch_size))
        diverged(t, metrics["train_loss"])
        return metrics

    state = functools.partial(EnsembleState, ensemble=ens, optimizer=opt, history=history, config=cfg)
    engine.on_eval(callback_hook(callbacks, state, lambda v: [float(a) for a in v]))
    if logger is not None:
        engine.on_eval(lambda t, m: logger(t, {f"{k}/{i}": val for k, vs in m.items() for i, val in enumerate(vs)}))
    return engine.run((x, y), step, measure)


__all__ = [
    "BUCKET_OVERHEAD",
    "EnsembleDiverged",
    "EnsembleHistory",
    "EnsembleState",
    "MLPEnsemble",
    "clip_member_grads_",
    "evaluate_ensemble",
    "masked_step_",
    "per_member_loss",
    "plan_buckets",
    "train_ensemble",
]
