"""Neural collapse: the geometry of last-layer features in the terminal phase of training.

Papyan, Han, Donoho 2020, "Prevalence of neural collapse during the terminal phase of deep learning training",
PNAS (arXiv 2008.08186); the quick preset's squared loss: Han, Papyan, Donoho 2022 (arXiv 2106.02073).

Penultimate features ``h``, class means ``mu_c``, centred means ``m_c = mu_c - mu_G``, ``M = [m_c]``, last-layer
weight ``W``, ``Sw``/``Sb`` the within/between-class covariances; ``t0`` = the first evaluated epoch with zero
training error, ``T`` = the last. Checks:
- NC1 = ``tr(Sw Sb^+) / C``: ``NC1(t0) / NC1(T) >= 10``;
- NC2: at ``T`` the cosines ``cos(m_c, m_c')`` have std <= 0.1 and mean within 0.1 of ``-1/(C-1)``;
- NC3 = ``|| W/||W||_F - M/||M||_F ||_F``: ``NC3(T) < NC3(t0)``;
- NC4: the net agrees with the nearest-class-centre rule ``argmin_c ||h - mu_c||`` on >= 0.99 of the train set at ``T``.

Background, measurements and caveats: docs/phenomena/neural-collapse.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, digits, gaussian_mixture, mnist1d
from ..errors import ConfigError
from ..models import MLP, SmallCNN
from ..probes.collapse import neural_collapse
from ..train import TrainState
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "neural-collapse"

NC1_MIN_FALL = 10.0  # NC1(zero-error epoch) / NC1(end)
NC2_MAX_COS_STD = 0.1
NC2_MAX_COS_MEAN_DEV = 0.1  # |mean cosine + 1/(C-1)|
NC3_MAX_RATIO = 1.0  # NC3(end) / NC3(zero-error epoch): strictly below means decreasing
NC4_MIN_AGREEMENT = 0.99

# fixed shape of the Gaussian-mixture option (classes, input dim, mean separation, test points per class)
_GM_CLASSES, _GM_DIM, _GM_SEPARATION, _GM_TEST_PER_CLASS = 10, 32, 4.0, 100


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(lr=0.05, batch_size=64, weight_decay=5e-4, momentum=0.9, schedule="cosine")):
    dataset: str = param("mnist1d", "training data", choices=("digits", "mnist1d", "gaussian_mixture"))
    n_train: int = param(2000, "training points for mnist1d and gaussian_mixture (digits has 1,348)", gt=0)
    model: str = param("mlp", "MLP or SmallCNN (cnn: digits or mnist1d only)", choices=("mlp", "cnn"))
    width: int = param(256, "MLP hidden width / SmallCNN penultimate width", gt=0)
    depth: int = param(3, "MLP hidden layers", ge=1)
    channels: tuple[int, ...] = param((32, 64), "SmallCNN conv channels", gt=0)
    loss: str = param("mse", "training loss", choices=("mse", "cross_entropy"))
    epochs: int = param(800, "training epochs (most of them past zero training error)", gt=0)
    eval_epochs: int = param(10, "epochs between NC measurements after the zero-error epoch", gt=0)

    def validate(self) -> None:
        super().validate()
        if self.model == "cnn" and self.dataset == "gaussian_mixture":
            raise ConfigError("model='cnn' needs dataset 'digits' or 'mnist1d' (a mixture has no spatial axis)")
        if self.eval_epochs > self.epochs:
            raise ConfigError(f"eval_epochs={self.eval_epochs} exceeds epochs={self.epochs}")
        if self.dataset == "gaussian_mixture" and self.n_train < _GM_CLASSES:
            raise ConfigError(f"gaussian_mixture needs n_train >= {_GM_CLASSES} (one point per class)")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(n_train=200, width=32, depth=2, epochs=6, eval_epochs=2, batch_size=50),
    "quick": {},
    # Papyan et al. 2020: cross-entropy, SGD momentum 0.9, wd 5e-4, batch 128, 350 epochs with the LR
    # divided by 10 at 1/3 and 2/3 (the loop has no step schedule; cosine stands in for it).
    "paper": {
        "n_train": 4000,
        "model": "cnn",
        "channels": (64, 128),
        "width": 256,
        "loss": "cross_entropy",
        "lr": 0.05,
        "batch_size": 128,
        "epochs": 350,
        "eval_epochs": 5,
    },
}


def _dataset(cfg: Config, seed: int) -> Dataset:
    if cfg.dataset == "digits":
        return digits(seed=seed, flatten=cfg.model == "mlp")
    if cfg.dataset == "mnist1d":
        return mnist1d(n_train=cfg.n_train, seed=seed)
    return gaussian_mixture(
        _GM_CLASSES, _GM_DIM, cfg.n_train // _GM_CLASSES, _GM_TEST_PER_CLASS, separation=_GM_SEPARATION, seed=seed
    )


def _model(cfg: Config, ds: Dataset, seed: int) -> MLP | SmallCNN:
    torch.manual_seed(seed)
    if cfg.model == "mlp":
        return MLP(ds.input_dim, ds.n_classes, width=cfg.width, depth=cfg.depth)
    dims = 2 if cfg.dataset == "digits" else 1
    return SmallCNN(1, ds.n_classes, dims=dims, channels=cfg.channels, hidden=cfg.width)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _dataset(cfg, ctx.seed_for("data")).to(ctx.device)
    model = _model(cfg, ds, ctx.seed_for("init")).to(ctx.device)
    train_data = ds.train()
    steps_per_epoch = math.ceil(ds.n_train / (cfg.batch_size or ds.n_train))

    zero_seen: list[int] = []

    def measure(s: TrainState) -> dict[str, float] | None:
        # evaluation runs every epoch so the zero-error epoch is exact; NC is measured every epoch up
        # to it, then every eval_epochs epochs and at the end
        epoch = s.step // steps_per_epoch
        first_zero = s.metrics["train_acc"] >= 1.0 and not zero_seen
        if first_zero:
            zero_seen.append(epoch)
        if not (first_zero or not zero_seen or epoch % cfg.eval_epochs == 0 or s.step == s.config.steps):
            return None
        nc = neural_collapse(s.model, train_data, s.model.penultimate, classifier="out")
        return {
            "nc1": nc.nc1,
            "nc2_cos_mean": nc.nc2["cos_mean"],
            "nc2_cos_std": nc.nc2["cos_std"],
            "nc2_equinorm": nc.nc2["equinorm_cv"],
            "nc3": float(nc.nc3),
            "nc4": float(nc.nc4),
        }

    tcfg = cfg.train_config(
        steps=cfg.epochs * steps_per_epoch, optimizer="sgd", eval_every=steps_per_epoch, loss=cfg.loss
    )
    hist = ctx.train("main", model, train_data, tcfg, eval_sets={"test": ds.test()}, callbacks=[measure])
    # a resumed run rebuilds zero_seen from scratch, so take everything from the stored history
    recs = [r for r in hist.records if "nc1" in r]
    epochs = [r["step"] / steps_per_epoch for r in recs]
    zero = next((r["step"] / steps_per_epoch for r in hist.records if r["train_acc"] >= 1.0), None)
    return {
        "epochs": epochs,
        "train_error": [1.0 - r["train_acc"] for r in recs],
        "test_error": [1.0 - r["test_acc"] for r in recs],
        "all_epochs": [r["step"] / steps_per_epoch for r in hist.records],
        "all_train_error": [1.0 - r["train_acc"] for r in hist.records],
        **{k: [r[k] for r in recs] for k in ("nc1", "nc2_cos_mean", "nc2_cos_std", "nc2_equinorm", "nc3", "nc4")},
        "zero_error_epoch": zero,
        "n_classes": ds.n_classes,
        "n_train": ds.n_train,
    }


def signature(result: Result) -> Verdict:
    d = result.data
    target = -1.0 / (d["n_classes"] - 1)
    zero = d["zero_error_epoch"]
    i0 = next((i for i, e in enumerate(d["epochs"]) if e >= zero), None) if zero is not None else None
    nc1_zero = d["nc1"][i0] if i0 is not None else None
    nc3_zero = d["nc3"][i0] if i0 is not None else None
    nc1_end, nc3_end = d["nc1"][-1], d["nc3"][-1]
    cos_std, cos_mean, nc4 = d["nc2_cos_std"][-1], d["nc2_cos_mean"][-1], d["nc4"][-1]
    nc1_fall = nc1_zero / nc1_end if nc1_zero is not None and nc1_end > 0 else None
    nc3_ratio = nc3_end / nc3_zero if nc3_zero else None
    checks = [
        check(
            "NC1(t0)/NC1(end)",
            nc1_fall,
            ">=",
            NC1_MIN_FALL,
            "tr(Sw Sb^+)/C falls >= 10x from the zero-train-error epoch t0 to the end",
        ),
        check("NC2 cos std", cos_std, "<=", NC2_MAX_COS_STD, "std of cosines between centred class means"),
        check(
            "NC2 |cos mean + 1/(C-1)|",
            abs(cos_mean - target),
            "<=",
            NC2_MAX_COS_MEAN_DEV,
            f"mean cosine within 0.1 of the simplex-ETF value {target:.4f}",
        ),
        check(
            "NC3(end)/NC3(t0)",
            nc3_ratio,
            "<",
            NC3_MAX_RATIO,
            "normalised ||W^T - M|| at the end is below its value at t0",
        ),
        check(
            "NC4 agreement", nc4, ">=", NC4_MIN_AGREEMENT, "nearest-class-centre rule agrees with the network (train)"
        ),
    ]
    if zero is None:
        summary = f"training error never reached 0 in {d['epochs'][-1]:g} epochs (final {d['train_error'][-1]:.4f})"
    else:
        summary = (
            f"zero train error at epoch {zero:g}; NC1 {nc1_zero:.3g} -> {nc1_end:.3g}; "
            f"NC2 cos {cos_mean:.3f} +- {cos_std:.3f} (target {target:.3f}); "
            f"NC3 {nc3_zero:.3f} -> {nc3_end:.3f}; NC4 {nc4:.4f}; final train error {d['train_error'][-1]:.4f}"
        )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    ep = d["epochs"]
    target = -1.0 / (d["n_classes"] - 1)
    fig, axes = new_figure(ncols=2, nrows=2, width=4.6, height=3.4)
    ax1, ax2, ax3, ax4 = axes
    ax1.semilogy(ep, d["nc1"], color="C0")
    ax1.set_ylabel("NC1 = tr(Sw Sb^+)/C")
    ax2.plot(ep, d["nc2_cos_std"], color="C1", label="std of cosines")
    ax2.plot(ep, [abs(c - target) for c in d["nc2_cos_mean"]], color="C2", label="|mean cos + 1/(C-1)|")
    ax2.plot(ep, d["nc2_equinorm"], color="C3", ls="--", label="norm CV (equinorm)")
    ax2.axhline(NC2_MAX_COS_STD, color="grey", lw=0.8, ls=":")
    ax2.set_yscale("log")
    ax2.set_ylabel("NC2")
    ax2.legend(fontsize=7)
    ax3.plot(ep, d["nc3"], color="C4")
    ax3.set_ylabel("NC3 = ||W/||W|| - M/||M|| ||")
    ax4.plot(ep, d["nc4"], color="C5", label="NCC/net agreement (train)")
    ax4.plot(d["all_epochs"], [1 - e for e in d["all_train_error"]], color="k", lw=0.8, alpha=0.6, label="train acc")
    ax4.axhline(NC4_MIN_AGREEMENT, color="grey", lw=0.8, ls=":")
    ax4.set_ylim(max(0.0, min(d["nc4"]) - 0.02), 1.005)
    ax4.set_ylabel("NC4")
    ax4.legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xlabel("epoch")
        if d["zero_error_epoch"] is not None:
            ax.axvline(d["zero_error_epoch"], color="grey", lw=0.8, ls="--")
    ax1.set_title(f"zero train error at epoch {d['zero_error_epoch']}", fontsize=9)
    fig.suptitle(
        f"neural collapse: {result.config['model']} on {result.config['dataset']}, "
        f"{result.config['loss']} loss, wd={result.config['weight_decay']}"
    )
    return [save(fig, out_dir, "neural_collapse")]
