"""Probabilistic stability of SGD: Lyapunov exponents, not moments, decide where SGD goes.

Ziyin, Li, Galanti, Ueda 2023, "The probabilistic stability of stochastic gradient descent" (arXiv 2303.13093).

Near the saddle ``theta = 0`` of a 2-layer tanh net SGD is ``theta_{t+1} = (I - lr H_t) theta_t``; along a
direction with minibatch curvature ``h``: ``Lambda = E log|1 - lr h|`` (converges in probability iff < 0) and
``M_2 = log E (1 - lr h)^2`` (second moment converges iff < 0), per (lr, batch size) cell and direction ``e+``
(correct) / ``e-`` (incorrect). Checks:
- measured exponents match the theory: ``sum |L_meas - L_th| / sum |L_th| <= LYAP_REL_TOL`` (0.05);
- at least one cell with ``max(M2+, M2-) > 0`` (theory) yet measured ``max(Lambda+, Lambda-) < 0``;
- each phase (correct learning, incorrect learning, low-rank saddle, loss of stability) labels at least one
  trained-net cell where the theory predicts that same phase.

Background, measurements and caveats: docs/phenomena/probabilistic-stability.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..models import MLP
from .config import PhenomenonConfig, param
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "probabilistic-stability"

PHASES = ("correct learning", "incorrect learning", "low-rank saddle", "loss of stability")
SHORT = {"correct learning": "C", "incorrect learning": "I", "low-rank saddle": "S", "loss of stability": "U"}

LYAP_REL_TOL = 0.05  # catalogue: measured exponent within 5% of E log|1 - lr h|
COLLAPSE_RATIO = 1e-3  # ||theta_T|| / ||theta_0|| at or below this: converged to the saddle
SIGN_CONSISTENCY = 0.8  # fraction of final-window evaluations with one sign of the learned slope
DIVERGED_NORM = 1e6


@dataclass(frozen=True)
class Config(PhenomenonConfig):
    n_data: int = param(256, "training points", ge=8)
    signal_fraction: float = param(0.15, "fraction p of points with y = signal_slope * x", gt=0.0, lt=1.0)
    signal_slope: float = param(8.0, "slope a of the signal points", gt=0.0)
    noise_slope: float = param(1.0, "the other points have y = -noise_slope * x", ge=0.0)
    width: int = param(8, "hidden units of the 2-layer tanh net", gt=0)
    lr_min: float = param(0.05, "smallest learning rate of the grid", gt=0.0)
    lr_max: float = param(5.0, "largest learning rate of the grid", gt=0.0)
    n_lr: int = param(14, "learning rates (log-spaced)", ge=2)
    batch_sizes: tuple[int, ...] = param((1, 2, 3, 4, 6, 8, 12, 16, 32, 64), "minibatch sizes", gt=0)
    lyap_steps: int = param(4000, "SGD steps of each measured Lyapunov exponent", gt=0)
    lyap_burn_in: int = param(0, "initial steps left out of the exponent", ge=0)
    theory_samples: int = param(50000, "minibatch means drawn for E_h[...] when B > 1", gt=0)
    train_steps: int = param(3000, "SGD steps of each trained net", gt=0)
    init_scale: float = param(1e-2, "std of the initial weights (near the saddle)", gt=0.0)
    grad_clip: float | None = param(1.0, "per-run gradient-norm clip of the trained nets (None: off)", gt=0.0)
    window: float = param(0.2, "final fraction of training used to label a run", gt=0.0, le=1.0)
    eval_every: int = param(10, "steps between slope evaluations in the final window", gt=0)

    def validate(self) -> None:
        super().validate()
        if self.lr_max <= self.lr_min:
            raise ConfigError(f"lr_max={self.lr_max} must exceed lr_min={self.lr_min}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes) or not self.batch_sizes:
            raise ConfigError(f"batch_sizes must be distinct and non-empty, got {self.batch_sizes}")
        if max(self.batch_sizes) > self.n_data:
            raise ConfigError(f"batch sizes must be <= n_data={self.n_data}, got {max(self.batch_sizes)}")
        if self.lyap_burn_in >= self.lyap_steps:
            raise ConfigError("lyap_burn_in must be < lyap_steps")
        if self.signal_fraction * self.signal_slope <= (1 - self.signal_fraction) * self.noise_slope:
            raise ConfigError(
                "need signal_fraction * signal_slope > (1 - signal_fraction) * noise_slope "
                "(a positive correlation E[xy] for 'correct learning' to refer to)"
            )


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        n_data=32,
        width=2,
        n_lr=3,
        lr_max=2.0,
        batch_sizes=(1, 4),
        lyap_steps=200,
        theory_samples=1000,
        train_steps=100,
        eval_every=5,
    ),
    "quick": {},
    # finer grid, more data, wider net, longer runs
    "paper": {
        "n_data": 1024,
        "width": 32,
        "n_lr": 24,
        "batch_sizes": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128),
        "lyap_steps": 20000,
        "theory_samples": 200000,
        "train_steps": 20000,
    },
}


# ---------------------------------------------------------------------------------------------
# data, theory
# ---------------------------------------------------------------------------------------------


def make_data(cfg: Config, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` float64: ``round(p N)`` points with ``y = a x``, the rest ``y = -b x``, shuffled."""
    g = torch.Generator().manual_seed(seed)
    n1 = int(round(cfg.signal_fraction * cfg.n_data))
    n1 = min(max(n1, 1), cfg.n_data - 1)
    x = torch.randn(cfg.n_data, generator=g, dtype=torch.float64)
    # unit mean square per group: E[xy] is then exactly p a - (1 - p) b, independent of the draw
    x[:n1] = x[:n1] / x[:n1].pow(2).mean().sqrt()
    x[n1:] = x[n1:] / x[n1:].pow(2).mean().sqrt()
    c = torch.cat([torch.full((n1,), cfg.signal_slope), torch.full((cfg.n_data - n1,), -cfg.noise_slope)])
    perm = torch.randperm(cfg.n_data, generator=g)
    return x[perm], (c.to(torch.float64) * x)[perm]


