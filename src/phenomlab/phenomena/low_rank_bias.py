"""Low-rank bias of SGD with weight decay: smaller batches and stronger weight decay give lower-rank weights.

Galanti, Siegel, Gupte, Poggio 2022, "SGD and weight decay secretly minimize the rank of your neural network"
(arXiv 2206.05794).

Protocol (issue 11 item 1): every run of the batch-size sweep takes the SAME number of SGD steps ``steps`` (a fixed
number of epochs would give the small batches more steps, i.e. more decay of the initialisation), and
``lr * wd * steps >= MIN_DECAY`` (10) everywhere, so weight decay has shrunk the initialisation by
``exp(-lr wd T) <= 4.5e-5``. ``n_inits`` initialisations per condition (the same ones for every condition) are
trained side by side as one stacked ensemble per batch size, each member with its own learning rate and decay.

Rank of a run: the mean over hidden weight matrices of the relative numerical rank
``#{i: sigma_i > rank_tol ||W||_F} / min(d_out, d_in)`` (the paper's normalisation, ``rank_tol`` = 1e-3), the median
over the last 4 evaluations, averaged over the inits. The stable rank ``||W||_F^2 / ||W||_2^2`` is reported too.
Checks (runs whose weights decayed to the zero network are left out; each correlation needs >= 3 runs):
- ``Spearman(batch size, rank) >= MIN_SPEARMAN`` (0.8) over ``batch_sizes`` at ``lr``, ``weight_decay``;
- effect size ``rank(min batch) / rank(max batch) <= MAX_RANK_RATIO`` (0.85);
- ``Spearman(weight decay, rank) <= -MIN_SPEARMAN`` over the positive ``weight_decay_values`` at
  ``weight_decay_batch_size`` (equal steps);
- ``init_forgotten``: the smallest ``lr * wd * T`` of all weight-decay runs is >= ``MIN_DECAY``;
- negative control ``control_wd0_rank_ratio``: without weight decay (at the smallest batch and at
  ``weight_decay_batch_size``) the rank stays >= ``CONTROL_MIN_RATIO`` (0.9) of its value at initialisation
  (an init that diverged, NaN weights, is reported and left out; at least one run must remain).
Reported, not checked: the ``lr / B`` = const arm (``lr_scaled_batch_sizes``; lr ``lr B / B_top`` and
``steps B_top / B`` steps, so the SDE time ``lr T``, the temperature ``lr / B`` and ``lr wd T`` are the same for every
batch: what differs is only the step noise), and the stable ranks.

Background, measurements and caveats: docs/phenomena/low-rank-bias.md.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import gaussian_mixture, mnist1d
from ..errors import ConfigError
from ..models.ensemble import MLPEnsemble, per_member_loss
from ._stats import fmt, spearman
from .config import PhenomenonConfig, data, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "low-rank-bias"

#: Spearman(B, rank) must be at least this and Spearman(wd, rank) at most minus this (issue 11 threshold).
#: Quick preset, seeds 0-2: Spearman(B, rank) 0.30 +- 0.02 (seed std), Spearman(wd, rank) -1.00 +- 0.
MIN_SPEARMAN = 0.8
#: rank(smallest batch) / rank(largest batch) at most this: a 15% lower rank (issue 11 threshold).
#: Quick preset, seeds 0-2: 0.74 +- 0.04.
MAX_RANK_RATIO = 0.85
#: lr * wd * T at least this for every weight-decay run: the initialisation has decayed by exp(-10) = 4.5e-5
MIN_DECAY = 10.0
#: without weight decay the rank keeps at least this fraction of its value at initialisation.
#: Quick preset, seeds 0-2: 1.00 +- 0.004 (there the B=8 wd=0 runs diverged: B=32 decided; seed 4: 0.89 at B=8).
CONTROL_MIN_RATIO = 0.9
MIN_POINTS = 3  # a correlation needs at least this many non-collapsed runs
LAST_EVALS = 4  # the rank of a run is the median over its last this many evaluations


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    data(("mnist1d", "gaussian_mixture"), n_train=4000),
    training(lr=0.4, steps=10000, weight_decay=5e-3),
):
    width: int = param(64, "hidden width of the MLP", gt=0)
    depth: int = param(4, "hidden layers of the MLP", ge=1)
    n_inits: int = param(2, "initialisations per condition (averaged inside the run)", ge=1)
    batch_sizes: tuple[int, ...] = param((8, 16, 32, 64, 128, 256, 512), "batch-size sweep (equal steps)", ge=1)
    weight_decay_values: tuple[float, ...] = param(
        (2.5e-3, 3.5e-3, 5e-3, 7e-3, 1e-2), "weight-decay sweep at equal steps (positive values)", gt=0.0
    )
    weight_decay_batch_size: int = param(32, "batch size of the weight-decay sweep and of a wd=0 control", ge=1)
    lr_scaled_batch_sizes: tuple[int, ...] = param(
        (8, 16, 32), "batch sizes of the lr/B = const arm (largest: lr, steps; empty: no arm)", ge=1
    )
    evals_per_run: int = param(20, "rank evaluations per run (the last 4 give its rank)", ge=LAST_EVALS)
    rank_tol: float = param(1e-3, "numerical rank threshold relative to ||W||_F (the paper's)", gt=0.0, lt=1.0)
    collapse_ratio: float = param(
        0.01,
        "a run whose hidden weight norm falls below this fraction of its "
        "initial norm (any layer) has collapsed to the zero network",
        ge=0.0,
        lt=1.0,
    )

    def validate(self) -> None:
        super().validate()
        if self.weight_decay <= 0:
            raise ConfigError(
                f"weight_decay must be > 0 (the batch-size sweep measures decay), got {self.weight_decay}"
            )
        if len(set(self.batch_sizes)) < 3:
            raise ConfigError(f"batch_sizes needs at least 3 distinct values, got {self.batch_sizes}")
        if len(set(self.weight_decay_values)) < 3:
            raise ConfigError(f"weight_decay_values needs at least 3 distinct values, got {self.weight_decay_values}")
        if self.lr_scaled_batch_sizes and len(set(self.lr_scaled_batch_sizes)) < 2:
            raise ConfigError(
                f"lr_scaled_batch_sizes needs 0 or >= 2 distinct values, got {self.lr_scaled_batch_sizes}"
            )
        every = (*self.batch_sizes, *self.lr_scaled_batch_sizes, self.weight_decay_batch_size)
        if max(every) > self.n_train:
            raise ConfigError(f"batch sizes must not exceed n_train={self.n_train}")
        if self.steps < self.evals_per_run:
            raise ConfigError(f"steps ({self.steps}) must be >= evals_per_run ({self.evals_per_run})")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon (lr wd T << 10)
    "smoke": dict(
        dataset="gaussian_mixture",
        n_train=512,
        width=16,
        depth=2,
        steps=40,
        batch_sizes=(8, 32, 128),
        weight_decay_values=(2.5e-3, 5e-3, 1e-2),
        weight_decay_batch_size=32,
        lr_scaled_batch_sizes=(16, 32),
        evals_per_run=4,
    ),
    # lr 0.4, wd 5e-3, 10^4 steps for every batch size: lr wd T = 20 (10 for the smallest wd of the sweep);
    # the lr/B arm: B=8, 16, 32 at lr 0.1, 0.2, 0.4 for 40000, 20000, 10000 steps
    "quick": {},
    # closer to the paper: wider/deeper MLP, more data, three inits, 2x the decay time (not run in the quick budget)
    "paper": {
        "n_train": 10000,
        "width": 128,
        "depth": 6,
        "n_inits": 3,
        "steps": 20000,
        "batch_sizes": (8, 16, 32, 64, 128, 256, 512, 1024),
    },
}


def _data(cfg: Config, seed: int) -> Any:
    if cfg.dataset == "mnist1d":
        return mnist1d(n_train=cfg.n_train, n_test=1000, seed=seed)
    per_class = max(1, cfg.n_train // 10)
    return gaussian_mixture(n_classes=10, dim=40, n_train_per_class=per_class, n_test_per_class=100, seed=seed)


def spectra_stats(w: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For stacked weights ``w`` ``[k, a, b]``: relative numerical rank ``#{sigma_i > tol ||W||_F} / min(a, b)``
    (Galanti et al. 2022's normalisation), stable rank ``||W||_F^2 / ||W||_2^2`` and ``||W||_F``, each ``[k]``.
    Non-finite weights (a diverged member) count as zero."""
    s = torch.linalg.svdvals(torch.nan_to_num(w.double(), 0.0, 0.0, 0.0))
    fro = s.pow(2).sum(1).sqrt()
    rel = (s > tol * fro[:, None]).sum(1).double() / s.shape[1]
    stable = torch.where(s[:, 0] > 0, fro.pow(2) / s[:, 0].clamp_min(1e-300).pow(2), torch.zeros_like(fro))
    return rel, stable, fro


