"""Neural collapse: the geometry of last-layer features in the terminal phase of training.

Papyan, Han, Donoho 2020, "Prevalence of neural collapse during the terminal phase of deep learning training",
PNAS (arXiv 2008.08186); the quick preset's squared loss: Han, Papyan, Donoho 2022, "Neural collapse under MSE
loss: proximity to and dynamics on the central path" (ICLR, arXiv 2106.02073).

Penultimate features ``h``, class means ``mu_c``, centred means ``m_c = mu_c - mu_G``, ``M = [m_c]``, last-layer
weight ``W`` with rows ``w_c``; ``t0`` = the first evaluated epoch with zero training error, ``T`` = the last.
Checks (each a fall from ``t0`` to ``T``, as the paper's Figs. 2-7 plot them over the terminal phase):

- NC1 = ``tr(Sw Sb^+) / C``: ``NC1(t0) / NC1(T) >= 10``;
- NC2 equinorm: the coefficient of variation ``std_c ||m_c|| / mean_c ||m_c||`` and the same of ``||w_c||`` each
  fall ``>= 2x`` and end below a cap;
- NC2 equiangularity: ``max_{c != c'} |cos(m_c, m_c') + 1/(C-1)|`` falls ``>= 2x`` and ends below a cap (the
  *mean* cosine of centred means is close to ``-1/(C-1)`` for any configuration with roughly equal norms, since
  ``sum_c m_c = 0``, so it is recorded but decides nothing);
- NC3 = ``|| W/||W||_F - M/||M||_F ||_F^2`` (squared, as the paper's Fig. 5): ``NC3(T) <= 0.5 NC3(t0)``;
- NC4: the net agrees with the nearest-class-centre rule ``argmin_c ||h - mu_c||`` on >= 0.99 of the train set at ``T``;
- negative control: the same net, data, initialisation and steps without weight decay. Without a norm penalty
  any features that the classifier maps onto the targets minimise the squared loss; only the regularised
  problem's minimisers are simplex ETFs (unconstrained-features model: Zhu et al. 2021, arXiv 2105.02375; Tirer &
  Bruna 2022, arXiv 2202.08087; weight decay's role in real nets: Rangamani & Banburski-Fahey 2022, ICASSP). NC1
  must fall far less there (control fall / main fall <= 0.2) although the control interpolates too.

Cross-entropy: at CPU scale (3-layer MLPs on mnist1d, digits, a Gaussian mixture; cosine or step lr decay; weight
decay 5e-4 to 5e-3) cross-entropy training freezes at a non-collapsed stationary point within ~100 epochs of zero
training error, so the quick preset trains with the squared loss and its verdict says "under MSE". Background,
measurements and caveats: docs/phenomena/neural-collapse.md.
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
from .config import PhenomenonConfig, data, param, training
from .context import RunContext
from .verdict import Check, Result, Verdict, check

ID = "neural-collapse"

# Thresholds; in brackets mean +- seed std over seeds 0-2 of the quick preset (MSE), see the docs page.
NC1_MIN_FALL = 10.0  # NC1(t0) / NC1(T)  [84 +- 42]
NC2_MIN_FALL = 2.0  # each NC2 measure at t0 / at T  [means CV 1.74 +- 0.05, rows CV 1.39 +- 0.01, angle 3.2 +- 0.4]
# end caps: the loosest configuration we still call near a simplex ETF (norms within ~20%, no pair of means more
# than ~18 degrees off the ETF angle of 96 degrees); the paper's Figs. 2-4 show these measures falling towards 0
# on log axes and state no level, so the caps are ours
NC2_MAX_NORM_CV = 0.2  # std/mean of ||m_c|| and of ||w_c|| at T  [means 0.168 +- 0.007, rows 0.155 +- 0.006]
NC2_MAX_ANGLE_DEV = 0.3  # max over pairs |cos(m_c, m_c') + 1/(C-1)| at T  [0.127 +- 0.009]
NC3_MAX_RATIO = 0.5  # NC3(T) / NC3(t0), NC3 squared as in the paper's Fig. 5  [0.205 +- 0.024]
NC4_MIN_AGREEMENT = 0.99  # [1.0 +- 0]
# NC1 fall of the no-weight-decay control relative to the main run's: "far less" = at most a fifth. Without weight
# decay the squared loss still pulls the features onto exact targets after interpolation, so a few-fold NC1 fall is
# expected there (seeds 0-2: 4.2x, 3.9x, 6.4x against 37x, 120x, 94x); an absolute cap would sit inside that
# spread, while the ratio compares the two conditions of the same seed.  [0.071 +- 0.040]
CONTROL_MAX_REL_FALL = 0.2

SERIES = ("nc1", "nc2_cos_mean", "nc2_cos_std", "nc2_equinorm", "nc2_w_equinorm", "nc2_max_angle", "nc3", "nc4")

# fixed shape of the Gaussian-mixture option (classes, input dim, mean separation, test points per class)
_GM_CLASSES, _GM_DIM, _GM_SEPARATION, _GM_TEST_PER_CLASS = 10, 32, 4.0, 100


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    data(("mnist1d", "digits", "gaussian_mixture"), n_train=2000),
    training(lr=0.05, batch_size=64, weight_decay=5e-4, momentum=0.9, schedule="cosine"),
):
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


def _train_measured(
    name: str, cfg: Config, ctx: RunContext, ds: Dataset, weight_decay: float, steps_per_epoch: int
) -> dict[str, Any]:
    """Train a fresh net (same init seed for every ``name``) and return its NC series and zero-error epoch."""
    model = _model(cfg, ds, ctx.seed_for("init")).to(ctx.device)
    train_data = ds.train()
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
        w_norms = torch.linalg.vector_norm(s.model.out.weight.detach(), dim=1)
        return {
            "nc1": nc.nc1,
            "nc2_cos_mean": nc.nc2["cos_mean"],
            "nc2_cos_std": nc.nc2["cos_std"],
            "nc2_equinorm": nc.nc2["equinorm_cv"],
            "nc2_w_equinorm": float(w_norms.std(correction=0) / w_norms.mean()),
            "nc2_max_angle": nc.nc2["max_angle_dev"],
            "nc3": float(nc.nc3) ** 2,
            "nc4": float(nc.nc4),
        }

    tcfg = cfg.train_config(
        steps=cfg.epochs * steps_per_epoch,
        optimizer="sgd",
        eval_every=steps_per_epoch,
        loss=cfg.loss,
        weight_decay=weight_decay,
    )
    hist = ctx.train(name, model, train_data, tcfg, eval_sets={"test": ds.test()}, callbacks=[measure])
    # a resumed run rebuilds zero_seen from scratch, so take everything from the stored history
    recs = [r for r in hist.records if "nc1" in r]
    return {
        "epochs": [r["step"] / steps_per_epoch for r in recs],
        "train_error": [1.0 - r["train_acc"] for r in recs],
        "test_error": [1.0 - r["test_acc"] for r in recs],
        "all_epochs": [r["step"] / steps_per_epoch for r in hist.records],
        "all_train_error": [1.0 - r["train_acc"] for r in hist.records],
        **{k: [r[k] for r in recs] for k in SERIES},
        "zero_error_epoch": next((r["step"] / steps_per_epoch for r in hist.records if r["train_acc"] >= 1.0), None),
    }


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _dataset(cfg, ctx.seed_for("data")).to(ctx.device)
    steps_per_epoch = math.ceil(ds.n_train / (cfg.batch_size or ds.n_train))
    main = _train_measured("main", cfg, ctx, ds, cfg.weight_decay, steps_per_epoch)
    control = _train_measured("control", cfg, ctx, ds, 0.0, steps_per_epoch)
    return {
        **main,
        "control": control,
        "n_classes": ds.n_classes,
        "n_train": ds.n_train,
    }


def _at(d: dict[str, Any], key: str, epoch: float | None) -> float | None:
    """``d[key]`` at the first measured epoch >= ``epoch`` (None if there is none)."""
    if epoch is None:
        return None
    i = next((i for i, e in enumerate(d["epochs"]) if e >= epoch), None)
    return None if i is None else d[key][i]


def _fall(start: float | None, end: float) -> float | None:
    return start / end if start is not None and end > 0 else None


def signature(result: Result) -> Verdict:
    d = result.data
    zero = d["zero_error_epoch"]
    ctrl = d["control"]
    # the control is read from its own zero-error epoch; if it never interpolates, over the main run's window
    ctrl_zero = ctrl["zero_error_epoch"] if ctrl["zero_error_epoch"] is not None else zero
    start = {k: _at(d, k, zero) for k in SERIES}
    end = {k: d[k][-1] for k in SERIES}
    fall = {k: _fall(start[k], end[k]) for k in SERIES}
    nc3_ratio = end["nc3"] / start["nc3"] if start["nc3"] else None
    ctrl_fall = _fall(_at(ctrl, "nc1", ctrl_zero), ctrl["nc1"][-1])
    ctrl_rel = ctrl_fall / fall["nc1"] if ctrl_fall is not None and fall["nc1"] else None

    def fall_check(key: str, label: str) -> Check:
        return check(f"NC2 {label} fall", fall[key], ">=", NC2_MIN_FALL, f"{label}(t0) / {label}(end)")

    checks = [
        check("NC1(t0)/NC1(end)", fall["nc1"], ">=", NC1_MIN_FALL, "tr(Sw Sb^+)/C falls from t0 to the end"),
        fall_check("nc2_equinorm", "mean-norm CV"),
        check(
            "NC2 mean-norm CV end", end["nc2_equinorm"], "<=", NC2_MAX_NORM_CV, "std/mean of ||mu_c - mu_G|| at the end"
        ),
        fall_check("nc2_w_equinorm", "classifier-norm CV"),
        check(
            "NC2 classifier-norm CV end", end["nc2_w_equinorm"], "<=", NC2_MAX_NORM_CV, "std/mean of ||w_c|| at the end"
        ),
        fall_check("nc2_max_angle", "max angle dev"),
        check(
            "NC2 max angle dev end",
            end["nc2_max_angle"],
            "<=",
            NC2_MAX_ANGLE_DEV,
            "max over pairs |cos(m_c, m_c') + 1/(C-1)| at the end",
        ),
        check("NC3(end)/NC3(t0)", nc3_ratio, "<=", NC3_MAX_RATIO, "||W/||W|| - M/||M|| ||^2 at the end vs t0"),
        check(
            "NC4 agreement",
            end["nc4"],
            ">=",
            NC4_MIN_AGREEMENT,
            "nearest-class-centre rule agrees with the net (train)",
        ),
        check(
            "control_nc1_fall_vs_main",
            ctrl_rel,
            "<=",
            CONTROL_MAX_REL_FALL,
            "NC1 fall of the same net trained without weight decay (from its own zero-error epoch) / the main fall",
        ),
    ]
    loss = "under MSE (Han et al. 2022): " if result.config.get("loss") == "mse" else "under cross-entropy: "
    if zero is None:
        summary = (
            f"{loss}training error never reached 0 in {d['epochs'][-1]:g} epochs (final {d['train_error'][-1]:.4f})"
        )
    else:
        summary = (
            f"{loss}zero train error at epoch {zero:g}; NC1 {start['nc1']:.3g} -> {end['nc1']:.3g}; "
            f"NC2 norm CV {start['nc2_equinorm']:.3f} -> {end['nc2_equinorm']:.3f} (classifier "
            f"{start['nc2_w_equinorm']:.3f} -> {end['nc2_w_equinorm']:.3f}), max angle dev "
            f"{start['nc2_max_angle']:.3f} -> {end['nc2_max_angle']:.3f}; NC3 {start['nc3']:.3f} -> {end['nc3']:.3f}; "
            f"NC4 {end['nc4']:.4f}; no-weight-decay control: NC1 falls "
            f"{'n/a' if ctrl_fall is None else f'{ctrl_fall:.2f}x'} (main {fall['nc1']:.3g}x)"
        )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    ctrl = d["control"]
    ep, cep = d["epochs"], ctrl["epochs"]
    fig, axes = new_figure(ncols=2, nrows=2, width=4.6, height=3.4)
    ax1, ax2, ax3, ax4 = axes
    ax1.semilogy(ep, d["nc1"], color="C0", label=f"wd={result.config['weight_decay']}")
    ax1.semilogy(cep, ctrl["nc1"], color="C0", ls="--", alpha=0.7, label="control: wd=0")
    ax1.set_ylabel("NC1 = tr(Sw Sb^+)/C")
    ax1.legend(fontsize=7)
    ax2.plot(ep, d["nc2_equinorm"], color="C1", label="CV ||mu_c - mu_G||")
    ax2.plot(ep, d["nc2_w_equinorm"], color="C2", label="CV ||w_c||")
    ax2.plot(ep, d["nc2_max_angle"], color="C3", label="max |cos + 1/(C-1)|")
    ax2.plot(cep, ctrl["nc2_max_angle"], color="C3", ls="--", alpha=0.7, label="max |cos + 1/(C-1)|, wd=0")
    ax2.axhline(NC2_MAX_NORM_CV, color="grey", lw=0.8, ls=":")
    ax2.axhline(NC2_MAX_ANGLE_DEV, color="grey", lw=0.8, ls="-.")
    ax2.set_yscale("log")
    ax2.set_ylabel("NC2")
    ax2.legend(fontsize=6)
    ax3.plot(ep, d["nc3"], color="C4")
    ax3.plot(cep, ctrl["nc3"], color="C4", ls="--", alpha=0.7)
    ax3.set_ylabel("NC3 = ||W/||W|| - M/||M|| ||^2")
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
    ax1.set_title(f"zero train error at epoch {d['zero_error_epoch']} (control {ctrl['zero_error_epoch']})", fontsize=9)
    fig.suptitle(
        f"neural collapse: {result.config['model']} on {result.config['dataset']}, "
        f"{result.config['loss']} loss, wd={result.config['weight_decay']} (dashed: wd=0 control)"
    )
    return [save(fig, out_dir, "neural_collapse")]
