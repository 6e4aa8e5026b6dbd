"""Neural collapse transfers to new classes and predicts few-shot error.

Galanti, György, Hutter 2022, "On the role of neural collapse in transfer learning" (ICLR, arXiv 2112.15121);
Galanti, György, Hutter 2023, "Generalization bounds for few-shot transfer learning with pretrained
classifiers" (arXiv 2212.12532).

``CDNV(i, j) = (Var(i) + Var(j)) / (2 ||mu(i) - mu(j)||^2)`` of the penultimate features, averaged over class
pairs, on source-train, source-test and the held-out new classes. Checks:
- on each set, final CDNV <= ``CDNV_FALL`` (0.5) x CDNV at initialisation;
- the new-class ``ways``-way ``shots``-shot (5-way 5-shot) NCC error of the trained features < that at step 0;
- ``Spearman(new-class CDNV, new-class few-shot error)`` over checkpoints >= ``TRACK_SPEARMAN`` (0.8).

Background, measurements and caveats: docs/phenomena/collapse-transfer.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, class_split, gaussian_mixture
from ..errors import ConfigError
from ..models import MLP
from ..probes.activations import features
from ..probes.collapse import cdnv, few_shot_ncc_error
from ..train import TrainState
from ._stats import spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "collapse-transfer"

CDNV_FALL = 0.5  # "falls": final / initial CDNV at most this
TRACK_SPEARMAN = 0.8
SETS = ("source_train", "source_test", "new")


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(optimizer="sgd", lr=0.05, steps=1500, batch_size=128, weight_decay=0.0, momentum=0.0, eval_every=100),
):
    n_classes: int = param(60, "classes of the Gaussian mixture (source + new)", ge=3)
    source_classes: int = param(40, "classes used for training; the rest are the new classes", ge=2)
    signal_dim: int = param(16, "dimension of the subspace spanned by the class means", gt=0)
    nuisance_dim: int = param(48, "extra input dimensions of class-independent noise", ge=0)
    separation: float = param(6.0, "class means ~ N(0, separation^2/signal_dim I)", gt=0.0)
    noise: float = param(1.0, "within-class std in the signal subspace", ge=0.0)
    nuisance_std: float = param(2.0, "std of the nuisance coordinates", ge=0.0)
    n_train_per_class: int = param(50, "training points per source class", gt=0)
    n_test_per_class: int = param(100, "test points per class (new classes use train + test points)", gt=0)
    width: int = param(256, "MLP hidden width", gt=0)
    depth: int = param(2, "MLP hidden layers", gt=0)
    shots: int = param(5, "support samples per class in a few-shot episode", ge=1)
    ways: int = param(5, "classes per few-shot episode", ge=2)
    episodes: int = param(200, "few-shot episodes per checkpoint (the same episodes at every checkpoint)", ge=1)

    def validate(self) -> None:
        super().validate()
        if self.source_classes >= self.n_classes:
            raise ConfigError(f"source_classes={self.source_classes} must be < n_classes={self.n_classes}")
        if self.ways > self.n_classes - self.source_classes:
            raise ConfigError(f"ways={self.ways} exceeds the {self.n_classes - self.source_classes} new classes")
        if self.shots >= self.n_train_per_class + self.n_test_per_class:
            raise ConfigError(f"shots={self.shots} leaves no query points per new class")
        if self.eval_every > self.steps:
            raise ConfigError(f"eval_every={self.eval_every} > steps={self.steps}: only two checkpoints")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        n_classes=12,
        source_classes=8,
        signal_dim=4,
        nuisance_dim=4,
        n_train_per_class=12,
        n_test_per_class=8,
        width=32,
        steps=30,
        eval_every=10,
        ways=4,
        episodes=5,
    ),
    "quick": {},
    # closer to the papers' mini-ImageNet protocol: 64 source classes, 5-way 5-shot on held-out
    # classes, a deeper/wider net trained longer (their nets are ResNets/WRNs on images)
    "paper": {
        "n_classes": 100,
        "source_classes": 64,
        "signal_dim": 32,
        "nuisance_dim": 96,
        "n_train_per_class": 200,
        "n_test_per_class": 100,
        "width": 512,
        "depth": 3,
        "momentum": 0.9,
        "lr": 0.01,
        "weight_decay": 5e-4,
        "steps": 10000,
        "eval_every": 250,
        "episodes": 1000,
    },
}


def make_data(cfg: Config, seed: int) -> Dataset:
    """The mixture of docs/phenomena/collapse-transfer.md: signal subspace + nuisance coordinates, randomly rotated."""
    base = gaussian_mixture(
        cfg.n_classes, cfg.signal_dim, cfg.n_train_per_class, cfg.n_test_per_class, cfg.separation, cfg.noise, seed=seed
    )
    dim = cfg.signal_dim + cfg.nuisance_dim
    g = torch.Generator().manual_seed(seed + 1)
    # a Haar-random rotation: the signal subspace is a random subspace, not the first coordinates
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    q = q * torch.sign(torch.diagonal(r))

    def embed(x: torch.Tensor) -> torch.Tensor:
        nuis = cfg.nuisance_std * torch.randn(len(x), cfg.nuisance_dim, generator=g)
        return torch.cat([x, nuis], 1) @ q.T

    return replace(
        base,
        x_train=embed(base.x_train),
        x_test=embed(base.x_test),
        name="subspace_mixture",
        meta={
            **base.meta,
            "name": "subspace_mixture",
            "nuisance_dim": cfg.nuisance_dim,
            "nuisance_std": cfg.nuisance_std,
        },
    )


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = make_data(cfg, ctx.seed_for("data"))
    source, new = class_split(ds, cfg.source_classes, seed=ctx.seed_for("split"))
    source, new = source.to(ctx.device), new.to(ctx.device)
    x_new = torch.cat([new.x_train, new.x_test])
    y_new = torch.cat([new.y_train, new.y_test])
    episode_seed = ctx.seed_for("episodes")

    def few_shot(f: torch.Tensor) -> float:
        return few_shot_ncc_error(f, y_new, shots=cfg.shots, ways=cfg.ways, episodes=cfg.episodes, seed=episode_seed)

    torch.manual_seed(ctx.seed_for("init"))
    model = MLP(source.input_dim, source.n_classes, cfg.width, cfg.depth).to(ctx.device)
    layer = model.penultimate

    def measure(s: TrainState) -> dict[str, float]:
        sets = {"source_train": source.train(), "source_test": source.test(), "new": (x_new, y_new)}
        out: dict[str, float] = {}
        for name, (x, y) in sets.items():
            f = features(s.model, x, [layer])[layer]
            out[f"cdnv_{name}"] = cdnv(f, y)
            if name == "new":
                out["fewshot_error"] = few_shot(f)
        return out

    tcfg = cfg.train_config()
    hist = ctx.train("source", model, source.train(), tcfg, eval_sets={"test": source.test()}, callbacks=[measure])
    recs = hist.records
    return {
        "steps": [int(r["step"]) for r in recs],
        **{f"cdnv_{k}": [float(r[f"cdnv_{k}"]) for r in recs] for k in SETS},
        "fewshot_error": [float(r["fewshot_error"]) for r in recs],
        "train_acc": [float(r["train_acc"]) for r in recs],
        "test_acc": [float(r["test_acc"]) for r in recs],
        # reference: the same episodes on the raw inputs
        "fewshot_error_input": few_shot(x_new),
        "chance_error": 1.0 - 1.0 / cfg.ways,
    }


def signature(result: Result) -> Verdict:
    d = result.data
    ratios = {k: d[f"cdnv_{k}"][-1] / d[f"cdnv_{k}"][0] if d[f"cdnv_{k}"][0] > 0 else None for k in SETS}
    fs = d["fewshot_error"]
    fs_ratio = fs[-1] / fs[0] if fs[0] > 0 else None
    rho = spearman(d["cdnv_new"], fs, min_points=3)
    checks = [
        check(
            f"cdnv_{k}_final/initial",
            ratios[k],
            "<=",
            CDNV_FALL,
            f"CDNV on {k.replace('_', '-')} falls to at most {CDNV_FALL} x its value at initialisation",
        )
        for k in SETS
    ]
    checks += [
        check(
            "fewshot_error_final/random_init",
            fs_ratio,
            "<",
            1.0,
            "5-shot NCC error on new classes of the trained features is below that of the random-init features",
        ),
        check(
            "spearman(cdnv_new, fewshot_error)",
            rho,
            ">=",
            TRACK_SPEARMAN,
            "few-shot error tracks new-class CDNV across checkpoints",
        ),
    ]
    summary = (
        f"CDNV init->final: source-train {d['cdnv_source_train'][0]:.3g}->{d['cdnv_source_train'][-1]:.3g}, "
        f"source-test {d['cdnv_source_test'][0]:.3g}->{d['cdnv_source_test'][-1]:.3g}, "
        f"new {d['cdnv_new'][0]:.3g}->{d['cdnv_new'][-1]:.3g}; 5-shot error on new classes "
        f"{fs[0]:.3f}->{fs[-1]:.3f} (raw input {d['fewshot_error_input']:.3f}); "
        f"Spearman {'n/a' if rho is None else f'{rho:.3f}'}; source test acc {d['test_acc'][-1]:.3f}"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    steps = d["steps"]
    fig, (ax, ax2) = new_figure(ncols=2, width=5.0, height=3.8)
    labels = {"source_train": "source train", "source_test": "source test", "new": "new classes"}
    for i, k in enumerate(SETS):
        ax.plot(steps, d[f"cdnv_{k}"], marker="o", ms=3, color=f"C{i}", label=labels[k])
    ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("CDNV (penultimate layer)")
    ax.set_title("class-distance normalised variance")
    ax.legend(fontsize=8)
    c = result.config
    ax2.plot(steps, d["fewshot_error"], marker="o", ms=3, color="C3", label="trained features (checkpoint)")
    ax2.axhline(d["fewshot_error_input"], color="grey", ls=":", lw=1, label="raw input")
    ax2.set_xlabel("optimisation step")
    ax2.set_ylabel(f"{c['ways']}-way {c['shots']}-shot NCC error")
    ax2.set_title("few-shot error on new classes")
    ax2.legend(fontsize=8)
    paths = [save(fig, out_dir, "cdnv_and_fewshot")]

    fig, ax = new_figure(width=4.6, height=3.8)
    sc = ax.scatter(d["cdnv_new"], d["fewshot_error"], c=steps, cmap="viridis", s=18)
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_xscale("log")
    ax.set_xlabel("CDNV on new classes")
    ax.set_ylabel("5-shot NCC error on new classes")
    ax.set_title("few-shot error tracks CDNV")
    paths.append(save(fig, out_dir, "fewshot_vs_cdnv"))
    return paths