def train_group(
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    steps: int,
    lrs: list[float],
    wds: list[float],
    seeds: list[int],
    width: int,
    depth: int,
    evals: int,
    tol: float,
    batch_seed: int,
) -> dict[str, Any]:
    """Plain SGD (L2 decay on every parameter, as ``torch.optim.SGD(weight_decay=wd)``) of ``len(lrs)`` MLPs at once,
    member ``m`` with learning rate ``lrs[m]``, decay ``wds[m]`` and the init of ``torch.manual_seed(seeds[m])``, all
    on the same minibatches of ``batch`` examples (a fresh permutation per epoch). Returns per evaluation (step 0
    and ``evals`` equally spaced steps) each member's per-layer relative rank and stable rank and weight norm."""
    k = len(lrs)
    ens = MLPEnsemble(x.shape[1], int(y.max()) + 1, [width] * k, depth, seeds=seeds, buckets="single").to(x.device)
    bucket = ens.buckets[0]
    params = list(bucket.parameters())
    lr = torch.tensor(lrs, dtype=x.dtype, device=x.device)
    decay = 1.0 - lr * torch.tensor(wds, dtype=x.dtype, device=x.device)
    gen = torch.Generator().manual_seed(batch_seed)
    n = len(y)
    eval_at = {round(steps * (i + 1) / evals) for i in range(evals)}
    hist: dict[str, list[Any]] = {"step": [], "rank": [], "stable": [], "norm": []}

    def measure(t: int) -> None:
        stats = [spectra_stats(bucket.weights[i].detach().transpose(1, 2), tol) for i in range(depth)]
        hist["step"].append(t)
        for j, key in enumerate(("rank", "stable", "norm")):
            hist[key].append(torch.stack([s[j] for s in stats], 1).tolist())  # [k][layer]

    measure(0)
    perm, pos = torch.randperm(n, generator=gen), 0
    for t in range(1, steps + 1):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch].to(x.device)
        pos += batch
        for p in params:
            p.grad = None
        per_member_loss(bucket(x[idx], ens.act), y[idx]).sum().backward()
        with torch.no_grad():
            for p in params:
                shape = (-1,) + (1,) * (p.dim() - 1)
                p.mul_(decay.view(shape)).sub_(lr.view(shape) * p.grad)
        if t in eval_at:
            measure(t)
    with torch.no_grad():
        acc = (bucket(x, ens.act).argmax(2) == y).double().mean(1)
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1) for p in params]).all(0)
    hist["train_acc"] = torch.nan_to_num(acc, 0.0).tolist()
    hist["finite"] = finite.tolist()
    return hist


