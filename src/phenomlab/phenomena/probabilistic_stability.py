"""Probabilistic stability of SGD: Lyapunov exponents, not moments, decide where SGD goes.

Ziyin, Li, Galanti, Ueda 2023, "The probabilistic stability of stochastic gradient descent" (arXiv 2303.13093).

``theta = 0`` is a saddle of a 2-layer tanh net where every per-sample gradient vanishes; near it SGD is
``theta_{t+1} ~ (I - lr H_t) theta_t`` and along a direction with minibatch curvature ``h``:
``Lambda = E log|1 - lr h|`` (converges in probability iff < 0) and ``M_2 = log E (1 - lr h)^2`` (second
moment converges iff < 0), per (lr, batch size) cell and direction ``e+`` (correct) / ``e-`` (incorrect).
Every measurement below trains the real (tanh, not linearised) net by plain SGD, ``replicas`` independent
runs per cell, each with its own batches drawn with replacement, without gradient clipping. Checks:
- the growth rate of ``log ||theta_t||`` of replicas started on ``e+`` / ``e-`` (Benettin: projected back onto
  the subspace and rescaled to ``lyap_scale`` after every step) matches the theory:
  ``sum |L_meas - L_th| / sum |L_th| <= 0.10``;
- band cells (theory: ``max Lambda < 0 < max M_2``): from a small random init, >= 80% of the replicas
  converge (``||theta_T|| <= 0.1 ||theta_0||``) while the replica mean of ``||theta_T||^2`` grows, in >= 3 cells;
- phases by escape direction (the sign of the learned slope ``sum_j u_j w_j`` of a replica when its norm first
  reaches 30x its init): each phase labels at least one cell where the theory predicts it;
- control_unstable_converged_fraction: where the theory says ``max Lambda >= 0.1`` replicas escape
  (at most 20% converge);
- control_moment_stable_mean_ratio2: replicas kept on ``e-`` in cells where ``M_2- <= -0.005``
  (moment-stable): the replica mean of ``||theta_T||^2`` must not grow.

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
#: builds its tensors and models on the CPU whatever the run's device (not ported to accelerators)
RUNS_ON_CPU = True

PHASES = ("correct learning", "incorrect learning", "low-rank saddle", "loss of stability")
UNDECIDED = "undecided"
SHORT = {
    "correct learning": "C",
    "incorrect learning": "I",
    "low-rank saddle": "S",
    "loss of stability": "U",
    UNDECIDED: "?",
}

# mean +- seed std (seeds 0-2, quick preset) of each deciding number is given next to its threshold
LYAP_REL_TOL = 0.10  # issue 11: growth rate within 10% of E log|1 - lr h| (aggregate); 0.0108 +- 0.0007
COLLAPSE_RATIO = 0.1  # ||theta_T|| <= 0.1 ||theta_0||: the replica went back to the saddle
ESCAPE_RATIO = 30.0  # ||theta_t|| >= 30 ||theta_0|| at some t: the replica escaped (still near-linear there)
BAND_CONVERGED = 0.8  # issue 11: >= 80% of the replicas of a band cell converge
MIN_BAND_CELLS = 3  # band cells (a region, not one cell) showing both; 7.3 +- 4.2 (of 20-26 band cells)
SADDLE_FRACTION = 0.5  # a cell is "low-rank saddle" when at least half of its replicas converge
SIGN_CONSISTENCY = 0.8  # ... else "correct"/"incorrect" when >= 80% of its escapes share the slope's sign
# matching cells per phase (need >= 1 each): C 49.7 +- 1.5, I 28.3 +- 6.8, S 18.3 +- 3.5, U 19.7 +- 3.1
# (a floor any labelling meets on the quick grid, so the map is also tested against shuffles of itself:)
PHASE_MAP_P = 0.01  # permutation p-value of the escape map's agreement with the theory's; set a priori
PHASE_MAP_SHUFFLES = 9_999
CONTROL_LAMBDA = 0.1  # theory max Lambda >= 0.1 per step: clearly unstable (control cells)
CONTROL_CONVERGED_MAX = 0.2  # ... where at most 20% of the replicas may converge; 0.0065 +- 0.0023
CONTROL_M2 = -0.005  # e- control cells: M_2- <= -0.005 per step, E||theta_T||^2 <= e^-2 after 400 steps
# control_moment_stable_mean_ratio2 (need <= 1): 2.7e-4 +- 2.2e-4
DIVERGED_NORM = 1e6  # a parameter beyond this (or non-finite): the replica diverged and is frozen


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
    replicas: int = param(256, "independent SGD runs per (lr, batch size) cell and experiment", ge=2)
    lyap_steps: int = param(200, "SGD steps of each renormalised (Lyapunov) replica", gt=0)
    lyap_scale: float = param(1e-3, "norm the Lyapunov replicas are renormalised to after each step", gt=0.0)
    theory_samples: int = param(50000, "minibatch means drawn for E_h[...] when B > 1", gt=0)
    train_steps: int = param(400, "SGD steps of each free (not renormalised) replica", gt=0)
    # deep inside the linear region (|w x| << 1 until ~12 nats of growth): a heavy-tailed excursion of a
    # replica that converges in probability is then rarely captured by the nonlinear attractor
    init_scale: float = param(1e-6, "std of the initial weights of the free replicas (near the saddle)", gt=0.0)
    record_every: int = param(20, "steps between recorded replica statistics of the free runs", gt=0)

    def validate(self) -> None:
        super().validate()
        if self.lr_max <= self.lr_min:
            raise ConfigError(f"lr_max={self.lr_max} must exceed lr_min={self.lr_min}")
        if len(set(self.batch_sizes)) != len(self.batch_sizes) or not self.batch_sizes:
            raise ConfigError(f"batch_sizes must be distinct and non-empty, got {self.batch_sizes}")
        if max(self.batch_sizes) > self.n_data:
            raise ConfigError(f"batch sizes must be <= n_data={self.n_data}, got {max(self.batch_sizes)}")
        if self.lyap_scale > 0.1 or self.init_scale > 0.01:
            raise ConfigError("lyap_scale <= 0.1 and init_scale <= 0.01: the replicas must start near the saddle")
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
        replicas=16,
        lyap_steps=40,
        theory_samples=1000,
        train_steps=60,
        record_every=10,
    ),
    "quick": {},
    # finer grid, more data, wider net, more and longer replicas
    "paper": {
        "n_data": 1024,
        "width": 32,
        "n_lr": 24,
        "batch_sizes": (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128),
        "replicas": 1024,
        "lyap_steps": 1000,
        "theory_samples": 200000,
        "train_steps": 2000,
        "record_every": 50,
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
# the net and its SGD replicas
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
        hs.append(0.5 * (h + h.T))
    return torch.stack(hs)


def ensemble_forward(u: torch.Tensor, w: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """``f_r(x) = sum_j u_rj tanh(w_rj x)`` for runs ``r``: ``u, w [R, k]``, ``xb [R, n]`` -> ``[R, n]``."""
    return torch.bmm(torch.tanh(w[:, None, :] * xb[..., None]), u[:, :, None]).squeeze(-1)


def replica_grads(
    u: torch.Tensor, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact gradients of each run's minibatch loss ``mean_b (f_r(x_rb) - y_rb)^2 / 2`` w.r.t. ``u`` and ``w``.

    Written out (``d tanh(z) = 1 - tanh(z)^2``) rather than by autograd: ~2x faster, and a unit test
    compares it with autograd on the :class:`phenomlab.models.MLP` it stands for.
    """
    t = torch.tanh(w[:, None, :] * xb[..., None])  # [R, B, k]
    r = (torch.bmm(t, u[:, :, None]).squeeze(-1) - yb) / xb.shape[1]  # [R, B]
    gu = torch.bmm(r[:, None, :], t).squeeze(1)
    gw = u * torch.bmm((r * xb)[:, None, :], 1.0 - t * t).squeeze(1)
    return gu, gw


