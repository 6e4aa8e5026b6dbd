"""Edge of stability: full-batch gradient descent drives the sharpness up to 2/lr and holds it there.

Cohen, Kaur, Li, Kolter, Talwalkar 2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of
Stability" (arXiv 2103.00065).

Sharpness ``S_t = lambda_max(grad^2 L)`` of the full-batch training loss (Lanczos), measured every ``eval_every``
steps, and ``r_t = S_t / (2 / lr)``; the full-batch loss ``L_t`` at every step. Checks, for every lr in ``lrs``:
- rises to: ``r_0 <= RISE_MAX_RATIO`` (0.9);
- stays within 10%: the median of ``|r_t - 1|`` over the measurements with ``t >= steps / 2`` is ``<= BAND`` (0.1);
- the loss keeps falling: end loss (median over the last ``END_WINDOW`` of steps) ``<= LOSS_DROP_MAX`` (0.5) x the
  loss at the first measured step with ``r_t >= EDGE_REACH`` (0.9);
- non-monotonically: ``>= UP_FRAC_MIN`` (5%) of consecutive step pairs in the last half raise the loss.
Negative control (``control_small_lr``), the same pipeline at ``control_lr`` below every lr: median last-half
``|r_t - 1| > CONTROL_MIN_DEV`` (0.2, it does not hover at its own edge); end sharpness ``>= CONTROL_OVERSHOOT``
(1.2) x ``2 / min(lrs)`` (it climbs past the highest level where any lr hovers, so none of those levels is a natural
plateau; until 2026-12-04 this was ``2 / max(lrs)``, the lowest level); ``< UP_FRAC_MIN`` of its last-half steps
raise the loss.

Background, measurements and caveats: docs/phenomena/edge-of-stability.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, digits, mnist1d
from ..errors import ConfigError, TrainingDiverged
from ..models import MLP
from ..probes.curvature import top_hessian_eigenvalue
from ..train import TrainState, loss_fn, train
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "edge-of-stability"

# Thresholds are the or fixed a priori; quick preset, seeds 0-2, mean (seed std) per lr 0.05/0.075/0.1:
BAND = 0.1  # median |r - 1|: 0.030 (0.002) / 0.035 (0.0005) / 0.036 (0.001)
RISE_MAX_RATIO = 0.9  # r_0: 0.27 (0.01) / 0.40 (0.02) / 0.54 (0.02)
EDGE_REACH = 0.9  # the edge counts as reached at S >= 0.9 x 2/lr
LOSS_DROP_MAX = 0.5  # end loss / loss at the edge: 0.23 (0.02) / 0.12 (0.01) / 0.09 (0.01)
UP_FRAC_MIN = 0.05  # loss-increasing steps in the last half: 0.46 (0.02) / 0.47 (0.01) / 0.48 (0.02); control 0 (0)
END_WINDOW = 0.02  # end loss: median over the last 2% of steps (one step's loss at the edge is a spike or a dip)
CONTROL_MIN_DEV = 0.2  # twice the hovering band; control median |r - 1|: 0.49 (0.05)
# past the highest band (the smallest lr's); control end S / (2 / min lr): 1.46 (0.09), i.e. S / (2 / max lr)
# 2.92 (0.18) before the check moved from the lowest band to the highest (a review, 2026-12-04; 1.2 unchanged)
CONTROL_OVERSHOOT = 1.2
CONTROL_END_POINTS = 5  # end sharpness: median of the last 5 measurements


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(steps=5000, eval_every=20)):
    dataset: str = param("mnist1d", "mnist1d (40-dim) or sklearn digits (64-dim)", choices=("mnist1d", "digits"))
    n_train: int = param(1000, "training examples (the full batch)", gt=0)
    width: int = param(128, "MLP hidden width", gt=0)
    depth: int = param(2, "MLP hidden layers", ge=1)
    activation: str = param("tanh", "hidden activation", choices=("tanh", "relu", "gelu", "silu", "sigmoid"))
    loss: str = param(
        "mse", "training loss (MSE on one-hot targets, as in the paper's main runs)", choices=("mse", "cross_entropy")
    )
    lrs: tuple[float, ...] = param((0.05, 0.075, 0.1), "full-batch GD learning rates", gt=0.0)
    control_lr: float = param(0.02, "small learning rate of the negative control (must be below every lr)", gt=0.0)
    lanczos_iters: int = param(50, "max Lanczos steps per sharpness measurement", gt=1)
    lanczos_tol: float = param(1e-3, "relative Ritz residual at which Lanczos stops", gt=0.0, lt=1.0)

    def validate(self) -> None:
        super().validate()
        if not self.lrs:
            raise ConfigError("lrs must hold at least one learning rate")
        if len(set(self.lrs)) != len(self.lrs):
            raise ConfigError(f"lrs must be distinct, got {list(self.lrs)}")
        if self.control_lr >= min(self.lrs):
            raise ConfigError(f"control_lr={self.control_lr} must be below every lr (smallest {min(self.lrs)})")
        if self.eval_every > self.steps // 2:
            raise ConfigError(
                f"eval_every={self.eval_every} leaves no measurement in the last half of steps={self.steps}"
            )
        if self.dataset == "digits" and self.n_train > 1348:
            raise ConfigError(f"digits has 1348 training images, got n_train={self.n_train}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(dataset="digits", n_train=100, width=16, steps=40, eval_every=10, lrs=(0.05, 0.1), lanczos_iters=20),
    # 5000 steps: the lr=0.05 run reaches its edge only after ~1000 steps; it then spends four fifths of the run there
    "quick": {},
    # Cohen et al. 2021 fc-tanh: 2 hidden layers of width 200, 5k training examples, MSE, lrs 2/100..2/30;
    # CIFAR-10 is not shipped, so mnist1d stands in.
    "paper": {
        "n_train": 5000,
        "width": 200,
        "lrs": (0.02, 0.04, 2 / 30),
        "control_lr": 0.005,
        "steps": 10000,
        "eval_every": 50,
        "lanczos_iters": 100,
        "lanczos_tol": 1e-4,
    },
}


def _dataset(cfg: Config, seed: int) -> Dataset:
    if cfg.dataset == "mnist1d":
        return mnist1d(cfg.n_train, 100, seed=seed)
    return digits(seed=seed).subset_train(cfg.n_train, seed)


def _last_half_stats(steps: list[int], sharp: list[float], lr: float, total: int) -> dict[str, float | None]:
    thr = 2.0 / lr
    dev = [abs(s / thr - 1.0) for t, s in zip(steps, sharp, strict=True) if t >= total / 2]
    if not dev:
        return {"median_abs_dev": None, "frac_within": None}
    return {"median_abs_dev": statistics.median(dev), "frac_within": sum(d <= BAND for d in dev) / len(dev)}


def _loss_stats(
    steps: list[int], sharp: list[float], loss: list[float], lr: float, total: int
) -> dict[str, float | int | None]:
    """Loss numbers of one run; ``loss[t]`` is the full-batch loss at step ``t`` (one value per step).

    ``edge_step``: first measured step with ``S >= EDGE_REACH * 2/lr``; ``loss_ratio``: median loss over the last
    ``END_WINDOW`` of the steps over the loss at ``edge_step``; ``up_frac``: fraction of consecutive step pairs in the
    last half whose loss went up.
    """
    thr = 2.0 / lr
    edge = next((t for t, s in zip(steps, sharp, strict=True) if s >= EDGE_REACH * thr), None)
    half = [loss[t] for t in range(len(loss)) if t >= total / 2]
    pairs = list(zip(half, half[1:], strict=False))
    up = sum(b > a for a, b in pairs) / len(pairs) if pairs else None
    end = statistics.median(loss[-max(1, math.ceil(END_WINDOW * total)) :]) if loss else None
    ratio = None if edge is None or end is None or edge >= len(loss) else end / loss[edge]
    return {"edge_step": edge, "loss_ratio": ratio, "up_frac": up}


def _train_one(name: str, lr: float, cfg: Config, ctx: RunContext, ds: Dataset, data: Any, lf: Any) -> dict[str, Any]:
    torch.manual_seed(ctx.seed_for("init"))  # same init for every lr: only the step size differs
    model = MLP(ds.input_dim, ds.n_classes, cfg.width, cfg.depth, cfg.activation).to(ctx.device)
    warm: dict[str, torch.Tensor] = {}

    def sharpness(s: TrainState) -> dict[str, float]:
        # the loss is evaluated every step (non-monotonicity is a step-to-step property); Lanczos only every
        # eval_every steps, warm-started from the last top eigenvector: it turns slowly, so it converges in a few
        # products
        if s.step % cfg.eval_every and s.step != cfg.steps:
            return {}
        lam, vec = top_hessian_eigenvalue(
            s.model,
            lf,
            data,
            iters=cfg.lanczos_iters,
            tol=cfg.lanczos_tol,
            seed=ctx.seed_for("lanczos"),
            v0=warm.get("v"),
            return_vector=True,
        )
        warm["v"] = vec
        return {"sharpness": lam}

    tcfg = cfg.train_config(lr=lr, optimizer="sgd", momentum=0.0, batch_size=None, loss=cfg.loss, eval_every=1)
    diverged_at = None
    try:
        # RunContext.train would also log every per-step record to the store (a database transaction per step,
        # about a tenth of the quick preset's CPU time); the store gets the records at the sharpness steps only,
        # the result keeps the loss at every step
        def logger(step: int, metrics: Mapping[str, float]) -> None:
            if step % cfg.eval_every == 0 or step == cfg.steps:
                ctx.log(step, metrics, prefix=name)

        records = train(
            model,
            data,
            tcfg,
            callbacks=[sharpness],
            logger=logger,
            checkpoint=ctx.checkpoint_path(name),
            seed=ctx.seed_for("train", name),
            progress=name if ctx.progress else False,
        ).records
    except TrainingDiverged as exc:
        diverged_at, records = exc.step, []
    measured = [r for r in records if "sharpness" in r]
    steps = [int(r["step"]) for r in measured]
    sharp = [float(r["sharpness"]) for r in measured]
    loss = [float(r["train_loss"]) for r in records]
    if diverged_at is None:
        stats = {**_last_half_stats(steps, sharp, lr, cfg.steps), **_loss_stats(steps, sharp, loss, lr, cfg.steps)}
    else:
        stats = dict.fromkeys(("median_abs_dev", "frac_within", "edge_step", "loss_ratio", "up_frac"))
    return {
        "lr": lr,
        "threshold": 2.0 / lr,
        "steps": steps,
        "sharpness": sharp,
        "train_loss": loss,
        "train_acc": [float(r.get("train_acc", math.nan)) for r in measured],
        "initial_ratio": sharp[0] * lr / 2.0 if sharp else None,
        "max_ratio": max(sharp) * lr / 2.0 if sharp else None,
        "end_sharpness": statistics.median(sharp[-CONTROL_END_POINTS:]) if sharp else None,
        "diverged_at": diverged_at,
        **stats,
    }


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _dataset(cfg, ctx.seed_for("data")).to(ctx.device)
    data = ds.train()
    lf = loss_fn(cfg.loss)
    runs = [_train_one(f"gd_lr{i}", lr, cfg, ctx, ds, data, lf) for i, lr in enumerate(cfg.lrs)]
    control = _train_one("gd_control", cfg.control_lr, cfg, ctx, ds, data, lf)
    return {"runs": runs, "control": control, "total_steps": cfg.steps}


def signature(result: Result) -> Verdict:
    def pct(v: float | None) -> str:
        return fmt(None if v is None else 100 * v, ".0f")

    checks = []
    parts = []
    runs = result.data["runs"]
    for r in runs:
        lr = r["lr"]
        checks += [
            check(
                f"lr={lr:g}: initial sharpness / (2/lr)",
                r["initial_ratio"],
                "<=",
                RISE_MAX_RATIO,
                "sharpness starts >= 10% below 2/lr, so reaching it means it rose",
            ),
            check(
                f"lr={lr:g}: median |S/(2/lr) - 1| over last half",
                r["median_abs_dev"],
                "<=",
                BAND,
                "sharpness stays within 10% of 2/lr over the last half of training (median)",
            ),
            check(
                f"lr={lr:g}: end loss / loss when S first reached {EDGE_REACH:g} x 2/lr",
                r["loss_ratio"],
                "<=",
                LOSS_DROP_MAX,
                "the loss keeps falling at the edge: it at least halves after the sharpness arrives there",
            ),
            check(
                f"lr={lr:g}: fraction of loss-increasing steps in last half",
                r["up_frac"],
                ">=",
                UP_FRAC_MIN,
                "and falls non-monotonically (gradient descent below the edge decreases the loss every step)",
            ),
        ]
        if r["diverged_at"] is not None:
            parts.append(f"lr={lr:g}: diverged at step {r['diverged_at']}")
        else:
            parts.append(
                f"lr={lr:g}: 2/lr={r['threshold']:.1f}, S_0/(2/lr)={r['initial_ratio']:.2f}, median dev "
                f"{fmt(r['median_abs_dev'])}, {pct(r['frac_within'])}% within 10%, "
                f"loss ratio {fmt(r['loss_ratio'])}, {pct(r['up_frac'])}% steps up"
            )
    c = result.data["control"]
    lr_min = min(r["lr"] for r in runs)
    clr = c["lr"]
    end_over_edge = None if c["end_sharpness"] is None else c["end_sharpness"] * lr_min / 2.0
    checks += [
        check(
            f"control_small_lr (lr={clr:g}): median |S/(2/lr) - 1| over last half",
            c["median_abs_dev"],
            ">",
            CONTROL_MIN_DEV,
            "a small step size keeps the sharpness well below its own 2/lr: the hovering is set by lr",
        ),
        check(
            f"control_small_lr (lr={clr:g}): end sharpness / (2/lr_min)",
            end_over_edge,
            ">=",
            CONTROL_OVERSHOOT,
            "and rises past the highest edge where an lr hovers (the smallest lr's): no edge is a natural plateau",
        ),
        check(
            f"control_small_lr (lr={clr:g}): fraction of loss-increasing steps in last half",
            c["up_frac"],
            "<",
            UP_FRAC_MIN,
            "below the edge gradient descent decreases the loss (almost) every step",
        ),
    ]
    if c["diverged_at"] is not None:
        parts.append(f"control lr={clr:g}: diverged at step {c['diverged_at']}")
    else:
        parts.append(
            f"control lr={clr:g}: median dev {fmt(c['median_abs_dev'])}, end S/(2/lr_max) {fmt(end_over_edge)}, "
            f"{pct(c['up_frac'])}% steps up"
        )
    return Verdict(checks, "; ".join(parts))


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    runs = result.data["runs"]
    control = result.data.get("control")
    total = result.data["total_steps"]
    fig, (ax, bx) = new_figure(ncols=2, width=5.5, height=4.0)
    series = [(f"C{i}", f"lr={r['lr']:g}", r) for i, r in enumerate(runs)]
    if control is not None:
        series.append(("grey", f"control lr={control['lr']:g}", control))
    for c, label, r in series:
        ax.plot(r["steps"], r["sharpness"], color=c, lw=1.2, label=label)
        if r is not control:
            ax.axhline(r["threshold"], color=c, ls="--", lw=0.9)
        loss = r["train_loss"]
        bx.plot(range(len(loss)), loss, color=c, lw=0.6, label=label)
    ax.axvspan(total / 2, total, color="grey", alpha=0.08, label="last half (judged)")
    ax.set_xlabel("GD step")
    ax.set_ylabel("sharpness  lambda_max(Hessian)")
    ax.set_title(
        f"sharpness; dashed: 2/lr (control's 2/lr={control['threshold']:.0f} off scale)"
        if control
        else "sharpness; dashed: 2/lr"
    )
    ax.legend(fontsize=8)
    bx.set_yscale("log")
    bx.set_xlabel("GD step")
    bx.set_ylabel(f"training loss ({result.config['loss']}), every step")
    bx.set_title("full-batch training loss")
    bx.legend(fontsize=8)
    return [save(fig, out_dir, "sharpness")]
