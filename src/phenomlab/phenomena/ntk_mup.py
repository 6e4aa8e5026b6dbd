"""Lazy NTK training vs muP feature learning: the kernel freezes with width under NTK parametrisation, not under
muP, and muP's loss-optimal learning rate transfers across widths where standard parametrisation's drifts.

Jacot, Gabriel & Hongler 2018 (arXiv 1806.07572) and Lee et al. 2019 (arXiv 1902.06720): in NTK parametrisation
the empirical NTK moves by O(1/sqrt(width)) during training (the relative change falls with slope ~ -0.5 in
log-log). Yang & Hu 2021 (Tensor Programs IV, arXiv 2011.14522): under the maximal-update parametrisation (muP)
features, and so the kernel, keep moving at every width. Yang et al. 2021 (Tensor Programs V, arXiv 2203.03466,
Fig. 1): under standard parametrisation (SP) the training-loss-optimal Adam learning rate shifts with width; under
muP it is stable (muTransfer). The parametrisations are :mod:`phenomlab.models.parametrisation` (checked against
Microsoft's ``mup`` package in the tests).

Protocol (mnist1d, MLPs with ``depth`` hidden layers, widths ``widths``, muP base width = the narrowest):

- kernel: full-batch GD on MSE (one-hot targets) on ``kernel_train`` points; NTK parametrisation at ``ntk_lr``,
  muP at ``mup_kernel_lr`` (both train: the loss ratio is checked); relative change
  ``||Theta_T - Theta_0||_F / ||Theta_0||_F`` of the empirical NTK (``probes.empirical_ntk``, trace over outputs)
  on ``kernel_points`` held-out inputs; log-log slope against width;
- transfer: for SP and muP, per width one ensemble of the same initialisation trained with Adam at every learning
  rate of the grid ``2^lr_exponents`` (``train_ensemble``, per-member learning-rate scales, per-layer muP
  learning rates as optimiser groups; muP's readout multiplier folded into init and learning rate, exact for Adam:
  ``models.parametrisation.fold_multipliers``); final training loss; the optimum refined by a parabola in
  log2(lr) through the grid minimum and its neighbours; drift = largest / smallest optimum over widths;
- coordinate check: ``probes.coord_check`` for SP and muP after ``coord_steps`` Adam steps; growth = the largest
  log-log slope of mean |activation| against width over layers and steps >= 1.

Checks (thresholds from the issue and the design notes; quick preset, seeds 0-2: mean +- seed std in brackets):
- ``ntk_change_slope``: NTK-parametrisation kernel change slope in [``SLOPE_LO``, ``SLOPE_HI``] = [-0.7, -0.3];
- ``control_mup_kernel_moves`` (control: muP must not freeze): muP change at the widest / narrowest width >= 0.5;
- ``kernel_training``: worst final / initial training loss of the kernel runs <= 0.7 (the kernels moved under
  real training, not a stalled one);
- ``mup_lr_drift``: muP optimum drift <= 2x; ``control_sp_lr_drift`` (control: SP must not transfer) >= 4x;
- ``mup_coord_growth`` <= 0.2 and ``control_sp_coord_growth`` >= 0.3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.synthetic import mnist1d
from ..errors import ConfigError
from ..models import MLP
from ..models.ensemble import copies_param_groups
from ..models.parametrisation import make_optimizer, parametrise
from ..probes.coords import coord_check, coord_slopes
from ..probes.kernels import empirical_ntk, kernel_change
from ..train.engine import TrainConfig
from ..train.ensemble import MLPEnsemble, train_ensemble
from ._stats import fmt, loglog_slope, lr_drift
from .config import PhenomenonConfig, param
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "ntk-mup"
#: builds its tensors and models on the CPU whatever the run's device (not ported to accelerators)
RUNS_ON_CPU = True

#: the NTK-parametrisation slope window (issue; Lee et al. 2019 report -0.5). Seeds 0-2: see docs/phenomena/ntk-mup.md
SLOPE_LO, SLOPE_HI = -0.7, -0.3
#: muP's kernel change at the widest width relative to the narrowest (design notes)
CONTROL_MIN_KERNEL_RATIO = 0.5
#: the kernel runs must train: final / initial full-batch loss
MAX_KERNEL_LOSS_RATIO = 0.7
#: optimal-lr drift across widths: muP <= 2x (one grid step), SP >= 4x (two grid steps) (issue)
MAX_MUP_DRIFT = 2.0
MIN_SP_DRIFT = 4.0
#: coordinate check growth exponents (design notes: flat under muP, slope > 0.3 under SP)
MAX_MUP_GROWTH = 0.2
MIN_SP_GROWTH = 0.3


@dataclass(frozen=True)
class Config(PhenomenonConfig):
    widths: tuple[int, ...] = param((64, 128, 256, 512), "hidden widths (increasing; the first is muP's base)", gt=0)
    depth: int = param(2, "hidden layers", ge=1)
    n_train: int = param(4000, "mnist1d training examples (transfer part)", gt=0)
    kernel_train: int = param(512, "training examples of the kernel runs (full batch)", gt=0)
    kernel_points: int = param(32, "held-out inputs the NTK is measured on", ge=2)
    kernel_steps: int = param(300, "GD steps of the kernel runs", gt=0)
    ntk_lr: float = param(0.4, "GD learning rate under NTK parametrisation", gt=0.0)
    mup_kernel_lr: float = param(0.05, "GD learning rate under muP in the kernel runs", gt=0.0)
    lr_exponents: tuple[int, ...] = param(tuple(range(-11, -1)), "Adam learning rates 2^e (consecutive)")
    transfer_steps: int = param(300, "Adam steps of the transfer runs", gt=0)
    batch_size: int = param(128, "minibatch of the transfer runs", gt=0)
    coord_steps: int = param(4, "Adam steps of the coordinate check", gt=0)
    coord_lr: float = param(2.0**-6, "Adam learning rate of the coordinate check", gt=0.0)
    transfer_optimizer: str = param("adam", "optimiser of the transfer runs: adam or sgd", choices=("adam", "sgd"))
    mup_zero_readout: bool = param(True, "zero-initialise muP's readout in the transfer runs (TP V, App. D.2)")

    def validate(self) -> None:
        super().validate()
        w, e = self.widths, self.lr_exponents
        if len(w) < 3 or any(b <= a for a, b in zip(w, w[1:], strict=False)):
            raise ConfigError(f"widths must hold at least 3 strictly increasing widths, got {list(w)}")
        if len(e) < 3 or any(b != a + 1 for a, b in zip(e, e[1:], strict=False)):
            raise ConfigError(f"lr_exponents must be at least 3 consecutive integers, got {list(e)}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        widths=(8, 16, 32),
        n_train=256,
        kernel_train=64,
        kernel_points=8,
        kernel_steps=10,
        lr_exponents=(-8, -7, -6),
        transfer_steps=10,
        coord_steps=2,
    ),
    "quick": {},
    "paper": dict(widths=(64, 128, 256, 512, 1024, 2048), depth=3, n_train=10000, transfer_steps=1000),
}


def _mlp(cfg: Config, in_dim: int, width: int, seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(in_dim, 10, width=width, depth=cfg.depth)


def kernel_runs(cfg: Config, ctx: RunContext, scheme: str, data: Any) -> list[dict[str, float]]:
    """Per width: the relative NTK change and the loss ratio of one full-batch GD run under ``scheme``."""
    x, y = data.x_train[: cfg.kernel_train], data.y_train[: cfg.kernel_train]
    xk = data.x_test[: cfg.kernel_points]
    lr = cfg.ntk_lr if scheme == "ntk" else cfg.mup_kernel_lr
    base = MLP(x.shape[1], 10, width=cfg.widths[0], depth=cfg.depth)
    rows = []
    for w in cfg.widths:

        def work(w: int = w) -> dict[str, float]:
            model = _mlp(cfg, x.shape[1], w, ctx.seed_for("init", w))
            parametrise(model, scheme, base=base)
            k0 = empirical_ntk(model, xk, method="jacobian")
            tcfg = TrainConfig(steps=cfg.kernel_steps, lr=lr, optimizer="sgd", loss="mse", eval_every=cfg.kernel_steps)
            hist = ctx.train(f"kernel_{scheme}_w{w}", model, (x, y), tcfg)
            losses = hist.column("train_loss")
            return {
                "width": w,
                "change": kernel_change(k0, empirical_ntk(model, xk, method="jacobian")),
                "loss_ratio": losses[-1] / losses[0],
            }

        rows.append(ctx.cached(f"kernel_{scheme}_w{w}", work))
    return rows


def transfer_runs(cfg: Config, ctx: RunContext, scheme: str, data: Any) -> list[dict[str, Any]]:
    """Per width: the final training loss at every learning rate of the grid (one ensemble per width)."""
    x, y = data.x_train[: cfg.n_train], data.y_train[: cfg.n_train]
    lrs = [2.0**e for e in cfg.lr_exponents]
    base = MLP(x.shape[1], 10, width=cfg.widths[0], depth=cfg.depth)
    rows = []
    for w in cfg.widths:

        def work(w: int = w) -> dict[str, Any]:
            model = _mlp(cfg, x.shape[1], w, ctx.seed_for("init", w))
            opt_name = cfg.transfer_optimizer
            rules = parametrise(model, scheme, base=base, fold_for=opt_name).rules
            if scheme == "mup" and cfg.mup_zero_readout:
                with torch.no_grad():
                    model.out.weight.zero_()
            ens = MLPEnsemble.from_models([model] * len(lrs))
            groups = copies_param_groups(ens, rules, opt_name, lrs[0])
            opt = torch.optim.Adam(groups, lr=lrs[0]) if opt_name == "adam" else torch.optim.SGD(groups, lr=lrs[0])
            tcfg = TrainConfig(
                steps=cfg.transfer_steps,
                lr=lrs[0],
                optimizer="adam",
                batch_size=cfg.batch_size,
                eval_every=cfg.transfer_steps,
            )
            hist = train_ensemble(
                ens,
                (x, y),
                tcfg,
                optimizer=opt,
                lr_scale=[lr / lrs[0] for lr in lrs],
                on_nan="continue",
                seed=ctx.seed_for("batches", w),
                checkpoint=ctx.checkpoint_path(f"transfer_{scheme}_w{w}"),
            )
            losses = [v if math.isfinite(v) else float("inf") for v in hist.last("train_loss")]
            return {"width": w, "losses": losses}

        rows.append(ctx.cached(f"transfer_{scheme}_w{w}", work))
    return rows


def coord_rows(cfg: Config, ctx: RunContext, scheme: str, data: Any) -> list[dict[str, Any]]:
    x, y = data.x_train[:256], data.y_train[:256]
    base = MLP(x.shape[1], 10, width=cfg.widths[0], depth=cfg.depth)
    models = {}
    for w in cfg.widths:
        models[w] = _mlp(cfg, x.shape[1], w, ctx.seed_for("init", w))
        parametrise(models[w], scheme, base=base)
    layers = [f"act{i}" for i in range(1, cfg.depth + 1)] + ["out"]
    return coord_check(models, (x, y), lambda m: make_optimizer(m, "adam", cfg.coord_lr), layers, cfg.coord_steps)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data = mnist1d(
        n_train=max(cfg.n_train, cfg.kernel_train), n_test=max(cfg.kernel_points, 100), seed=ctx.seed_for("data")
    )
    return {
        "widths": list(cfg.widths),
        "lr_exponents": list(cfg.lr_exponents),
        "kernel": {s: kernel_runs(cfg, ctx, s, data) for s in ("ntk", "mup")},
        "transfer": {s: transfer_runs(cfg, ctx, s, data) for s in ("sp", "mup")},
        "coords": {s: ctx.cached(f"coords_{s}", lambda s=s: coord_rows(cfg, ctx, s, data)) for s in ("sp", "mup")},
    }


def drift(d: dict[str, Any], scheme: str) -> tuple[float | None, list[float | None]]:
    """Largest / smallest optimal learning rate over widths, and the per-width log2 optima."""
    return lr_drift(d["lr_exponents"], [r["losses"] for r in d["transfer"][scheme]])


def growth(rows: list[dict[str, Any]]) -> float:
    return max(r["slope"] for r in coord_slopes(rows) if r["step"] >= 1)


def signature(result: Result) -> Verdict:
    d = result.data
    widths = d["widths"]
    ntk, mup = d["kernel"]["ntk"], d["kernel"]["mup"]
    ntk_slope = loglog_slope(widths, [r["change"] for r in ntk])
    mup_ratio = mup[-1]["change"] / mup[0]["change"] if mup[0]["change"] > 0 else None
    loss_ratio = max(r["loss_ratio"] for r in ntk + mup)
    sp_drift, sp_opts = drift(d, "sp")
    mup_drift, mup_opts = drift(d, "mup")
    sp_growth, mup_growth = growth(d["coords"]["sp"]), growth(d["coords"]["mup"])
    checks = [
        check("ntk_change_slope", ntk_slope, ">=", SLOPE_LO, "log-log slope of the NTK change vs width (NTK param)"),
        check("ntk_change_slope_upper", ntk_slope, "<=", SLOPE_HI, "the same slope: the kernel freezes"),
        check(
            "control_mup_kernel_moves",
            mup_ratio,
            ">=",
            CONTROL_MIN_KERNEL_RATIO,
            f"muP kernel change at width {widths[-1]} / at {widths[0]}: features keep moving",
        ),
        check("kernel_training", loss_ratio, "<=", MAX_KERNEL_LOSS_RATIO, "worst final / initial loss, kernel runs"),
        check(
            "mup_lr_drift", mup_drift, "<=", MAX_MUP_DRIFT, "largest / smallest loss-optimal Adam lr over widths, muP"
        ),
        check("control_sp_lr_drift", sp_drift, ">=", MIN_SP_DRIFT, "the same under SP: the optimum moves"),
        check("mup_coord_growth", mup_growth, "<=", MAX_MUP_GROWTH, "largest coord-check slope vs width, muP"),
        check("control_sp_coord_growth", sp_growth, ">=", MIN_SP_GROWTH, "the same under SP: activations grow"),
    ]

    def opts(o: list[float | None]) -> str:
        return ", ".join(fmt(v, ".1f") for v in o)

    summary = (
        f"NTK change slope {fmt(ntk_slope, '.2f')} (NTK param), muP change ratio {fmt(mup_ratio, '.2f')}; "
        f"log2 optimal lr over widths SP [{opts(sp_opts)}] (drift {fmt(sp_drift, '.1f')}x), "
        f"muP [{opts(mup_opts)}] (drift {fmt(mup_drift, '.1f')}x); coord growth SP {fmt(sp_growth, '.2f')}, "
        f"muP {fmt(mup_growth, '.2f')}"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    widths = d["widths"]
    fig, axes = new_figure(ncols=3, width=5.0, height=4.0)
    ax = axes[0]
    for scheme, color in (("ntk", "C0"), ("mup", "C1")):
        ch = [r["change"] for r in d["kernel"][scheme]]
        s = loglog_slope(widths, ch)
        ax.plot(widths, ch, "o-", color=color, label=f"{scheme}: slope {fmt(s, '.2f')}")
    ax.set(xscale="log", yscale="log", xlabel="width", ylabel="||Θ_T-Θ_0||/||Θ_0||", title="NTK change")
    ax.legend(fontsize=7)
    ax = axes[1]
    for scheme, ls in (("sp", "--"), ("mup", "-")):
        _, o = drift(d, scheme)
        for i, r in enumerate(d["transfer"][scheme]):
            color = f"C{i}"
            ax.plot(d["lr_exponents"], r["losses"], ls, color=color, lw=1, label=f"{scheme} w={r['width']}")
            if o[i] is not None:
                ax.axvline(o[i], color=color, ls=ls, lw=0.5)
    ax.set(yscale="log", xlabel="log2 Adam lr", ylabel="final train loss", title="lr transfer (SP dashed)")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    for scheme, ls in (("sp", "--"), ("mup", "-")):
        rows = [r for r in d["coords"][scheme] if r["step"] == max(q["step"] for q in d["coords"][scheme])]
        for j, layer in enumerate(dict.fromkeys(r["layer"] for r in rows)):
            pts = [(r["width"], r["l1"]) for r in rows if r["layer"] == layer]
            ax.plot(*zip(*pts, strict=True), ls, marker="o", color=f"C{j}", label=f"{scheme} {layer}")
    ax.set(xscale="log", yscale="log", xlabel="width", ylabel="mean |h| after the last step", title="coord check")
    ax.legend(fontsize=6)
    return [save(fig, out_dir, "ntk_mup")]