def _directional_init(n: int, k: int, sign: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``u_j = a_j``, ``w_j = sign * a_j`` with Gaussian ``a``: a point on ``e+`` (sign 1) or ``e-`` (-1)."""
    a = torch.randn(n, k, generator=g, dtype=torch.float64)
    return a.clone(), sign * a


def _sqnorm(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return u.pow(2).sum(1) + w.pow(2).sum(1)


def _restrict(u: torch.Tensor, w: torch.Tensor, sign: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal projection onto the subspace ``w_j = sign * u_j`` (``e+`` or ``e-``); None: unchanged.

    Both subspaces are invariant under the linearised SGD map but not exactly under the tanh net's; projecting
    after each step removes the O(|theta|^2) leakage (and float rounding) into the other direction, which would
    otherwise grow whenever that direction is the less stable one and hide the exponent of this one.
    """
    if sign is None:
        return u, w
    a = 0.5 * (u + sign * w)
    return a, sign * a


def lyapunov_replicas(
    x: torch.Tensor,
    y: torch.Tensor,
    lrs: np.ndarray,
    batch_sizes: tuple[int, ...],
    sign: float,
    cfg: Config,
    g: torch.Generator,
) -> dict[str, list[list[float]]]:
    """Growth rate of ``log ||theta_t||`` of the real net's SGD started on ``e+`` (sign 1) or ``e-`` (-1).

    Benettin's method: after every SGD step of the (nonlinear) net the growth ``log(||theta'|| / ||theta||)``
    is accumulated and ``theta'`` is scaled back to norm ``lyap_scale``, so each replica stays near the
    saddle for all ``lyap_steps`` steps. Per cell: the mean over ``replicas`` runs of ``sum_t log growth / T``
    and its standard error.
    """
    n_lr, R, k, N, T = len(lrs), cfg.replicas, cfg.width, len(x), cfg.lyap_steps
    lam = [[0.0] * len(batch_sizes) for _ in range(n_lr)]
    se = [[0.0] * len(batch_sizes) for _ in range(n_lr)]
    for j, B in enumerate(batch_sizes):
        lr = torch.tensor(np.repeat(lrs, R), dtype=torch.float64)[:, None]
        u, w = _directional_init(n_lr * R, k, sign, g)
        scale = cfg.lyap_scale / _sqnorm(u, w).sqrt()
        u, w = u * scale[:, None], w * scale[:, None]
        acc = torch.zeros(n_lr * R, dtype=torch.float64)
        for _ in range(T):
            idx = torch.randint(0, N, (n_lr * R, B), generator=g)
            gu, gw = replica_grads(u, w, x[idx], y[idx])
            u, w = _restrict(u - lr * gu, w - lr * gw, sign)
            norm = _sqnorm(u, w).sqrt().clamp_min(1e-300)
            acc += torch.log(norm / cfg.lyap_scale)
            scale = (cfg.lyap_scale / norm)[:, None]
            u, w = u * scale, w * scale
        rate = (acc / T).reshape(n_lr, R)
        for i in range(n_lr):
            lam[i][j] = float(rate[i].mean())
            se[i][j] = float(rate[i].std() / math.sqrt(R))
    return {"lam": lam, "se": se}


def _record(
    steps: list[int],
    mean_ratio2: list[list[float]],
    frac_below: list[list[float]],
    t: int,
    sq: torch.Tensor,
    sq0: torch.Tensor,
    dead: torch.Tensor,
    R: int,
) -> None:
    """Append step ``t``'s per-cell replica mean of ``||theta_t||^2`` over that of ``||theta_0||^2`` (inf once a
    replica diverged) and the fraction of replicas then within the collapse ratio."""
    sq = torch.where(dead, torch.full_like(sq, math.inf), sq)
    steps.append(t)
    mean_ratio2.append((sq.reshape(-1, R).sum(1) / sq0.reshape(-1, R).sum(1)).tolist())
    frac_below.append((sq <= COLLAPSE_RATIO**2 * sq0).double().reshape(-1, R).mean(1).tolist())


def free_replicas(
    x: torch.Tensor,
    y: torch.Tensor,
    cells: list[tuple[float, int]],
    cfg: Config,
    g: torch.Generator,
    restrict: float | None = None,
) -> list[dict[str, Any]]:
    """Train ``replicas`` copies of the real net per ``(lr, B)`` cell by plain SGD (no clipping) from a small init.

    ``restrict=None``: i.i.d. ``N(0, init_scale^2)`` weights and free SGD; ``restrict=-1`` (``+1``): started on
    ``e-`` (``e+``) with the same per-weight scale and projected back onto it after every step. Per cell: fraction
    converged (``||theta_T|| <= COLLAPSE_RATIO ||theta_0||``), fractions that escaped (norm reached
    ``ESCAPE_RATIO ||theta_0||``) with a positive / negative learned slope ``sum_j u_j w_j`` at that moment,
    fraction diverged, and every ``record_every`` steps the replica mean of ``||theta_t||^2 / mean ||theta_0||^2``
    (inf once a replica diverged) and the fraction then below the collapse ratio.
    """
    R, k, N, T = cfg.replicas, cfg.width, len(x), cfg.train_steps
    out: list[dict[str, Any]] = [{} for _ in cells]
    by_b: dict[int, list[int]] = {}
    for c, (_, B) in enumerate(cells):
        by_b.setdefault(B, []).append(c)
    for B, members in by_b.items():
        n = len(members) * R
        lr = torch.tensor(np.repeat([cells[c][0] for c in members], R), dtype=torch.float64)[:, None]
        if restrict is not None:
            u, w = _directional_init(n, k, restrict, g)
            u, w = u * cfg.init_scale, w * cfg.init_scale
        else:
            u = cfg.init_scale * torch.randn(n, k, generator=g, dtype=torch.float64)
            w = cfg.init_scale * torch.randn(n, k, generator=g, dtype=torch.float64)
        sq0 = _sqnorm(u, w)
        escaped = torch.zeros(n, dtype=torch.bool)
        esc_sign = torch.zeros(n, dtype=torch.float64)
        dead = torch.zeros(n, dtype=torch.bool)
        steps, mean_ratio2, frac_below = [], [], []

        _record(steps, mean_ratio2, frac_below, 0, sq0, sq0, dead, R)
        for t in range(1, T + 1):
            idx = torch.randint(0, N, (n, B), generator=g)
            gu, gw = replica_grads(u, w, x[idx], y[idx])
            nu, nw = _restrict(u - lr * gu, w - lr * gw, restrict)
            bad = ~(torch.isfinite(nu).all(1) & torch.isfinite(nw).all(1))
            bad |= (nu.abs().amax(1) > DIVERGED_NORM) | (nw.abs().amax(1) > DIVERGED_NORM)
            bad &= ~dead
            sq = _sqnorm(nu, nw)
            new_esc = ~escaped & ~dead & (bad | (sq >= ESCAPE_RATIO**2 * sq0))
            # the sign of the slope at the escape (from the last finite point for a one-step blow-up)
            slope = torch.where(bad, (u * w).sum(1), (nu * nw).sum(1))
            esc_sign = torch.where(new_esc, torch.sign(slope), esc_sign)
            escaped |= new_esc
            dead |= bad
            u = torch.where(dead[:, None], u, nu)
            w = torch.where(dead[:, None], w, nw)
            if t % cfg.record_every == 0 or t == T:
                _record(steps, mean_ratio2, frac_below, t, _sqnorm(u, w), sq0, dead, R)
        sqT = torch.where(dead, torch.full_like(sq0, math.inf), _sqnorm(u, w))
        conv = (~dead & (sqT <= COLLAPSE_RATIO**2 * sq0)).double().reshape(-1, R).mean(1)
        plus = ((esc_sign > 0) & escaped).double().reshape(-1, R).mean(1)
        minus = ((esc_sign < 0) & escaped).double().reshape(-1, R).mean(1)
        frac_dead = dead.double().reshape(-1, R).mean(1)
        log_ratio = (0.5 * torch.log(sqT.clamp_min(1e-300) / sq0)).reshape(-1, R).median(1).values
        for pos, c in enumerate(members):
            out[c] = {
                "converged": float(conv[pos]),
                "escaped_plus": float(plus[pos]),
                "escaped_minus": float(minus[pos]),
                "diverged": float(frac_dead[pos]),
                "median_log_ratio": float(log_ratio[pos]),
                "mean_ratio2": min(float(mean_ratio2[-1][pos]), 1e300),
                "steps": list(steps),
                "mean_ratio2_t": [min(float(v[pos]), 1e300) for v in mean_ratio2],
                "converged_t": [float(v[pos]) for v in frac_below],
            }
    return out


def escape_phase(converged: float, plus: float, minus: float) -> str:
    """Phase of a cell from its replicas: most converge -> saddle; else the escape direction decides."""
    if converged >= SADDLE_FRACTION:
        return "low-rank saddle"
    esc = plus + minus
    if esc <= 0:
        return UNDECIDED
    if plus >= SIGN_CONSISTENCY * esc:
        return "correct learning"
    if minus >= SIGN_CONSISTENCY * esc:
        return "incorrect learning"
    return "loss of stability"  # escapes in both directions: neither is stable


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    from ..probes.stability import scalar_lyapunov, scalar_moment_rate

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
        p = lyapunov_replicas(x, y, lrs, bs, 1.0, cfg, ctx.generator("lyapunov", "plus"))
        q = lyapunov_replicas(x, y, lrs, bs, -1.0, cfg, ctx.generator("lyapunov", "minus"))
        return {"lam_plus": p["lam"], "lam_minus": q["lam"], "se_plus": p["se"], "se_minus": q["se"]}

    meas = ctx.cached("lyapunov", measured)
    cells = [(float(lr), B) for lr in lrs for B in bs]
    free = ctx.cached("free", lambda: free_replicas(x, y, cells, cfg, ctx.generator("free")))
    ctrl_idx = [(i, j) for i in range(len(lrs)) for j in range(len(bs)) if th["m2_minus"][i][j] <= CONTROL_M2]
    ctrl = ctx.cached(
        "control",
        lambda: free_replicas(x, y, [(float(lrs[i]), bs[j]) for i, j in ctrl_idx], cfg, ctx.generator("control"), -1.0),
    )

    def grid(key: str) -> list[list[Any]]:
        return [[free[i * len(bs) + j][key] for j in range(len(bs))] for i in range(len(lrs))]

    th_phase = [
        [theory_phase(p, q) for p, q in zip(rp, rq, strict=True)]
        for rp, rq in zip(th["lam_plus"], th["lam_minus"], strict=True)
    ]
    net_phase = [
        [
            escape_phase(f["converged"], f["escaped_plus"], f["escaped_minus"])
            for f in free[i * len(bs) : (i + 1) * len(bs)]
        ]
        for i in range(len(lrs))
    ]
    return {
        "lrs": lrs.tolist(),
        "batch_sizes": list(bs),
        "mean_curvature": float(m.mean()),  # E[xy]; the least-squares slope since E[x^2] = 1
        "ls_slope": float((x * y).sum() / (x * x).sum()),
        "theory": th,
        "measured": meas,
        "theory_phase": th_phase,
        "net_phase": net_phase,
        "net_converged": grid("converged"),
        "net_escaped_plus": grid("escaped_plus"),
        "net_escaped_minus": grid("escaped_minus"),
        "net_diverged": grid("diverged"),
        "net_mean_ratio2": grid("mean_ratio2"),
        "net_median_log_ratio": grid("median_log_ratio"),
        "free_steps": free[0]["steps"],
        "net_mean_ratio2_t": grid("mean_ratio2_t"),
        "net_converged_t": grid("converged_t"),
        "control_cells": [list(c) for c in ctrl_idx],
        "control_converged": [c["converged"] for c in ctrl],
        "control_mean_ratio2": [c["mean_ratio2"] for c in ctrl],
        "control_mean_ratio2_t": [c["mean_ratio2_t"] for c in ctrl],
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


def band_cells(d: dict[str, Any]) -> list[tuple[int, int]]:
    """Cells with ``max(M2+, M2-) > 0`` and ``max(Lambda+, Lambda-) < 0`` (theory)."""
    th = d["theory"]
    return [
        (i, j)
        for i in range(len(d["lrs"]))
        for j in range(len(d["batch_sizes"]))
        if max(th["m2_plus"][i][j], th["m2_minus"][i][j]) > 0 and max(th["lam_plus"][i][j], th["lam_minus"][i][j]) < 0
    ]


def band_cells_shown(d: dict[str, Any]) -> int:
    """Band cells where >= BAND_CONVERGED of the replicas converge while their mean ``||theta||^2`` grew."""
    return sum(
        d["net_converged"][i][j] >= BAND_CONVERGED and d["net_mean_ratio2"][i][j] > 1.0 for i, j in band_cells(d)
    )


def unstable_converged_fraction(d: dict[str, Any]) -> float | None:
    """Largest converged fraction over the cells with theory ``max(Lambda+, Lambda-) >= CONTROL_LAMBDA``."""
    th = d["theory"]
    vals = [
        d["net_converged"][i][j]
        for i in range(len(d["lrs"]))
        for j in range(len(d["batch_sizes"]))
        if max(th["lam_plus"][i][j], th["lam_minus"][i][j]) >= CONTROL_LAMBDA
    ]
    return max(vals) if vals else None


def phase_agreement_p_value(
    net: list[str], theory: list[str], shuffles: int = PHASE_MAP_SHUFFLES, seed: int = 0
) -> tuple[float, float]:
    """One-sided permutation test of the cell-wise agreement between two phase maps.

    The null keeps both maps' label counts and destroys their alignment: ``net`` is shuffled over the cells
    ``shuffles`` times (a fixed generator, so the verdict is a function of the run). Returns
    ``(p, null_mean)`` with ``p = (1 + #{shuffled agreement >= observed}) / (1 + shuffles)`` (Phipson & Smyth
    2010) and the mean shuffled agreement, which is the chance level of the observed one.
    """
    codes = {lab: k for k, lab in enumerate(sorted(set(net) | set(theory)))}
    a = np.array([codes[v] for v in net])
    b = np.array([codes[v] for v in theory])
    observed = int((a == b).sum())
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(a, (shuffles, a.size)), axis=1)
    null = (shuffled == b).sum(axis=1)
    return (1 + int((null >= observed).sum())) / (1 + shuffles), float(null.mean()) / a.size


def signature(result: Result) -> Verdict:
    d = result.data
    rel = lyapunov_relative_error(d)
    band = band_cells(d)
    n_band = band_cells_shown(d)
    net, th = _flat(d["net_phase"]), _flat(d["theory_phase"])
    agree = sum(a == b for a, b in zip(net, th, strict=True)) / len(net)
    p_map, chance = phase_agreement_p_value(net, th)
    ctrl_conv = unstable_converged_fraction(d)
    ctrl_m2 = max(d["control_mean_ratio2"]) if d["control_mean_ratio2"] else None
    checks = [
        check(
            "lyapunov_rel_error",
            rel,
            "<=",
            LYAP_REL_TOL,
            "growth rate of log||theta|| of the real net's SGD (renormalised) vs E log|1 - lr h| (sum|diff|/sum|th|)",
        ),
        check(
            "band_cells_converged_and_moment_grows",
            n_band,
            ">=",
            MIN_BAND_CELLS,
            f"of {len(band)} cells with M2 > 0 > Lambda (theory): >= {BAND_CONVERGED:.0%} of replicas converge "
            "and the replica mean of ||theta_T||^2 exceeds its initial value",
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
                f"cells labelled '{ph}' by the replicas' escape direction (no clipping) where the theory predicts it",
            )
        )
    checks += [
        check(
            "phase_map_agreement_p_value",
            p_map,
            "<=",
            PHASE_MAP_P,
            f"escape map vs theory map: agreement {agree:.2f} against {chance:.2f} for the escape map's labels "
            f"shuffled over the cells ({PHASE_MAP_SHUFFLES} shuffles)",
        ),
        check(
            "control_unstable_converged_fraction",
            ctrl_conv,
            "<=",
            CONTROL_CONVERGED_MAX,
            f"largest converged fraction over cells with theory max Lambda >= {CONTROL_LAMBDA}: replicas must escape",
        ),
        check(
            "control_moment_stable_mean_ratio2",
            ctrl_m2,
            "<=",
            1.0,
            f"largest replica mean of ||P- theta_T||^2 / ||P- theta_0||^2 over e- runs in {len(d['control_cells'])} "
            f"cells with M2- <= {CONTROL_M2}: the second moment must not grow",
        ),
    ]
    summary = (
        f"Lyapunov rel. error {_fmt(rel)}; {n_band}/{len(band)} band cells converge with a growing mean "
        f"||theta||^2; escape-direction/theory phase agreement {agree:.2f} over {len(net)} cells (shuffled: "
        f"{chance:.2f}, p {p_map:.2g}); matching cells: "
        + ", ".join(f"{SHORT[p]}={counts[p]}" for p in PHASES)
        + f"; controls: converged fraction in unstable cells {_fmt(ctrl_conv)}, moment ratio in "
        f"moment-stable cells {_fmt(ctrl_m2)}"
    )
    return Verdict(checks, summary)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


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
    colors = ["#4daf4a", "#984ea3", "#377eb8", "#e41a1c", "#bbbbbb"]
    cmap = ListedColormap(colors)
    code = {p: i for i, p in enumerate((*PHASES, UNDECIDED))}
    X, Y = _edges(lrs), _edges(bs)
    paths = []

    # 1. phase diagrams: trained nets (labels in the cells) next to the linearised theory
    fig, axes = new_figure(ncols=2, width=6.0, height=4.6)
    for ax, key, title in (
        (axes[0], "net_phase", "escape direction of the real net's SGD (no clipping)"),
        (axes[1], "theory_phase", "theory: signs of E log|1 ± lr m|"),
    ):
        Z = np.array([[code[p] for p in row] for row in d[key]]).T
        ax.pcolormesh(X, Y, Z, cmap=cmap, vmin=-0.5, vmax=4.5, shading="flat")
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
    handles = [Patch(color=c, label=f"{SHORT[p]}: {p}") for p, c in zip((*PHASES, UNDECIDED), colors, strict=True)]
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
    ax.set_ylabel("measured (real net's SGD, renormalised)")
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

    # 4. band cells: most replicas converge while the replica mean of ||theta||^2 grows; e- controls do neither
    fig, axes = new_figure(ncols=2, width=5.2, height=4.0)
    steps = np.array(d["free_steps"])
    # the band cells that converge most (the deep ones), then the rest up to 8
    shown = sorted(band_cells(d), key=lambda c: -d["net_converged"][c[0]][c[1]])[:8]
    for c, (i, j) in enumerate(shown):
        lab = f"lr={lrs[i]:.3g}, B={int(bs[j])}"
        # a diverged replica makes the mean infinite (stored as 1e300): drawn at the top of the axis
        mr = np.minimum(np.array(d["net_mean_ratio2_t"][i][j], dtype=float), 1e20)
        axes[0].plot(steps, mr, color=f"C{c}", label=lab)
        axes[1].plot(steps, d["net_converged_t"][i][j], color=f"C{c}", label=lab)
    for c, series in enumerate(d["control_mean_ratio2_t"][:4]):
        series = np.minimum(np.array(series, dtype=float), 1e20)
        axes[0].plot(steps, series, color="grey", ls=":", label="control (e-, M2- < 0)" if c == 0 else None)
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("SGD step")
    axes[0].set_ylabel("replica mean ||theta_t||^2 / ||theta_0||^2")
    axes[0].set_title("band cells (M2 > 0 > Lambda); 1e20: a replica diverged", fontsize=9)
    axes[0].legend(fontsize=6)
    axes[1].axhline(BAND_CONVERGED, color="k", lw=0.8)
    axes[1].set_xlabel("SGD step")
    axes[1].set_ylabel(f"fraction with ||theta_t|| <= {COLLAPSE_RATIO} ||theta_0||")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("convergence in probability", fontsize=9)
    paths.append(save(fig, out_dir, "band_moments_vs_probability"))
    return paths
