"""Low-rank bias of SGD with weight decay: smaller batches and stronger weight decay give lower-rank weights.

Galanti, Siegel, Gupte, Poggio 2022, "SGD and weight decay secretly minimize the rank of your neural network"
(arXiv 2206.05794).

Per run: the mean over hidden weight matrices of the relative numerical rank
``#{i: sigma_i > rank_tol sigma_max} / min(d_out, d_in)`` (``rank_tol`` = 1e-3); runs whose hidden weights fall
below ``collapse_ratio`` of their initial norm are left out of the correlations (each needs >= 3 runs). Checks:
- ``Spearman(1 / batch size, rank) <= MAX_SPEARMAN`` (-0.8) over ``batch_sizes`` at ``weight_decay``;
- ``Spearman(weight decay, rank) <= -0.8`` over ``weight_decay_values`` (with 0) at ``weight_decay_batch_size``;
- with weight decay 0 every hidden layer keeps ``rank >= NEAR_FULL`` (0.9) ``* min(d_out, d_in)``.

Background, measurements and caveats: docs/phenomena/low-rank-bias.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import gaussian_mixture, mnist1d
from ..errors import ConfigError
from ..models import MLP
from ..train import TrainState
from ._stats import spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "low-rank-bias"

MAX_SPEARMAN = -0.8  # Spearman(1/B, rank) and Spearman(wd, rank) must be at most this
NEAR_FULL = 0.9  # wd=0: every hidden layer keeps at least this fraction of min(d_out, d_in)
MIN_POINTS = 3  # a correlation needs at least this many non-collapsed runs


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(lr=0.1, steps=20000, weight_decay=0.01)):
    dataset: str = param("mnist1d", "training data", choices=("mnist1d", "gaussian_mixture"))
    n_train: int = param(4000, "training examples", ge=16)
    width: int = param(64, "hidden width of the MLP", gt=0)
    depth: int = param(4, "hidden layers of the MLP", ge=1)
    batch_sizes: tuple[int, ...] = param((8, 16, 32, 64, 128, 256, 512), "batch-size sweep", ge=1)
    weight_decay_values: tuple[float, ...] = param((0.0, 1e-3, 3e-3, 1e-2), "weight-decay sweep (include 0)", ge=0.0)
    weight_decay_batch_size: int = param(32, "batch size of the weight-decay sweep", ge=1)
    protocol: str = param(
        "epochs", "same number of epochs (paper) or of steps for every run", choices=("epochs", "steps")
    )
    epochs: float = param(80.0, "epochs per run (protocol=epochs)", gt=0.0)
    evals_per_run: int = param(8, "evaluations (rank trajectory points) per run", ge=1)
    rank_tol: float = param(1e-3, "numerical rank threshold relative to sigma_max", gt=0.0, lt=1.0)
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
        if len(set(self.weight_decay_values)) < 3 or 0.0 not in self.weight_decay_values:
            raise ConfigError(
                f"weight_decay_values needs at least 3 distinct values including 0, got {self.weight_decay_values}"
            )
        if max(self.batch_sizes) > self.n_train or self.weight_decay_batch_size > self.n_train:
            raise ConfigError(f"batch sizes must not exceed n_train={self.n_train}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        dataset="gaussian_mixture",
        n_train=512,
        width=16,
        depth=2,
        epochs=1.0,
        batch_sizes=(32, 64, 128),
        weight_decay_values=(0.0, 1e-3, 1e-2),
        weight_decay_batch_size=64,
        evals_per_run=2,
    ),
    "quick": {},
    # closer to the paper: wider/deeper MLP, more data, longer fixed-epoch training, denser sweeps
    # (the authors' batch-norm MLP on CIFAR-10 is out of reach of this MLP; not run in the quick budget)
    "paper": {
        "n_train": 10000,
        "width": 128,
        "depth": 6,
        "epochs": 300.0,
        "weight_decay": 5e-3,
        "batch_sizes": (8, 16, 32, 64, 128, 256, 512, 1024),
        "weight_decay_values": (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 5e-3),
    },
}


def _data(cfg: Config, seed: int) -> Any:
    if cfg.dataset == "mnist1d":
        return mnist1d(n_train=cfg.n_train, n_test=1000, seed=seed)
    per_class = max(1, cfg.n_train // 10)
    return gaussian_mixture(n_classes=10, dim=40, n_train_per_class=per_class, n_test_per_class=100, seed=seed)


def _ranks(model: MLP, tol: float) -> list[int]:
    from ..probes.spectra import numerical_rank

    return [numerical_rank(getattr(model, name).weight.detach(), tol=tol) for name in model.hidden_layers]


def _full(model: MLP) -> list[int]:
    return [min(getattr(model, name).weight.shape) for name in model.hidden_layers]


def _mean_relative(ranks: list[int], full: list[int]) -> float:
    return sum(r / f for r, f in zip(ranks, full, strict=True)) / len(ranks)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    from ..probes.spectra import singular_values

    ds = _data(cfg, ctx.seed_for("data")).to(ctx.device)
    n_out = int(ds.n_classes)
    init_seed = ctx.seed_for("init")
    n_samples = len(ds.y_train)
    done: dict[tuple[int, float], dict[str, Any]] = {}  # (B, wd) runs shared by the two sweeps

    def train_one(batch: int, wd: float) -> dict[str, Any]:
        key = (batch, wd)
        if key in done:
            return done[key]
        steps = math.ceil(cfg.epochs * n_samples / batch) if cfg.protocol == "epochs" else cfg.steps
        torch.manual_seed(init_seed)  # the same initialisation for every (batch, wd)
        model = MLP(ds.x_train.shape[1], n_out, cfg.width, cfg.depth).to(ctx.device)
        full = _full(model)
        norm0 = [float(getattr(model, name).weight.detach().norm()) for name in model.hidden_layers]

        def rank_probe(s: TrainState) -> dict[str, float]:
            r = _ranks(s.model, cfg.rank_tol)  # type: ignore[arg-type]
            out = {f"rank_{name}": float(v) for name, v in zip(model.hidden_layers, r, strict=True)}
            out["mean_relative_rank"] = _mean_relative(r, full)
            return out

        tcfg = cfg.train_config(
            steps=steps,
            optimizer="sgd",
            weight_decay=wd,
            batch_size=batch,
            eval_every=max(1, steps // cfg.evals_per_run),
        )
        hist = ctx.train(
            f"bs{batch}_wd{wd:g}", model, ds.train(), tcfg, eval_sets={"test": ds.test()}, callbacks=[rank_probe]
        )
        ranks = _ranks(model, cfg.rank_tol)
        norm_ratio = [
            float(getattr(model, name).weight.detach().norm()) / n0
            for name, n0 in zip(model.hidden_layers, norm0, strict=True)
        ]
        rec = {
            "batch_size": batch,
            "wd": wd,
            "n_steps": steps,
            "lr_wd_steps": cfg.lr * wd * steps,
            "ranks": ranks,
            "full": full,
            "mean_relative_rank": _mean_relative(ranks, full),
            "sv": [
                [float(v) for v in singular_values(getattr(model, name).weight.detach())]
                for name in model.hidden_layers
            ],
            "train_acc": hist.last("train_acc"),
            "test_acc": hist.last("test_acc"),
            "norm_ratio": norm_ratio,
            "collapsed": min(norm_ratio) < cfg.collapse_ratio,
            "steps": hist.column("step"),
            "rank_trajectory": hist.column("mean_relative_rank", None),
        }
        done[key] = rec
        return rec

    batch_runs = [train_one(b, cfg.weight_decay) for b in cfg.batch_sizes]
    wd_runs = [train_one(cfg.weight_decay_batch_size, w) for w in cfg.weight_decay_values]
    return {
        "layers": [f"fc{i}" for i in range(1, cfg.depth + 1)],
        "batch_runs": batch_runs,
        "wd_runs": wd_runs,
        "lr": cfg.lr,
        "wd": cfg.weight_decay,
        "wd_batch_size": cfg.weight_decay_batch_size,
        "rank_tol": cfg.rank_tol,
        "protocol": cfg.protocol,
    }


def signature(result: Result) -> Verdict:
    d = result.data
    br = [r for r in d["batch_runs"] if not r["collapsed"]]
    wr = [r for r in d["wd_runs"] if not r["collapsed"]]
    rho_b = spearman([1.0 / r["batch_size"] for r in br], [r["mean_relative_rank"] for r in br])
    rho_w = spearman([r["wd"] for r in wr], [r["mean_relative_rank"] for r in wr])
    zero = [r for r in d["wd_runs"] if r["wd"] == 0.0]
    wd0 = min(rk / f for rk, f in zip(zero[0]["ranks"], zero[0]["full"], strict=True)) if zero else None
    checks = [
        check(
            "spearman(1/batch_size, rank)",
            rho_b if len(br) >= MIN_POINTS else None,
            "<=",
            MAX_SPEARMAN,
            "mean relative rank of the hidden weights falls as the batch size falls "
            "(= Spearman(batch size, rank) >= 0.8)",
        ),
        check(
            "spearman(weight_decay, rank)",
            rho_w if len(wr) >= MIN_POINTS else None,
            "<=",
            MAX_SPEARMAN,
            "mean relative rank falls as weight decay rises",
        ),
        check(
            "wd=0 min relative rank",
            wd0,
            ">=",
            NEAR_FULL,
            "without weight decay every hidden layer keeps >= 90% of min(d_out, d_in)",
        ),
    ]
    summary = "mean relative rank " + ", ".join(
        f"B={r['batch_size']}: {r['mean_relative_rank']:.2f}" for r in d["batch_runs"]
    )
    summary += "; wd sweep " + ", ".join(f"{r['wd']:g}: {r['mean_relative_rank']:.2f}" for r in d["wd_runs"])
    steps = [r["n_steps"] for r in d["batch_runs"]]
    summary += f"; same {d['protocol']}: {max(steps)}..{min(steps)} steps per batch-size run"
    dead = [f"B={r['batch_size']}, wd={r['wd']:g}" for r in d["batch_runs"] + d["wd_runs"] if r["collapsed"]]
    if dead:
        summary += "; collapsed runs left out: " + "; ".join(sorted(set(dead)))
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    import matplotlib

    from ..report.figures import new_figure, save

    d = result.data
    br, wr, layers = d["batch_runs"], d["wd_runs"], d["layers"]
    fig, axes = new_figure(ncols=2, nrows=2, width=5.2, height=3.9)
    ax = axes[0]
    bs = [r["batch_size"] for r in br]
    for i, name in enumerate(layers):
        ax.plot(bs, [r["ranks"][i] for r in br], "o-", ms=4, label=name)
    for r in br:
        if r["collapsed"]:
            ax.axvline(r["batch_size"], color="red", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"numerical rank (sigma > {d['rank_tol']:g} sigma_max)")
    ax.set_title(f"rank vs batch size (lr={d['lr']:g}, wd={d['wd']:g}, same {d['protocol']})", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1]
    wds = [r["wd"] for r in wr]
    for i, name in enumerate(layers):
        ax.plot(wds, [r["ranks"][i] for r in wr], "o-", ms=4, label=name)
    positive = [w for w in wds if w > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-4)
    ax.set_xlabel("weight decay")
    ax.set_ylabel("numerical rank")
    ax.set_title(f"rank vs weight decay (B={d['wd_batch_size']})", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[2]
    # normalised spectra of the middle hidden layer: where the small-batch matrices lose rank
    mid = len(layers) // 2
    cmap = matplotlib.colormaps["viridis"]
    for j, r in enumerate(br):
        s = r["sv"][mid]
        top = max(s) if s and max(s) > 0 else 1.0
        ax.semilogy(
            range(1, len(s) + 1),
            [max(v / top, 1e-12) for v in s],
            color=cmap(j / max(1, len(br) - 1)),
            label=f"B={r['batch_size']}",
        )
    ax.axhline(d["rank_tol"], color="grey", ls="--", lw=0.8)
    ax.set_ylim(bottom=1e-8)
    ax.set_xlabel("index i")
    ax.set_ylabel("sigma_i / sigma_max")
    ax.set_title(f"spectrum of {layers[mid]} per batch size", fontsize=9)
    ax.legend(fontsize=6, ncol=2)

    ax = axes[3]
    # x = lr * wd * step: the initialisation has decayed by exp(-x)
    for j, r in enumerate(br):
        xs = [d["lr"] * r["wd"] * s for s in r["steps"]]
        ys = [v if v is not None else float("nan") for v in r["rank_trajectory"]]
        ax.plot(xs, ys, "o-", ms=3, color=cmap(j / max(1, len(br) - 1)), label=f"B={r['batch_size']}")
    ax.set_xlabel("lr * wd * step  (init decayed by exp(-x))")
    ax.set_ylabel("mean relative rank")
    ax.set_title("rank during training", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return [save(fig, out_dir, "rank")]