def batch_curvatures(m: torch.Tensor, batch_size: int, n_samples: int, g: torch.Generator) -> torch.Tensor:
    """Samples of the minibatch mean of ``m`` (with replacement); for ``B = 1`` the exact population."""
    if batch_size == 1:
        return m.clone()
    out = []
    chunk = max(1, 2_000_000 // batch_size)
    for start in range(0, n_samples, chunk):
        n = min(chunk, n_samples - start)
        idx = torch.randint(0, len(m), (n, batch_size), generator=g)
        out.append(m[idx].mean(1))
    return torch.cat(out)


def theory_phase(lam_plus: float, lam_minus: float) -> str:
    if lam_plus > 0 and lam_minus > 0:
        return "loss of stability"
    if lam_plus < 0 and lam_minus < 0:
        return "low-rank saddle"
    return "correct learning" if lam_plus >= lam_minus else "incorrect learning"


# ---------------------------------------------------------------------------------------------
# the net
# ---------------------------------------------------------------------------------------------


def _net(width: int) -> torch.nn.Module:
    """``f(x) = sum_j u_j tanh(w_j x)``: fc1.weight = w [width, 1], out.weight = u [1, width]."""
    return MLP(1, 1, width=width, depth=1, activation_name="tanh", bias=False).to(torch.float64)


def _sq_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out.reshape(-1) - y.reshape(-1)).pow(2).mean()


def per_sample_saddle_hessians(x: torch.Tensor, y: torch.Tensor, width: int) -> torch.Tensor:
    """Hessians ``[N, 2 width, 2 width]`` of each point's loss at ``theta = 0`` (parameter order w, u)."""
    from ..probes.curvature import full_hessian

    net = _net(width)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    hs = []
    for i in range(len(x)):
        h = full_hessian(net, _sq_loss, (x[i : i + 1, None], y[i : i + 1]))
        hs.append(0.5 * (h + h.T))  # exact symmetry keeps e+/e- invariant in floating point
    return torch.stack(hs)