def _summarise(hist: dict[str, Any], m: int, collapse_ratio: float) -> dict[str, Any]:
    """Member ``m``: rank = median over the last evaluations of the layer-mean relative rank, ditto stable rank."""
    last_r = [sum(r[m]) / len(r[m]) for r in hist["rank"][-LAST_EVALS:]]
    last_s = [sum(s[m]) / len(s[m]) for s in hist["stable"][-LAST_EVALS:]]
    norm0, norm1 = hist["norm"][0][m], hist["norm"][-1][m]
    ratio = [b / a if a > 0 else 0.0 for a, b in zip(norm0, norm1, strict=True)]
    diverged = not hist["finite"][m]
    return {
        "rank": statistics.median(last_r),
        "stable_rank": statistics.median(last_s),
        "init_rank": sum(hist["rank"][0][m]) / len(hist["rank"][0][m]),
        "layer_ranks": [statistics.median(r[m][i] for r in hist["rank"][-LAST_EVALS:]) for i in range(len(norm0))],
        "train_acc": hist["train_acc"][m],
        "norm_ratio": ratio,
        "diverged": diverged,
        "collapsed": diverged or min(ratio) < collapse_ratio,
        "trajectory": [sum(r[m]) / len(r[m]) for r in hist["rank"]],
    }


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _data(cfg, ctx.seed_for("data")).to(ctx.device)
    x, y = ds.train()
    x = x.flatten(1)
    seeds = [ctx.seed_for("init", i) for i in range(cfg.n_inits)]
    b_top = max(cfg.lr_scaled_batch_sizes) if cfg.lr_scaled_batch_sizes else 0
    # conditions (B, T, lr, wd) -> the arms that use them; shared runs are trained once
    conds: dict[tuple[int, int, float, float], list[str]] = {}

    def add(arm: str, b: int, t: int, lr: float, wd: float) -> None:
        conds.setdefault((b, t, lr, wd), []).append(arm)

    for b in cfg.batch_sizes:
        add("batch", b, cfg.steps, cfg.lr, cfg.weight_decay)
    for w in cfg.weight_decay_values:
        add("wd", cfg.weight_decay_batch_size, cfg.steps, cfg.lr, w)
    for b in sorted({min(cfg.batch_sizes), cfg.weight_decay_batch_size}):
        add("control_wd0", b, cfg.steps, cfg.lr, 0.0)
    for b in cfg.lr_scaled_batch_sizes:
        # lr / B and lr * T fixed: same SGD temperature and SDE time (and lr wd T) for every batch size
        add("lr_scaled", b, round(cfg.steps * b_top / b), cfg.lr * b / b_top, cfg.weight_decay)

    groups: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for b, t, lr, wd in conds:
        groups.setdefault((b, t), []).append((lr, wd))
    runs = []
    for (b, t), lw in sorted(groups.items()):

        def compute(b: int = b, t: int = t, lw: list[tuple[float, float]] = lw) -> dict[str, Any]:
            members = [(lr, wd, s) for lr, wd in lw for s in seeds]
            return train_group(
                x,
                y,
                b,
                t,
                [m[0] for m in members],
                [m[1] for m in members],
                [m[2] for m in members],
                cfg.width,
                cfg.depth,
                cfg.evals_per_run,
                cfg.rank_tol,
                ctx.seed_for("batches", b, t),
            )

        hist = ctx.cached(f"group_B{b}_T{t}", compute)
        for j, (lr, wd) in enumerate(lw):
            inits = [_summarise(hist, j * len(seeds) + i, cfg.collapse_ratio) for i in range(len(seeds))]
            alive = [r for r in inits if not r["collapsed"]]

            def mean(key: str, rs: list[dict[str, Any]] = alive) -> float | None:
                return sum(r[key] for r in rs) / len(rs) if rs else None

            rec = {
                "arms": conds[(b, t, lr, wd)],
                "batch_size": b,
                "steps": t,
                "lr": lr,
                "wd": wd,
                "lr_wd_steps": lr * wd * t,
                "rank": mean("rank"),
                "stable_rank": mean("stable_rank"),
                "init_rank": mean("init_rank", inits),
                "train_acc": mean("train_acc", inits),
                "collapsed": not alive,
                "diverged": any(r["diverged"] for r in inits),
                "eval_steps": hist["step"],
                "inits": inits,
            }
            ctx.log(t, {"rank": rec["rank"] or 0.0, "stable_rank": rec["stable_rank"] or 0.0}, prefix=f"B{b}_wd{wd:g}")
            runs.append(rec)
    return {
        "layers": [f"fc{i}" for i in range(1, cfg.depth + 1)],
        "runs": runs,
        "lr": cfg.lr,
        "wd": cfg.weight_decay,
        "steps": cfg.steps,
        "wd_batch_size": cfg.weight_decay_batch_size,
        "rank_tol": cfg.rank_tol,
        "n_inits": cfg.n_inits,
    }


