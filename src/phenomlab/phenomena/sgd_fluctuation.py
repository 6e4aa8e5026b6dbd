"""Noise and fluctuation of finite-learning-rate SGD on a quadratic loss.

Liu, Ziyin, Ueda 2021, "Noise and fluctuation of finite learning rate stochastic gradient descent", ICML 2021
(arXiv 2012.03636).

Heavy-ball SGD ``e_{t+1} = e_t - lr (h_t e_t - z_t) + mu (e_t - e_{t-1})`` with per-step curvature ``h_t``
(mean ``h``, variance ``gamma^2``) and gradient noise ``z_t`` (variance ``s^2``) has the stationary variance
``Var_exact = lr s^2 / (h (1 - mu) (2 - lr h / (1 + mu)) - lr gamma^2)``; the continuous-time SDE predicts
``Var_ct = lr s^2 / (2 h (1 - mu) - lr gamma^2)``. Checks, per series (noise model, momentum):
- ``max |sim / Var_exact - 1| <= REL_TOL`` (0.05) over the ``lr_h`` grid;
- ``min |sim / Var_ct - 1| > CT_MIN_DEV`` (0.20) over the grid points with ``lr * h >= DISCRETE_LRH`` (1).

Background, measurements and caveats: docs/phenomena/sgd-fluctuation.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .config import PhenomenonConfig, param
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "sgd-fluctuation"

REL_TOL = 0.05  # |sim / exact - 1| must stay below this
CT_MIN_DEV = 0.20  # |sim / continuous - 1| must exceed this ...
DISCRETE_LRH = 1.0  # ... where lr * h is at least this

NOISE_MODELS = ("additive", "minibatch")


@dataclass(frozen=True)
class Config(PhenomenonConfig):
    lr_h: tuple[float, ...] = param(
        (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5), "grid of lr * h (learning rate times mean curvature)", gt=0.0
    )
    h: float = param(1.0, "mean curvature of the quadratic loss", gt=0.0)
    sigma: float = param(1.0, "noise scale: gradient-noise std (additive) or label-noise std (minibatch)", gt=0.0)
    momenta: tuple[float, ...] = param((0.0, 0.5), "heavy-ball momentum values", ge=0.0, lt=1.0)
    noise_models: tuple[str, ...] = param(NOISE_MODELS, "noise models to simulate (additive, minibatch)")
    batch_size: int = param(32, "minibatch size S of the minibatch-noise model", ge=1)
    n_chains: int = param(4000, "independent chains per grid point", ge=2)
    steps: int = param(1500, "measured steps per chain after burn-in", ge=1)
    burn_in: int = param(300, "steps discarded before measuring", ge=0)

    def validate(self) -> None:
        super().validate()
        if not self.noise_models:
            raise ConfigError("noise_models must name at least one of " + ", ".join(NOISE_MODELS))
        bad = [m for m in self.noise_models if m not in NOISE_MODELS]
        if bad:
            raise ConfigError(f"unknown noise model(s) {bad}; choose from {list(NOISE_MODELS)}")
        if not self.momenta or not self.lr_h:
            raise ConfigError("momenta and lr_h must be non-empty")
        for model in self.noise_models:
            gamma2, s2 = noise_moments(model, self.h, self.sigma, self.batch_size)
            for mu in self.momenta:
                for x in self.lr_h:
                    if not math.isfinite(exact_variance(x / self.h, self.h, mu, gamma2, s2)):
                        raise ConfigError(
                            f"lr*h={x} with momentum {mu} ({model} noise) has no stationary "
                            "variance (the second moment diverges); lower lr_h or raise batch_size"
                        )


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(lr_h=(0.5, 1.0, 1.5), n_chains=300, steps=200, burn_in=100),
    "quick": {},
    # a finer grid to near the stability edge, stronger momentum, more chains
    "paper": {
        "lr_h": (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8),
        "momenta": (0.0, 0.5, 0.9),
        "batch_size": 128,
        "n_chains": 100000,
        "steps": 5000,
        "burn_in": 2000,
    },
}


# ---------------------------------------------------------------------------------------------
# theory
# ---------------------------------------------------------------------------------------------


def noise_moments(model: str, h: float, sigma: float, batch_size: int) -> tuple[float, float]:
    """``(gamma^2, s^2)``: variance of the per-step curvature and of the gradient noise at the minimum."""
    if model == "additive":
        return 0.0, sigma**2
    return 2.0 * h**2 / batch_size, h * sigma**2 / batch_size


def exact_variance(lr: float, h: float, mu: float, gamma2: float, s2: float) -> float:
    """Discrete-time stationary ``E[e^2] = lr s^2 / (h (1 - mu)(2 - lr h/(1 + mu)) - lr gamma^2)``; inf if none."""
    den = h * (1 - mu) * (2 - lr * h / (1 + mu)) - lr * gamma2
    return lr * s2 / den if den > 0 else math.inf


def continuous_variance(lr: float, h: float, mu: float, gamma2: float, s2: float) -> float:
    """SDE (continuous-time) prediction ``lr s^2 / (2 h (1 - mu) - lr gamma^2)``; inf if none."""
    den = 2 * h * (1 - mu) - lr * gamma2
    return lr * s2 / den if den > 0 else math.inf


def lyapunov_variance(lr: float, h: float, mu: float, gamma2: float, s2: float) -> float:
    """``Sigma[0, 0]`` of the stationary Lyapunov equation ``Sigma = E[A Sigma A^T] + lr^2 s^2 e1 e1^T``.

    ``A = Abar - lr (h_t - h) E11`` with ``Abar = [[1 + mu - lr h, -mu], [1, 0]]``, so
    ``E[A Sigma A^T] = Abar Sigma Abar^T + lr^2 gamma^2 E11 Sigma E11``: a standard discrete Lyapunov
    equation when ``gamma = 0``, a linear system in ``vec(Sigma)`` otherwise.
    """
    from scipy.linalg import solve_discrete_lyapunov

    a = np.array([[1 + mu - lr * h, -mu], [1.0, 0.0]])
    e11 = np.array([[1.0, 0.0], [0.0, 0.0]])
    q = lr**2 * s2 * e11
    if gamma2 == 0.0:
        return float(solve_discrete_lyapunov(a, q)[0, 0])
    m = np.eye(4) - np.kron(a, a) - lr**2 * gamma2 * np.kron(e11, e11)
    sol = np.linalg.solve(m, q.reshape(-1)).reshape(2, 2)
    return float(sol[0, 0])


# ---------------------------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------------------------


def simulate(model: str, lrs: list[float], mu: float, cfg: Config, seed: int) -> tuple[list[float], list[float]]:
    """Stationary ``E[e^2]`` per learning rate and its standard error (over chains of time averages)."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n, k = cfg.n_chains, len(lrs)
    lr = torch.tensor(lrs, dtype=torch.float64).unsqueeze(1)  # [k, 1], broadcast over chains
    e = torch.zeros(k, n, dtype=torch.float64)
    e_prev = torch.zeros_like(e)
    acc = torch.zeros_like(e)
    shape_s = cfg.batch_size / 2.0
    for t in range(cfg.burn_in + cfg.steps):
        noise = torch.randn(k, n, generator=g, dtype=torch.float64)
        if model == "additive":
            grad = cfg.h * e - cfg.sigma * noise
        else:
            # h_t = h chi2_S / S; z_t | h_t ~ N(0, sigma^2 h_t / S): the exact law of S fresh samples
            ht = torch.from_numpy(rng.standard_gamma(shape_s, size=(k, n))).mul_(cfg.h / shape_s)
            grad = ht * e - cfg.sigma * torch.sqrt(ht / cfg.batch_size) * noise
        e_next = e - lr * grad + mu * (e - e_prev)
        e_prev, e = e, e_next
        if t >= cfg.burn_in:
            acc += e * e
    per_chain = acc / cfg.steps
    mean = per_chain.mean(1)
    se = per_chain.std(1) / math.sqrt(n)
    return mean.tolist(), se.tolist()


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    lrs = [x / cfg.h for x in cfg.lr_h]
    series = []
    for model in cfg.noise_models:
        gamma2, s2 = noise_moments(model, cfg.h, cfg.sigma, cfg.batch_size)
        for mu in cfg.momenta:
            name = f"{model}/mu={mu:g}"

            def work(model: str = model, mu: float = mu) -> tuple[list[float], list[float]]:
                return simulate(model, lrs, mu, cfg, ctx.seed_for("chains", model, mu))

            sim, se = ctx.cached(name.replace("/", "_"), work)
            exact = [exact_variance(lr, cfg.h, mu, gamma2, s2) for lr in lrs]
            cont = [continuous_variance(lr, cfg.h, mu, gamma2, s2) for lr in lrs]
            lyap = [lyapunov_variance(lr, cfg.h, mu, gamma2, s2) for lr in lrs]
            series.append(
                {
                    "name": name,
                    "noise": model,
                    "momentum": mu,
                    "gamma2": gamma2,
                    "s2": s2,
                    "sim": sim,
                    "stderr": se,
                    "exact": exact,
                    "continuous": cont,
                    "lyapunov": lyap,
                }
            )
            for x, v, ex, ct in zip(cfg.lr_h, sim, exact, cont, strict=True):
                ctx.log(0, {"lr_h": x, "sim": v, "exact": ex, "continuous": ct}, prefix=f"{name}/lrh={x:g}")
    return {"lr_h": list(cfg.lr_h), "series": series}