def ensemble_forward(u: torch.Tensor, w: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """``f_r(x) = sum_j u_rj tanh(w_rj x)`` for runs ``r``: ``u, w [R, k]``, ``xb [R, n]`` -> ``[R, n]``."""
    return (u[:, None, :] * torch.tanh(w[:, None, :] * xb[..., None])).sum(-1)


def train_ensemble(
    x: torch.Tensor, y: torch.Tensor, lrs: np.ndarray, batch_sizes: tuple[int, ...], cfg: Config, g: torch.Generator
) -> dict[str, Any]:
    """Train one net per (lr, B) cell with SGD, all at once; label each from measured numbers.

    The nets are independent (the summed loss has block-diagonal gradients); runs with the same batch
    size share one tensor so no batch is padded.
    """
    n_lr, n_b = len(lrs), len(batch_sizes)
    R, k, N = n_lr * n_b, cfg.width, len(x)
    lr_run = torch.tensor(np.repeat(lrs, n_b), dtype=torch.float64)
    groups = [(B, torch.arange(j, R, n_b)) for j, B in enumerate(batch_sizes)]
    u = cfg.init_scale * torch.randn(R, k, generator=g, dtype=torch.float64)
    w = cfg.init_scale * torch.randn(R, k, generator=g, dtype=torch.float64)
    norm0 = torch.sqrt(u.pow(2).sum(1) + w.pow(2).sum(1))
    dead = torch.zeros(R, dtype=torch.bool)
    start_window = int(math.floor((1 - cfg.window) * cfg.train_steps))
    slopes, losses = [], []
    xx = float(x.pow(2).sum())
    for t in range(1, cfg.train_steps + 1):
        u.requires_grad_(True)
        w.requires_grad_(True)
        total = u.new_zeros(())
        for B, rows in groups:
            idx = torch.randint(0, N, (len(rows), B), generator=g)
            f = ensemble_forward(u[rows], w[rows], x[idx])
            total = total + 0.5 * (f - y[idx]).pow(2).mean(1).sum()
        gu, gw = torch.autograd.grad(total, (u, w))
        with torch.no_grad():
            scale = torch.ones(R, 1, dtype=torch.float64)
            if cfg.grad_clip is not None:
                gnorm = torch.sqrt(gu.pow(2).sum(1) + gw.pow(2).sum(1))
                scale = torch.clamp(cfg.grad_clip / gnorm.clamp_min(1e-300), max=1.0)[:, None]
            u = u.detach() - lr_run[:, None] * scale * gu
            w = w.detach() - lr_run[:, None] * scale * gw
            bad = ~(torch.isfinite(u).all(1) & torch.isfinite(w).all(1))
            bad |= (u.abs().amax(1) > DIVERGED_NORM) | (w.abs().amax(1) > DIVERGED_NORM)
            dead |= bad
            u[dead] = 0.0
            w[dead] = 0.0
            if t > start_window and (t % cfg.eval_every == 0 or t == cfg.train_steps):
                f = ensemble_forward(u, w, x.expand(R, N))
                slopes.append((f * x).sum(1) / xx)
                losses.append(0.5 * (f - y).pow(2).mean(1))
    normT = torch.sqrt(u.pow(2).sum(1) + w.pow(2).sum(1))
    S = torch.stack(slopes)  # [evals, R]
    frac_pos = (S > 0).double().mean(0)
    labels = []
    for r in range(R):
        if dead[r]:
            labels.append("loss of stability")
        elif normT[r] <= COLLAPSE_RATIO * norm0[r]:
            labels.append("low-rank saddle")
        elif frac_pos[r] >= SIGN_CONSISTENCY:
            labels.append("correct learning")
        elif frac_pos[r] <= 1 - SIGN_CONSISTENCY:
            labels.append("incorrect learning")
        else:
            labels.append("loss of stability")

    def grid(v: torch.Tensor | list[Any]) -> list[list[Any]]:
        flat = v.tolist() if isinstance(v, torch.Tensor) else list(v)
        return [flat[i * n_b : (i + 1) * n_b] for i in range(n_lr)]

    return {
        "net_phase": grid(labels),
        "net_slope": grid(torch.where(dead, torch.zeros_like(frac_pos), S.mean(0))),
        "net_frac_positive": grid(frac_pos),
        "net_norm_ratio": grid(torch.where(dead, torch.full_like(normT, math.inf), normT / norm0).clamp(max=1e300)),
        "net_diverged": grid(dead),
        "net_final_loss": grid(torch.where(dead, torch.full_like(normT, float("nan")), losses[-1]).nan_to_num(1e300)),
    }


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    from ..probes.stability import lyapunov_exponent, scalar_lyapunov, scalar_moment_rate, sgd_linear_jacobians

    x, y = make_data(cfg, ctx.seed_for("data"))
    m = x * y  # per-sample curvature of the saddle is -m along e+ and +m along e-
    lrs = np.geomspace(cfg.lr_min, cfg.lr_max, cfg.n_lr)
    bs = tuple(cfg.batch_sizes)
    lr_t = torch.tensor(lrs, dtype=torch.float64)

    def theory() -> dict[str, Any]:
        g = ctx.generator("theory")
        cols: dict[str, list[list[float]]] = {k: [] for k in ("lam_plus", "lam_minus", "m2_plus", "m2_minus")}
        for B in bs:
            mb = batch_curvatures(m, B, cfg.theory_samples, g)
            cols["lam_plus"].append(scalar_lyapunov(lr_t, -mb).tolist())
            cols["lam_minus"].append(scalar_lyapunov(lr_t, mb).tolist())
            cols["m2_plus"].append(scalar_moment_rate(lr_t, -mb, 2).tolist())
            cols["m2_minus"].append(scalar_moment_rate(lr_t, mb, 2).tolist())
        # stored [lr][batch]
        return {k: [list(r) for r in zip(*v, strict=True)] for k, v in cols.items()}

    th = ctx.cached("theory", theory)

    def measured() -> dict[str, Any]:
        H = per_sample_saddle_hessians(x, y, cfg.width)  # [N, 2k, 2k] from autograd on the real net
        k = cfg.width
        v_plus = torch.ones(2 * k, dtype=torch.float64)
        v_minus = torch.cat([torch.ones(k), -torch.ones(k)]).to(torch.float64)
        g = ctx.generator("lyapunov")
        lam_p = [[0.0] * len(bs) for _ in lrs]
        lam_m = [[0.0] * len(bs) for _ in lrs]
        for j, B in enumerate(bs):
            for i, lr in enumerate(lrs):
                idx = torch.randint(0, len(x), (cfg.lyap_steps, B), generator=g)
                J = sgd_linear_jacobians(H[idx].mean(1), float(lr))[cfg.lyap_burn_in :]
                lam_p[i][j] = lyapunov_exponent(J, v0=v_plus)
                lam_m[i][j] = lyapunov_exponent(J, v0=v_minus)
        return {"lam_plus": lam_p, "lam_minus": lam_m, "hessian_offdiag": float(H[:, 0, k].mean())}

    meas = ctx.cached("lyapunov", measured)
    net = ctx.cached("net", lambda: train_ensemble(x, y, lrs, bs, cfg, ctx.generator("net")))

    th_phase = [
        [theory_phase(p, q) for p, q in zip(rp, rq, strict=True)]
        for rp, rq in zip(th["lam_plus"], th["lam_minus"], strict=True)
    ]
    meas_phase = [
        [theory_phase(p, q) for p, q in zip(rp, rq, strict=True)]
        for rp, rq in zip(meas["lam_plus"], meas["lam_minus"], strict=True)
    ]
    return {
        "lrs": lrs.tolist(),
        "batch_sizes": list(bs),
        "mean_curvature": float(m.mean()),  # E[xy]; the least-squares slope since E[x^2] = 1
        "ls_slope": float((x * y).sum() / (x * x).sum()),
        "theory": th,
        "measured": {"lam_plus": meas["lam_plus"], "lam_minus": meas["lam_minus"]},
        "hessian_offdiag_mean": meas["hessian_offdiag"],
        "theory_phase": th_phase,
        "measured_phase": meas_phase,
        **net,
    }


# ---------------------------------------------------------------------------------------------
# signature
# ---------------------------------------------------------------------------------------------


def _flat(grid: list[list[Any]]) -> list[Any]:
    return [v for row in grid for v in row]


def lyapunov_relative_error(d: dict[str, Any]) -> float | None:
    th = _flat(d["theory"]["lam_plus"]) + _flat(d["theory"]["lam_minus"])
    me = _flat(d["measured"]["lam_plus"]) + _flat(d["measured"]["lam_minus"])
    pairs = [(a, b) for a, b in zip(me, th, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < len(th) or not pairs:
        return None  # a -inf exponent (an exactly singular step) makes the comparison meaningless
    denom = sum(abs(b) for _, b in pairs)
    return sum(abs(a - b) for a, b in pairs) / denom if denom > 0 else None


def moment_divergent_but_stable(d: dict[str, Any]) -> int:
    """Cells with ``max(M2+, M2-) > 0`` (theory, exact formula) and measured ``max(L+, L-) < 0``."""
    th, me = d["theory"], d["measured"]
    n = 0
    for i in range(len(d["lrs"])):
        for j in range(len(d["batch_sizes"])):
            m2 = max(th["m2_plus"][i][j], th["m2_minus"][i][j])
            lam = max(me["lam_plus"][i][j], me["lam_minus"][i][j])
            n += int(m2 > 0 and lam < 0)
    return n


def signature(result: Result) -> Verdict:
    d = result.data
    rel = lyapunov_relative_error(d)
    n_band = moment_divergent_but_stable(d)
    net, th = _flat(d["net_phase"]), _flat(d["theory_phase"])
    agree = sum(a == b for a, b in zip(net, th, strict=True)) / len(net)
    checks = [
        check(
            "lyapunov_rel_error",
            rel,
            "<=",
            LYAP_REL_TOL,
            "measured exponents of the net's linearised SGD vs E log|1 - lr h| (sum|diff| / sum|theory|)",
        ),
        check(
            "cells_M2>0_and_Lyapunov<0",
            n_band,
            ">=",
            1,
            "cells where the second moment diverges yet SGD converges in probability",
        ),
    ]
    counts = {}
    for ph in PHASES:
        counts[ph] = sum(a == ph and b == ph for a, b in zip(net, th, strict=True))
        checks.append(
            check(
                f"net_cells_{ph.replace(' ', '_')}",
                counts[ph],
                ">=",
                1,
                f"trained nets labelled '{ph}' where the Lyapunov theory predicts it",
            )
        )
    summary = (
        f"Lyapunov rel. error {_fmt(rel)}; {n_band} cells with diverging 2nd moment but Lyapunov < 0; "
        f"net/theory phase agreement {agree:.2f} over {len(net)} cells; matching cells: "
        + ", ".join(f"{SHORT[p]}={counts[p]}" for p in PHASES)
    )
    return Verdict(checks, summary)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def _edges(v: np.ndarray) -> np.ndarray:
    lv = np.log(v)
    mid = (lv[1:] + lv[:-1]) / 2
    return np.exp(np.concatenate([[2 * lv[0] - mid[0]], mid, [2 * lv[-1] - mid[-1]]]))


def plot(result: Result, out_dir: Path) -> list[Path]:
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..report.figures import new_figure, save

    d = result.data
    lrs, bs = np.array(d["lrs"]), np.array(d["batch_sizes"], dtype=float)
    th, me = d["theory"], d["measured"]
    lam_p, lam_m = np.array(th["lam_plus"]), np.array(th["lam_minus"])
    lam_top = np.maximum(lam_p, lam_m)
    m2_top = np.maximum(np.array(th["m2_plus"]), np.array(th["m2_minus"]))
    colors = ["#4daf4a", "#984ea3", "#377eb8", "#e41a1c"]
    cmap = ListedColormap(colors)
    code = {p: i for i, p in enumerate(PHASES)}
    X, Y = _edges(lrs), _edges(bs)
    paths = []

    # 1. phase diagrams: trained nets (labels in the cells) next to the linearised theory
    fig, axes = new_figure(ncols=2, width=6.0, height=4.6)
    for ax, key, title in (
        (axes[0], "net_phase", "trained 2-layer tanh nets"),
        (axes[1], "theory_phase", "theory: signs of E log|1 ± lr m|"),
    ):
        Z = np.array([[code[p] for p in row] for row in d[key]]).T
        ax.pcolormesh(X, Y, Z, cmap=cmap, vmin=-0.5, vmax=3.5, shading="flat")
        if key == "net_phase":
            for i, lr in enumerate(lrs):
                for j, b in enumerate(bs):
                    ax.text(lr, b, SHORT[d[key][i][j]], ha="center", va="center", fontsize=6, color="white")
        ax.contour(lrs, bs, lam_p.T, levels=[0], colors="k", linewidths=1.2)
        ax.contour(lrs, bs, lam_m.T, levels=[0], colors="k", linewidths=1.2, linestyles="--")
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("batch size")
        ax.set_title(title, fontsize=10)
    handles = [Patch(color=c, label=f"{SHORT[p]}: {p}") for p, c in zip(PHASES, colors, strict=True)]
    axes[1].legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.9)
    fig.suptitle("solid: Lambda+ = 0 (correct direction), dashed: Lambda- = 0", fontsize=9)
    paths.append(save(fig, out_dir, "phase_diagram"))

    # 2. probabilistic vs moment stability of the saddle
    fig, axes = new_figure(ncols=2, width=5.2, height=4.2)
    band = (m2_top > 0) & (lam_top < 0)
    ax = axes[0]
    ax.pcolormesh(X, Y, band.T.astype(float), cmap=ListedColormap(["white", "#fdb462"]), vmin=0, vmax=1)
    m2_p, m2_m = np.array(th["m2_plus"]), np.array(th["m2_minus"])
    curves = [
        (lam_p, "C0", "-", "Lyapunov e+: E log|1 + lr m| = 0"),
        (lam_m, "C0", "--", "Lyapunov e-: E log|1 - lr m| = 0"),
        (m2_p, "C3", "-", "2nd moment e+: E(1 + lr m)^2 = 1"),
        (m2_m, "C3", "--", "2nd moment e-: E(1 - lr m)^2 = 1"),
    ]
    handles = []
    for z, col, ls, lab in curves:
        if np.nanmin(z) < 0 < np.nanmax(z):  # the level exists on this grid
            ax.contour(
                lrs, bs, z.T, levels=[0], colors=col, linewidths=2, linestyles="solid" if ls == "-" else "dashed"
            )
            handles.append(Line2D([], [], color=col, lw=2, ls=ls, label=lab))
        else:
            sign = ">" if np.nanmin(z) > 0 else "<"
            handles.append(
                Line2D([], [], color=col, lw=2, ls=ls, alpha=0.3, label=f"{lab.split(':')[0]}: {sign} 0 everywhere")
            )
    handles.append(Patch(color="#fdb462", label="moment diverges, converges in prob."))
    ax.legend(handles=handles, fontsize=6, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    ax.set_title("stability boundaries of the saddle", fontsize=10)
    ax = axes[1]
    j1 = 0
    ax.plot(lrs, lam_top[:, j1], color="C0", label=f"Lyapunov (B={int(bs[j1])})")
    ax.plot(lrs, m2_top[:, j1] / 2, color="C3", ls="--", label=f"(1/2) 2nd-moment rate (B={int(bs[j1])})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("growth rate per step")
    ax.legend(fontsize=7)
    ax.set_title("Jensen gap: Lambda <= M2 / 2", fontsize=10)
    paths.append(save(fig, out_dir, "stability_boundaries"))

    # 3. theory vs measured Lyapunov exponents
    fig, axes = new_figure(ncols=2, width=5.0, height=4.0)
    t_all = np.concatenate([lam_p.ravel(), lam_m.ravel()])
    m_all = np.concatenate([np.array(me["lam_plus"]).ravel(), np.array(me["lam_minus"]).ravel()])
    ok = np.isfinite(t_all) & np.isfinite(m_all)
    ax = axes[0]
    ax.scatter(t_all[ok], m_all[ok], s=8, alpha=0.7)
    lo, hi = float(np.min(t_all[ok])), float(np.max(t_all[ok]))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel("theory E log|1 - lr h|")
    ax.set_ylabel("measured (net's SGD Jacobians)")
    ax.set_title(f"all cells, both directions (rel. err {_fmt(lyapunov_relative_error(d))})", fontsize=9)
    ax = axes[1]
    for c, j in enumerate(sorted({0, len(bs) // 2, len(bs) - 1})):
        ax.plot(lrs, lam_p[:, j], color=f"C{c}", label=f"B={int(bs[j])} e+ theory")
        ax.plot(lrs, np.array(me["lam_plus"])[:, j], "o", color=f"C{c}", ms=3)
        ax.plot(lrs, lam_m[:, j], color=f"C{c}", ls="--")
        ax.plot(lrs, np.array(me["lam_minus"])[:, j], "s", color=f"C{c}", ms=3, mfc="none")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("Lyapunov exponent")
    ax.set_title("lines: theory (solid e+, dashed e-); markers: measured", fontsize=8)
    ax.legend(fontsize=7)
    paths.append(save(fig, out_dir, "lyapunov_theory_vs_measured"))
    return paths
