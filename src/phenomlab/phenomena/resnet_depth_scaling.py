"""ResNet depth scaling: trained weights are a smooth function of k/L only under a smooth init with delta_L = 1/L.

Cohen, Cont, Rossier & Xu (2021), "Scaling Properties of Deep Residual Networks", ICML, arXiv 2105.12245; Marion,
Fermanian, Biau & Vert, "Scaling ResNets in the Large-depth Regime", arXiv 2206.06929. For residual nets
``h_{k+1} = h_k + delta_L sigma(A_k h_k + b_k)`` (``phenomlab.models.resnet``) the neural-ODE picture needs the trained
weights ``A_k`` to be samples of a smooth path ``A(k/L)``: then the roughness ``max_k ||A_{k+1} - A_k||_F`` falls as
``1/L``. Cohen et al. find trained weights rough (not ODE-like) from i.i.d. inits; Marion et al. show that
``delta_L = 1/L`` with a smooth (correlated) init keeps the weights smooth through training.

Protocol: width ``width``, depths ``depths``, tanh; a fixed regression task (``n_points`` Gaussian inputs, target a
sum of ``tanh`` ridges, standardised); for each depth ``inits`` nets per arm trained together (stacked) by full-batch
GD on the MSE of the residual blocks' ``A_k, b_k`` (embedding and read-out fixed), step ``lr / (L delta_L^2)`` so
every depth takes the same function-space step (Gauss-Newton scale ``L delta_L^2``). Arms: ``smooth`` init with
``delta_L = 1/L`` (the ODE regime) and the negative control ``iid`` init with the same ``delta_L = 1/L`` (only the
correlation of the init across layers differs; every layer's marginal law is the same). Measured per net after
training: roughness ``R = sqrt(mean_k ||A_{k+1}(T) - A_k(T)||_F^2)`` (root-mean-square over layers; ``max_k`` with
``roughness="max"``), largest increment ``max_k ||A_k(T) - A_k(0)||_F`` and the roughness ``R`` of the increments
``dA_k = A_k(T) - A_k(0)``. Log-log slopes vs ``L`` of the per-depth means over inits, 95% CIs by resampling the inits
of each depth (fixed bootstrap generator).

Checks, at GD step ``check_step`` (the end of training by default; thresholds from the issue):
- ``roughness_slope_smooth`` <= ``MAX_SMOOTH_SLOPE`` (-0.7): smooth init, ``delta_L = 1/L``, trained weights;
- ``update_roughness_slope_smooth`` <= ``MAX_SMOOTH_SLOPE``: the smooth arm's training updates are smooth in ``k/L``
  too (not only its init, whose roughness is exactly ``~1/L``);
- ``control_roughness_slope_iid`` >= ``MIN_ROUGH_SLOPE`` (-0.3): i.i.d. init, same ``delta_L``: rough weights
  (dominated by the init, which training barely changes);
- ``control_increment_roughness_slope_iid`` >= ``MIN_ROUGH_SLOPE`` (-0.3): the i.i.d. arm's training updates are
  rough too (not set by the init);
- ``train_loss_ratio``: worst step-``check_step`` / initial training loss over all nets <= ``MAX_LOSS_RATIO`` (0.5).
Reported with CIs, not checked: the increment exponent (both arms ~0: the depth-independent function-space step makes
every layer move O(1)) and the max-over-layers slopes. The root-mean-square statistic was pre-registered on
2026-12-05: training gives the limit path steep features at a few layer times ``k/L``, where its slope can keep
growing up to L = 1024, so the max over layers need not converge while ``L * R`` does (a limit in ``H^1``). See
docs/phenomena/resnet-depth-scaling.md for the diagnosis and the measured seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..models.resnet import StackedResNet, max_layer_norm, rms_roughness, roughness
from ._stats import fmt, fmt_ci, loglog_slope_ci
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "resnet-depth-scaling"

#: ODE-like: roughness slope <= -0.7 (issue; 1/L smoothness gives -1)
MAX_SMOOTH_SLOPE = -0.7
#: rough: slope >= -0.3 (issue; i.i.d. layers give 0)
MIN_ROUGH_SLOPE = -0.3
#: every net must at least halve its training loss
MAX_LOSS_RATIO = 0.5
N_BOOT = 1000
CI_LEVEL = 0.95
ARMS = ("smooth", "iid")


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(lr=0.1, steps=200, eval_every=25)):
    width: int = param(32, "hidden width d of the residual stream", gt=0)
    depths: tuple[int, ...] = param((8, 16, 32, 64, 128, 256), "depths L (increasing, >= 2)", gt=1)
    inits: int = param(4, "initialisations per depth and arm (stacked, trained together)", ge=2)
    in_dim: int = param(8, "input dimension of the regression task", gt=0)
    n_points: int = param(128, "training points (full-batch GD)", gt=1)
    n_modes: int = param(3, "Fourier modes of the smooth init path A(t)", gt=0)
    activation: str = param("tanh", "sigma of the residual blocks", choices=("tanh", "relu"))
    check_step: int = param(200, "training step the checks read (a multiple of eval_every, <= steps)", gt=0)
    roughness: str = param(
        "rms",
        "statistic over layers the roughness checks read: 'rms' sqrt(mean_k ||.||^2) (pre-registered 2026-12-05) "
        "or 'max' max_k ||.|| (before)",
        choices=("rms", "max"),
    )

    def validate(self) -> None:
        super().validate()
        d = self.depths
        if len(d) < 2 or any(b <= a for a, b in zip(d, d[1:], strict=False)):
            raise ConfigError(f"depths must hold at least 2 strictly increasing depths, got {list(d)}")
        if self.check_step > self.steps or self.check_step % self.eval_every:
            raise ConfigError(
                f"check_step={self.check_step} must be <= steps={self.steps} and a multiple of "
                f"eval_every={self.eval_every}"
            )


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(depths=(4, 8, 16), inits=2, steps=10, eval_every=5, check_step=5, n_points=32),
    "quick": {},
    "paper": dict(depths=(8, 16, 32, 64, 128, 256, 512, 1024), inits=10, steps=400, eval_every=25, width=64),
}


def task(cfg: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[n, d_in]`` (standard Gaussian) and standardised targets ``sum_j tanh(2 u_j . x)`` (4 ridges)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.n_points, cfg.in_dim, generator=g)
    u = torch.randn(cfg.in_dim, 4, generator=g) / math.sqrt(cfg.in_dim)
    y = torch.tanh(2.0 * x @ u).sum(1)
    return x, (y - y.mean()) / y.std()


MEASURES = ("roughness", "increment", "increment_roughness", "roughness_rms", "increment_roughness_rms")


def train_arm(cfg: Config, depth: int, init: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, Any]:
    """Train ``cfg.inits`` stacked nets of one depth and init by full-batch GD; per-net measurements every
    ``eval_every`` steps (lists over evaluations of lists over nets)."""
    net = StackedResNet(
        cfg.in_dim,
        cfg.width,
        depth,
        cfg.inits,
        init,
        "1/L",
        cfg.activation,
        torch.Generator().manual_seed(seed),
        cfg.n_modes,
    ).to(x.device)
    A0 = net.A.detach().clone()
    # the Gauss-Newton scale of the residual blocks is L delta_L^2: this step moves the function equally at every L
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr / (depth * net.delta**2))
    out: dict[str, Any] = {"depth": depth, "init": init, "roughness0": roughness(A0).tolist(), "steps": [], "loss": []}
    out.update({m: [] for m in MEASURES})
    for step in range(cfg.steps + 1):
        loss = ((net(x) - y) ** 2).mean(1)  # [M]: the nets are independent, so summing gives each its own gradient
        if step % cfg.eval_every == 0 or step == cfg.steps:
            A = net.A.detach()
            out["steps"].append(step)
            out["loss"].append(loss.detach().tolist())
            out["roughness"].append(roughness(A).tolist())
            out["increment"].append(max_layer_norm(A - A0).tolist())
            out["increment_roughness"].append(roughness(A - A0).tolist())
            out["roughness_rms"].append(rms_roughness(A).tolist())
            out["increment_roughness_rms"].append(rms_roughness(A - A0).tolist())
        if step == cfg.steps:
            break
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return out


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    x, y = (t.to(ctx.device) for t in task(cfg, ctx.seed_for("data")))
    cells = []
    for init in ARMS:
        for L in cfg.depths:
            seed = ctx.seed_for("init", init, L)
            cells.append(
                ctx.cached(f"{init}_L{L}", lambda L=L, init=init, seed=seed: train_arm(cfg, L, init, x, y, seed))
            )
    return {"cells": cells, "depths": list(cfg.depths), "check_step": cfg.check_step, "roughness": cfg.roughness}


def _at(cell: dict[str, Any], key: str, step: int) -> list[float]:
    return cell[key][cell["steps"].index(step)]


def fits(d: dict[str, Any], step: int | None = None) -> dict[str, tuple]:
    """``{f"{measure}_{arm}": (depths, per-init values per depth, slope, (lo, hi))}`` at training step ``step``
    (default: the checked step)."""
    step = d["check_step"] if step is None else step
    out = {}
    for arm in ARMS:
        cells = sorted((c for c in d["cells"] if c["init"] == arm), key=lambda c: c["depth"])
        Ls = [c["depth"] for c in cells]
        for m in MEASURES:
            if m not in cells[0]:
                continue  # a result stored before the measure existed
            vals = [_at(c, m, step) for c in cells]
            out[f"{m}_{arm}"] = (Ls, vals, *slope_with_ci(Ls, vals))
    return out


def loss_ratio(d: dict[str, Any], step: int) -> float:
    """Worst (over all nets) training loss at ``step`` / at step 0."""
    return max(lt / l0 for c in d["cells"] for l0, lt in zip(c["loss"][0], _at(c, "loss", step), strict=True))


def slope_with_ci(xs: list[float], per_init: list[list[float]], seed: int = 0) -> tuple[float | None, tuple]:
    """Slope of log(mean over inits) vs log(L) and its ``CI_LEVEL`` bootstrap CI (inits resampled per depth)."""
    return loglog_slope_ci(xs, per_init, N_BOOT, CI_LEVEL, seed)


def _stat(d: dict[str, Any]) -> tuple[str, str]:
    """(measure-name suffix, formula) of the roughness statistic the checks read (``max`` for results stored before
    the ``roughness`` option existed)."""
    if d.get("roughness", "max") == "rms":
        return "_rms", "sqrt(mean_k ||{x}_{{k+1}} - {x}_k||^2)"
    return "", "max_k ||{x}_{{k+1}} - {x}_k||"


def signature(result: Result) -> Verdict:
    d = result.data
    f = fits(d)
    worst = loss_ratio(d, d["check_step"])
    sfx, form = _stat(d)
    w, u = form.format(x="A"), form.format(x="dA")
    checks = [
        check(
            "roughness_slope_smooth",
            f[f"roughness{sfx}_smooth"][2],
            "<=",
            MAX_SMOOTH_SLOPE,
            f"log-log slope of {w} (trained) vs L, smooth init, delta=1/L: ODE-like",
        ),
        check(
            "control_roughness_slope_iid",
            f[f"roughness{sfx}_iid"][2],
            ">=",
            MIN_ROUGH_SLOPE,
            "the same slope under i.i.d. init (same delta=1/L): rough, not ODE-like",
        ),
        check(
            "control_increment_roughness_slope_iid",
            f[f"increment_roughness{sfx}_iid"][2],
            ">=",
            MIN_ROUGH_SLOPE,
            f"slope of {u} (the training updates dA = A(T) - A(0)) vs L under i.i.d. init: rough updates",
        ),
        check("train_loss_ratio", worst, "<=", MAX_LOSS_RATIO, "worst final / initial training loss"),
    ]
    if sfx:
        # pre-registered with the rms statistic: training itself keeps the smooth arm smooth (not only its init)
        checks.insert(
            1,
            check(
                "update_roughness_slope_smooth",
                f[f"increment_roughness{sfx}_smooth"][2],
                "<=",
                MAX_SMOOTH_SLOPE,
                f"slope of {u} (the training updates) vs L, smooth init: the updates are smooth in k/L too",
            ),
        )

    def s(k: str) -> str:
        _, _, p, (lo, hi) = f[k]
        return fmt_ci(p, lo, hi, ".2f")

    summary = f"roughness statistic {w}: " if sfx else ""
    summary += (
        f"roughness slope: smooth {s(f'roughness{sfx}_smooth')}, iid {s(f'roughness{sfx}_iid')}; increment exponent: "
        f"smooth {s('increment_smooth')}, iid {s('increment_iid')}; increment roughness slope: smooth "
        f"{s(f'increment_roughness{sfx}_smooth')}, iid {s(f'increment_roughness{sfx}_iid')} ({int(CI_LEVEL * 100)}% "
        f"bootstrap CIs over inits); worst loss ratio {fmt(worst)}; all at step {d['check_step']}"
    )
    if sfx:
        # reported, not checked: the max over layers, which a few steep layers dominate at these depths
        summary += (
            f"; max_k statistic (unchecked): smooth {s('roughness_smooth')}, iid {s('roughness_iid')}, smooth updates "
            f"{s('increment_roughness_smooth')}"
        )
    last = d["cells"][0]["steps"][-1]
    if last != d["check_step"]:
        # reported, not checked: how the smooth arm's roughness slope evolves with longer training
        late = fits(d, last)[f"roughness{sfx}_smooth"]
        summary += f"; at step {last} (unchecked): smooth roughness slope {fmt(late[2], '.2f')}"
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import loglog_fit, new_figure, save

    d = result.data
    f = fits(d)
    sfx, form = _stat(d)
    fig, axes = new_figure(ncols=4, width=4.2, height=4.0)
    titles = {
        f"roughness{sfx}": form.format(x="A") + " (trained)",
        "increment": "max_k ||A_k(T) - A_k(0)||",
        f"increment_roughness{sfx}": form.format(x="dA"),
    }
    for ax, m in zip(axes[:3], titles, strict=True):
        for color, arm in zip(("C0", "C1"), ARMS, strict=True):
            Ls, vals, sl, (lo, hi) = f[f"{m}_{arm}"]
            loglog_fit(ax, Ls, vals, sl, (lo, hi), color, f"{arm}: slope {fmt_ci(sl, lo, hi, '.2f')}")
        if sfx and m != "increment":
            # the unchecked max over layers of the smooth arm, for comparison
            Ls, vals, sl, _ = f[f"{m.removesuffix(sfx)}_smooth"]
            ax.plot(
                Ls, [sum(v) / len(v) for v in vals], "x:", color="C2", label=f"smooth, max_k: slope {fmt(sl, '.2f')}"
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("depth L")
        ax.set_title(titles[m], fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[3]
    steps = [s for s in d["cells"][0]["steps"] if s > 0]
    for color, arm in zip(("C0", "C1"), ARMS, strict=True):
        rows = [fits(d, s)[f"roughness{sfx}_{arm}"] for s in steps]
        ax.plot(steps, [r[2] for r in rows], "o-", color=color, label=f"{arm}: roughness slope")
        lo = [r[3][0] if r[3][0] is not None else float("nan") for r in rows]
        hi = [r[3][1] if r[3][1] is not None else float("nan") for r in rows]
        ax.fill_between(steps, lo, hi, color=color, alpha=0.15)
    ax.axhline(MAX_SMOOTH_SLOPE, color="C0", ls=":", lw=0.8)
    ax.axhline(MIN_ROUGH_SLOPE, color="C1", ls=":", lw=0.8)
    ax.axvline(d["check_step"], color="grey", ls="--", lw=0.8)
    ax.set_xlabel("GD step")
    ax.set_title("roughness slope vs training time", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"ResNet depth scaling, delta=1/L, checked at step {d['check_step']} "
        f"({int(CI_LEVEL * 100)}% bootstrap CIs over inits)",
        fontsize=9,
    )
    return [save(fig, out_dir, "depth_scaling")]