# ---------------------------------------------------------------------------------------------
# verdict and figures
# ---------------------------------------------------------------------------------------------


def _rel(a: float, b: float) -> float:
    return abs(a / b - 1.0) if b and math.isfinite(b) else math.inf


def signature(result: Result) -> Verdict:
    d = result.data
    checks = []
    parts = []
    for s in d["series"]:
        err = max(_rel(v, ex) for v, ex in zip(s["sim"], s["exact"], strict=True))
        devs = [_rel(v, ct) for x, v, ct in zip(d["lr_h"], s["sim"], s["continuous"], strict=True) if x >= DISCRETE_LRH]
        dev = min(devs) if devs else None
        checks.append(
            check(
                f"{s['name']}: max|sim/exact-1|",
                err,
                "<=",
                REL_TOL,
                "simulated stationary variance matches the exact discrete-time formula",
            )
        )
        checks.append(
            check(
                f"{s['name']}: min|sim/continuous-1| at lr*h>=1",
                dev,
                ">",
                CT_MIN_DEV,
                "and is far from the continuous-time (SDE) prediction at large lr*h",
            )
        )
        parts.append(f"{s['name']}: err {err:.3f}, CT gap {'n/a' if dev is None else f'{dev:.2f}'}")
    return Verdict(checks, "; ".join(parts))


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    cfg = result.config
    models = list(dict.fromkeys(s["noise"] for s in d["series"]))
    fig, axes = new_figure(ncols=len(models), nrows=2, width=5.0, height=3.8)
    axes = np.atleast_1d(axes).reshape(2, len(models))
    hi = max(d["lr_h"])
    for col, model in enumerate(models):
        ax, rax = axes[0, col], axes[1, col]
        for i, s in enumerate(x for x in d["series"] if x["noise"] == model):
            c = f"C{i}"
            mu = s["momentum"]
            grid = np.linspace(min(d["lr_h"]) * 0.8, hi * 1.02, 200)
            ex = [exact_variance(x / cfg["h"], cfg["h"], mu, s["gamma2"], s["s2"]) for x in grid]
            ct = [continuous_variance(x / cfg["h"], cfg["h"], mu, s["gamma2"], s["s2"]) for x in grid]
            ax.plot(grid, ex, color=c, lw=1.5, label=f"exact discrete, mu={mu:g}")
            ax.plot(grid, ct, color=c, lw=1.0, ls="--", label=f"continuous time, mu={mu:g}")
            ax.errorbar(d["lr_h"], s["sim"], yerr=s["stderr"], fmt="o", color=c, ms=4, label=f"simulation, mu={mu:g}")
            rax.plot(
                d["lr_h"],
                [v / e for v, e in zip(s["sim"], s["exact"], strict=True)],
                "o-",
                color=c,
                ms=4,
                label=f"sim / exact, mu={mu:g}",
            )
            rax.plot(
                d["lr_h"],
                [v / e for v, e in zip(s["sim"], s["continuous"], strict=True)],
                "s:",
                color=c,
                ms=4,
                label=f"sim / continuous, mu={mu:g}",
            )
        ax.set_yscale("log")
        ax.axvline(DISCRETE_LRH, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("lr * h")
        ax.set_ylabel("stationary variance E[e^2]")
        title = "additive noise" if model == "additive" else f"minibatch noise (S={cfg['batch_size']})"
        ax.set_title(f"SGD fluctuation: {title}")
        ax.legend(fontsize=7)
        rax.axhspan(1 - REL_TOL, 1 + REL_TOL, color="grey", alpha=0.2)
        rax.axhline(1 + CT_MIN_DEV, color="grey", lw=0.8, ls="--")
        rax.axvline(DISCRETE_LRH, color="grey", lw=0.8, ls=":")
        rax.set_xlabel("lr * h")
        rax.set_ylabel("ratio")
        rax.legend(fontsize=7)
    return [save(fig, out_dir, "variance_vs_lr")]