def arm(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The runs of one arm (``batch``, ``wd``, ``control_wd0``, ``lr_scaled``), sorted by batch size then wd."""
    return sorted((r for r in data["runs"] if name in r["arms"]), key=lambda r: (r["batch_size"], r["wd"]))


def signature(result: Result) -> Verdict:
    d = result.data
    br = [r for r in arm(d, "batch") if not r["collapsed"]]
    wr = [r for r in arm(d, "wd") if not r["collapsed"]]
    rho_b = spearman([r["batch_size"] for r in br], [r["rank"] for r in br]) if len(br) >= MIN_POINTS else None
    rho_w = spearman([r["wd"] for r in wr], [r["rank"] for r in wr]) if len(wr) >= MIN_POINTS else None
    all_b = arm(d, "batch")
    lo, hi = all_b[0], all_b[-1]
    ratio = lo["rank"] / hi["rank"] if not (lo["collapsed"] or hi["collapsed"]) and hi["rank"] > 0 else None
    decays = [r["lr_wd_steps"] for r in d["runs"] if r["wd"] > 0]
    ctrl = [r["rank"] / r["init_rank"] for r in arm(d, "control_wd0") if not r["collapsed"] and r["init_rank"] > 0]
    checks = [
        check(
            "spearman(batch_size, rank)",
            rho_b,
            ">=",
            MIN_SPEARMAN,
            "at equal steps the (init-averaged) rank of the hidden weights rises with the batch size",
        ),
        check(
            "rank_ratio(min_batch/max_batch)",
            ratio,
            "<=",
            MAX_RANK_RATIO,
            f"rank at B={lo['batch_size']} over rank at B={hi['batch_size']}: at least 15% lower",
        ),
        check(
            "spearman(weight_decay, rank)",
            rho_w,
            "<=",
            -MIN_SPEARMAN,
            f"at equal steps (B={d['wd_batch_size']}) the rank falls as weight decay rises",
        ),
        check(
            "init_forgotten(min lr*wd*T)",
            min(decays) if decays else None,
            ">=",
            MIN_DECAY,
            "every weight-decay run shrank its initialisation by exp(-lr wd T) <= exp(-10)",
        ),
        check(
            "control_wd0_rank_ratio",
            min(ctrl) if ctrl else None,
            ">=",
            CONTROL_MIN_RATIO,
            "negative control: without weight decay the rank stays >= 0.9 of its value at initialisation "
            "(every wd=0 run that did not diverge)",
        ),
    ]

    def line(rs: list[dict[str, Any]], key: str, label: str) -> str:
        return ", ".join(f"{label}={r[key]:g}: {fmt(r['rank'], '.2f')}/{fmt(r['stable_rank'], '.1f')}" for r in rs)

    summary = f"rank/stable rank at equal steps T={d['steps']}: " + line(arm(d, "batch"), "batch_size", "B")
    summary += " (train acc " + ", ".join(f"{r['train_acc']:.2f}" for r in arm(d, "batch")) + ")"
    summary += f"; wd sweep (B={d['wd_batch_size']}) " + line(arm(d, "wd"), "wd", "wd")
    summary += "; wd=0 control " + line(arm(d, "control_wd0"), "batch_size", "B")
    ls = [r for r in arm(d, "lr_scaled") if not r["collapsed"]]
    if ls:
        rho_s = spearman([r["batch_size"] for r in ls], [r["rank"] for r in ls])
        summary += f"; lr/B const (equal lr*T) {line(ls, 'batch_size', 'B')}, Spearman(B, rank) {fmt(rho_s, '.2f')}"
    for what, bad in (
        ("diverged (NaN) inits left out", [r for r in d["runs"] if r["diverged"]]),
        ("collapsed runs left out", [r for r in d["runs"] if r["collapsed"] and not r["diverged"]]),
    ):
        if bad:
            where = sorted({f"B={r['batch_size']}, wd={r['wd']:g}" for r in bad})
            summary += f"; {what}: " + "; ".join(where)
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    import matplotlib

    from ..report.figures import new_figure, save

    d = result.data
    fig, axes = new_figure(ncols=2, nrows=2, width=5.2, height=3.9)
    nan = float("nan")

    def ys(rs: list[dict[str, Any]], key: str) -> list[float]:
        return [r[key] if r[key] is not None else nan for r in rs]

    for ax, key, label in ((axes[0], "rank", "relative rank (sigma > tol ||W||_F)"), (axes[1], "stable_rank", "")):
        for name, style in (("batch", "o-"), ("lr_scaled", "s--"), ("control_wd0", "x:")):
            rs = arm(d, name)
            if rs:
                ax.plot([r["batch_size"] for r in rs], ys(rs, key), style, ms=4, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label or "stable rank ||W||_F^2 / ||W||_2^2 (layer mean)")
        ax.set_title(f"{key} vs batch size (lr={d['lr']:g}, wd={d['wd']:g}, T={d['steps']})", fontsize=8)
        ax.legend(fontsize=7)

    ax = axes[2]
    wr = arm(d, "wd")
    ax.plot([r["wd"] for r in wr], ys(wr, "rank"), "o-", ms=4, label="relative rank")
    ax.set_xscale("log")
    ax.set_xlabel("weight decay")
    ax.set_ylabel("relative rank")
    ax.set_title(f"rank vs weight decay (B={d['wd_batch_size']}, T={d['steps']})", fontsize=8)
    ax2 = ax.twinx()
    ax2.plot([r["wd"] for r in wr], ys(wr, "stable_rank"), "s--", ms=4, color="C1", label="stable rank")
    ax2.set_ylabel("stable rank")

    ax = axes[3]
    # x = lr * wd * step: the initialisation has decayed by exp(-x)
    br = arm(d, "batch")
    cmap = matplotlib.colormaps["viridis"]
    for j, r in enumerate(br):
        traj = [sum(v) / len(v) for v in zip(*(i["trajectory"] for i in r["inits"]), strict=True)]
        ax.plot(
            [r["lr"] * r["wd"] * s for s in r["eval_steps"]],
            traj,
            "o-",
            ms=2,
            color=cmap(j / max(1, len(br) - 1)),
            label=f"B={r['batch_size']}",
        )
    ax.set_xlabel("lr * wd * step  (init decayed by exp(-x))")
    ax.set_ylabel("relative rank (mean over inits)")
    ax.set_title("rank during training (equal steps)", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    return [save(fig, out_dir, "rank")]
