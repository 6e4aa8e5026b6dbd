"""Neural collapse transfers to new classes: more source classes, stronger new-class collapse, better few-shot transfer.

Galanti, György, Hutter 2022, "On the role of neural collapse in transfer learning" (ICLR, arXiv 2112.15121);
Galanti, György, Hutter 2023, "Generalization bounds for few-shot transfer learning with pretrained
classifiers" (arXiv 2212.12532).

``CDNV(i, j) = (Var(i) + Var(j)) / (2 ||mu(i) - mu(j)||^2)`` of the penultimate features on the held-out new
classes, averaged over class pairs; ``ways``-way ``shots``-shot (5-way 5-shot) NCC error on the new classes.
The classes are MNIST-1D's generative process applied to random templates (``data.mnist1d_templates``: translation,
scaling, shear and noise shared by every class). Encoders (a ReLU ``SmallCNN`` with global average pooling) are
trained on the first ``K`` of the source classes, ``K`` in ``source_counts`` (5/10/20/40), ``inits`` nets each (the
same steps, the same new classes and few-shot episodes). Checks (``K_max`` = the largest ``K``):
- more source classes, stronger collapse: ``Spearman(K, new CDNV)`` over the runs <= ``-TRACK_SPEARMAN`` (-0.8);
- collapse predicts transfer: ``Spearman(new CDNV, 5-shot error)`` across the runs (never across checkpoints)
  >= ``TRACK_SPEARMAN`` (0.8);
- gain: mean 5-shot error at ``K_max`` <= ``GAIN_RATIO`` (0.7) x that of the raw input;
- real split (``mnist1d``): train on digits 0-4, 5-way 5-shot on 5-9: error <= ``GAIN_RATIO`` x raw input's;
- controls: a linear encoder (the MLP with identity activations, a linear map of the input of which every linear
  conv net is a special case; the same training) must show neither the link
  (its ``Spearman(new CDNV, 5-shot error)`` < 0.8) nor the gain (its error at ``K_max`` and on mnist1d > 0.7 x
  the raw input's); the trained encoder at its initialisation (the same draws, no step) must not reach the gain
  bar either, on both data (``control_untrained_*`` > 0.7 x the raw input's error).

Background, measurements and caveats: docs/phenomena/collapse-transfer.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, class_split, gaussian_mixture, mnist1d, mnist1d_templates
from ..errors import ConfigError
from ..models import MLP, SmallCNN
from ..probes.activations import features
from ..probes.collapse import cdnv, few_shot_ncc_error
from ._stats import fmt, spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "collapse-transfer"

# the issue-11 bars, fixed before any run. Quick preset (templates, CNN; pre-registered 2026-12-05), seeds 0-2, mean
# (seed std): Spearman(K, CDNV) -0.95 (0.04); Spearman(CDNV, error) 0.96 (0.07), linear -0.34 (0.61); error/raw at
# K=40 0.22 (0.04), linear 0.86 (0.002), untrained 0.79 (0.04); mnist1d error/raw 0.39 (0.02), linear 0.81 (0.006),
# untrained 0.79 (0.01)
TRACK_SPEARMAN = 0.8
GAIN_RATIO = 0.7  # trained features' 5-shot error / the raw input's
DATASETS = ("templates", "mixture")
ENCODERS = ("cnn", "mlp")  # the trained encoder; the control is always the linear MLP
MNIST1D_SOURCE = (0, 1, 2, 3, 4)  # the real split: digits 0-4 are source, 5-9 new


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(optimizer="sgd", lr=0.05, steps=1500, batch_size=128, weight_decay=0.0, momentum=0.9, eval_every=1500),
):
    dataset: str = param(
        "templates",
        "'templates': MNIST-1D's process on random templates; 'mixture': the subspace mixture (the protocol until "
        "2026-12-05)",
        choices=DATASETS,
    )
    encoder: str = param(
        "cnn", "trained encoder: 'cnn' (SmallCNN, ReLU, global average pool) or 'mlp' (ReLU MLP)", choices=ENCODERS
    )
    n_classes: int = param(60, "classes (source pool + new)", ge=3)
    source_classes: int = param(40, "size of the source pool; the rest are the new classes", ge=2)
    source_counts: tuple[int, ...] = param((5, 10, 20, 40), "numbers K of source classes trained on", ge=2)
    inits: int = param(3, "nets (init seeds) per K and encoder", ge=1)
    signal_dim: int = param(16, "mixture: dimension of the subspace spanned by the class means", gt=0)
    nuisance_dim: int = param(48, "mixture: extra input dimensions of class-independent noise", ge=0)
    separation: float = param(6.0, "mixture: class means ~ N(0, separation^2/signal_dim I)", gt=0.0)
    noise: float = param(1.0, "mixture: within-class std in the signal subspace", ge=0.0)
    nuisance_std: float = param(2.0, "mixture: std of the nuisance coordinates", ge=0.0)
    n_train_per_class: int = param(50, "training points per source class", gt=0)
    n_test_per_class: int = param(100, "test points per class (new classes use train + test points)", gt=0)
    channels: tuple[int, ...] = param((32, 64), "CNN encoder: conv channels", gt=0)
    hidden: int = param(128, "CNN encoder: width of its penultimate (fc) layer", gt=0)
    width: int = param(256, "MLP encoder and linear control: hidden width", gt=0)
    depth: int = param(2, "MLP encoder and linear control: hidden layers", gt=0)
    shots: int = param(5, "support samples per class in a few-shot episode", ge=1)
    ways: int = param(5, "classes per few-shot episode", ge=2)
    episodes: int = param(200, "few-shot episodes per measurement (the same episodes for every encoder)", ge=1)
    mnist1d_train: int = param(4000, "mnist1d points generated for the real split (0: skip it)", ge=0)

    def validate(self) -> None:
        super().validate()
        if self.source_classes >= self.n_classes:
            raise ConfigError(f"source_classes={self.source_classes} must be < n_classes={self.n_classes}")
        if max(self.source_counts) > self.source_classes or len(set(self.source_counts)) < 3:
            raise ConfigError(
                f"source_counts={self.source_counts} needs >= 3 distinct values <= source_classes={self.source_classes}"
            )
        if self.ways > self.n_classes - self.source_classes:
            raise ConfigError(f"ways={self.ways} exceeds the {self.n_classes - self.source_classes} new classes")
        if self.shots >= self.n_train_per_class + self.n_test_per_class:
            raise ConfigError(f"shots={self.shots} leaves no query points per new class")
        if self.eval_every > self.steps:
            raise ConfigError(f"eval_every={self.eval_every} must be <= steps={self.steps}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        n_classes=12,
        source_classes=8,
        source_counts=(2, 4, 8),
        inits=1,
        n_train_per_class=12,
        n_test_per_class=8,
        channels=(4, 8),
        hidden=16,
        width=32,
        steps=30,
        eval_every=30,
        ways=4,
        episodes=5,
        mnist1d_train=300,
    ),
    "quick": {},
    # closer to the papers' mini-ImageNet protocol: up to 64 source classes, 5-way 5-shot on held-out
    # classes, a wider CNN trained longer (their nets are ResNets/WRNs on images); seed 0 passes (docs page)
    "paper": {
        "n_classes": 100,
        "source_classes": 64,
        "source_counts": (8, 16, 32, 64),
        "n_train_per_class": 200,
        "channels": (64, 128),
        "hidden": 256,
        "lr": 0.01,
        "weight_decay": 5e-4,
        "steps": 10000,
        "eval_every": 10000,
        "episodes": 1000,
    },
}


def make_data(cfg: Config, seed: int) -> Dataset:
    """The K-sweep's classes: MNIST-1D's process on random templates, or the subspace mixture (``cfg.dataset``)."""
    if cfg.dataset == "templates":
        return mnist1d_templates(cfg.n_classes, cfg.n_train_per_class, cfg.n_test_per_class, seed=seed)
    return subspace_mixture(cfg, seed)


def subspace_mixture(cfg: Config, seed: int) -> Dataset:
    """Signal subspace + nuisance coordinates, randomly rotated (docs/phenomena/collapse-transfer.md)."""
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


def _model(cfg: Config, in_dim: int, n_out: int, enc: str) -> nn.Module:
    if enc == "linear":
        # the control: a linear map of the input (any linear conv net, pooled or not, is one such map)
        return MLP(in_dim, n_out, cfg.width, cfg.depth, activation_name="linear")
    if cfg.encoder == "cnn":
        return SmallCNN(1, n_out, channels=cfg.channels, hidden=cfg.hidden)
    return MLP(in_dim, n_out, cfg.width, cfg.depth)


def _run_name(cfg: Config, enc: str) -> str:
    # the training run's name seeds its minibatch order: named by architecture, so that
    # `--set encoder=mlp` replays the stored runs of the MLP protocol exactly
    return cfg.encoder if enc == "encoder" else enc


def _encode(
    cfg: Config, ctx: RunContext, name: str, enc: str, train: Dataset, x_new: torch.Tensor, y_new: torch.Tensor, k: int
) -> dict[str, float]:
    """Train one encoder on ``train`` and measure its penultimate features on the new classes."""
    torch.manual_seed(ctx.seed_for("init", k))  # init k is the same draw for every K (up to the output layer)
    model = _model(cfg, train.input_dim, train.n_classes, enc).to(ctx.device)
    hist = ctx.train(name, model, train.train(), cfg.train_config(), eval_sets={"test": train.test()})
    f = features(model, x_new, [model.penultimate])[model.penultimate]
    return {"feats": f, "train_acc": hist.last("train_acc"), "test_acc": hist.last("test_acc")}


def _untrained(
    cfg: Config,
    ctx: RunContext,
    in_dim: int,
    n_out: int,
    x_new: torch.Tensor,
    y_new: torch.Tensor,
    few_shot: Callable[[torch.Tensor], float],
) -> dict[str, list[float]]:
    """New-class CDNV and few-shot error of the trained encoder's ``inits`` initialisations, before any step."""
    feats = []
    for k in range(cfg.inits):
        torch.manual_seed(ctx.seed_for("init", k))  # the same draws as the trained nets
        model = _model(cfg, in_dim, n_out, "encoder").to(ctx.device)
        feats.append(features(model, x_new, [model.penultimate])[model.penultimate])
    return {"cdnv_new": [cdnv(f, y_new) for f in feats], "fewshot_error": [few_shot(f) for f in feats]}


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = make_data(cfg, ctx.seed_for("data"))
    pool, new = class_split(ds, cfg.source_classes, seed=ctx.seed_for("split"))
    pool, new = pool.to(ctx.device), new.to(ctx.device)
    x_new = torch.cat([new.x_train, new.x_test])
    y_new = torch.cat([new.y_train, new.y_test])
    episode_seed = ctx.seed_for("episodes")

    def few_shot(f: torch.Tensor, y: torch.Tensor = y_new) -> float:
        return few_shot_ncc_error(f, y, shots=cfg.shots, ways=cfg.ways, episodes=cfg.episodes, seed=episode_seed)

    counts = sorted(set(cfg.source_counts))
    out: dict[str, Any] = {
        "source_counts": counts,
        "inits": cfg.inits,
        "fewshot_error_input": few_shot(x_new),
        "cdnv_new_input": cdnv(x_new, y_new),
        "chance_error": 1.0 - 1.0 / cfg.ways,
    }
    for enc in ("encoder", "linear"):
        rows: dict[str, list[list[float]]] = {"cdnv_new": [], "fewshot_error": [], "train_acc": [], "test_acc": []}
        for K in counts:
            # nested source sets: the first K classes of the pool (relabelled 0..K-1 already)
            sub = _first_classes(pool, K)
            runs = [
                _encode(cfg, ctx, f"{_run_name(cfg, enc)}_K{K}_init{k}", enc, sub, x_new, y_new, k)
                for k in range(cfg.inits)
            ]
            rows["cdnv_new"].append([cdnv(r["feats"], y_new) for r in runs])
            rows["fewshot_error"].append([few_shot(r["feats"]) for r in runs])
            rows["train_acc"].append([r["train_acc"] for r in runs])
            rows["test_acc"].append([r["test_acc"] for r in runs])
        out[enc] = rows
    out["untrained"] = _untrained(cfg, ctx, pool.input_dim, max(counts), x_new, y_new, few_shot)
    out["mnist1d"] = _mnist1d(cfg, ctx) if cfg.mnist1d_train > 0 else None
    return out


def _first_classes(ds: Dataset, k: int) -> Dataset:
    """The classes ``0..k-1`` of ``ds`` (labels unchanged)."""
    mtr, mte = ds.y_train < k, ds.y_test < k
    return replace(
        ds, x_train=ds.x_train[mtr], y_train=ds.y_train[mtr], x_test=ds.x_test[mte], y_test=ds.y_test[mte], n_classes=k
    )


def _mnist1d(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """The real split: encoders trained on mnist1d digits 0-4, 5-way few-shot NCC on digits 5-9."""
    ds = mnist1d(n_train=cfg.mnist1d_train, n_test=max(cfg.mnist1d_train // 4, 1), seed=ctx.seed_for("mnist1d"))
    source, new = class_split(ds, list(MNIST1D_SOURCE))
    source, new = source.to(ctx.device), new.to(ctx.device)
    x_new = torch.cat([new.x_train, new.x_test])
    y_new = torch.cat([new.y_train, new.y_test])
    seed = ctx.seed_for("mnist1d", "episodes")

    def few_shot(f: torch.Tensor) -> float:
        return few_shot_ncc_error(f, y_new, shots=cfg.shots, ways=5, episodes=cfg.episodes, seed=seed)

    out: dict[str, Any] = {"fewshot_error_input": few_shot(x_new), "cdnv_new_input": cdnv(x_new, y_new)}
    for enc in ("encoder", "linear"):
        runs = [
            _encode(cfg, ctx, f"mnist1d_{_run_name(cfg, enc)}_init{k}", enc, source, x_new, y_new, k)
            for k in range(cfg.inits)
        ]
        out[enc] = {
            "cdnv_new": [cdnv(r["feats"], y_new) for r in runs],
            "fewshot_error": [few_shot(r["feats"]) for r in runs],
            "train_acc": [r["train_acc"] for r in runs],
            "test_acc": [r["test_acc"] for r in runs],
        }
    out["untrained"] = _untrained(cfg, ctx, source.input_dim, source.n_classes, x_new, y_new, few_shot)
    return out


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _trained_key(d: dict[str, Any]) -> str:
    """The trained encoder's entry: 'encoder' since 2026-12-05, 'mlp' in runs stored before."""
    return "encoder" if "encoder" in d else "mlp"


def _label(config: dict[str, Any]) -> str:
    if config.get("encoder", "mlp") == "cnn":
        return "ReLU CNN"
    return "ReLU MLP"


def signature(result: Result) -> Verdict:
    d = result.data
    counts = d["source_counts"]
    raw = d["fewshot_error_input"]

    def link(enc: str) -> float | None:
        r = d[enc]
        return spearman([c for row in r["cdnv_new"] for c in row], [e for row in r["fewshot_error"] for e in row])

    def gain(enc: str) -> float | None:
        return _mean(d[enc]["fewshot_error"][-1]) / raw if raw > 0 else None

    tr = _trained_key(d)
    trained = d[tr]
    ks = [K for K, row in zip(counts, trained["cdnv_new"], strict=True) for _ in row]
    more = spearman(ks, [c for row in trained["cdnv_new"] for c in row])
    m1 = d.get("mnist1d")
    m1_gain = {e: _mean(m1[e]["fewshot_error"]) / m1["fewshot_error_input"] for e in (tr, "linear")} if m1 else {}
    kmax = counts[-1]
    checks = [
        check(
            "spearman(K, cdnv_new)",
            more,
            "<=",
            -TRACK_SPEARMAN,
            "more source classes: stronger collapse (lower CDNV) of the new classes, across runs",
        ),
        check(
            "spearman(cdnv_new, fewshot_error)",
            link(tr),
            ">=",
            TRACK_SPEARMAN,
            "across runs (K x inits, final features), the new-class 5-shot error tracks new-class CDNV",
        ),
        check(
            f"fewshot_error(K={kmax})/input",
            gain(tr),
            "<=",
            GAIN_RATIO,
            f"trained features (K={kmax}) have 5-shot error <= {GAIN_RATIO} x the raw input's",
        ),
    ]
    if m1:
        checks.append(
            check(
                "mnist1d_fewshot_error/input",
                m1_gain[tr],
                "<=",
                GAIN_RATIO,
                f"real split: trained on mnist1d digits 0-4, 5-shot error on 5-9 <= {GAIN_RATIO} x the raw input's",
            )
        )
    checks += [
        check(
            "control_linear_spearman(cdnv_new, fewshot_error)",
            link("linear"),
            "<",
            TRACK_SPEARMAN,
            "control: a linear encoder trained the same way shows no CDNV -> few-shot link across its runs",
        ),
        check(
            f"control_linear_fewshot_error(K={kmax})/input",
            gain("linear"),
            ">",
            GAIN_RATIO,
            f"control: the linear encoder does not reach the gain bar ({GAIN_RATIO} x the raw input's error)",
        ),
    ]
    if m1:
        checks.append(
            check(
                "control_mnist1d_linear_fewshot_error/input",
                m1_gain["linear"],
                ">",
                GAIN_RATIO,
                "control: on the real split the linear encoder does not reach the gain bar",
            )
        )
    # runs stored before 2026-12-05 have no untrained arm
    if "untrained" in d:
        checks.append(
            check(
                "control_untrained_fewshot_error/input",
                _mean(d["untrained"]["fewshot_error"]) / raw if raw > 0 else None,
                ">",
                GAIN_RATIO,
                "control: the trained encoder at its initialisation (no step) does not reach the gain bar",
            )
        )
    if m1 and "untrained" in m1:
        checks.append(
            check(
                "control_mnist1d_untrained_fewshot_error/input",
                _mean(m1["untrained"]["fewshot_error"]) / m1["fewshot_error_input"],
                ">",
                GAIN_RATIO,
                "control: on the real split the untrained encoder does not reach the gain bar",
            )
        )
    per_k = ", ".join(
        f"K={K}: CDNV {_mean(c):.3g} err {_mean(e):.3f} (linear {_mean(lc):.3g}/{_mean(le):.3f})"
        for K, c, e, lc, le in zip(
            counts,
            trained["cdnv_new"],
            trained["fewshot_error"],
            d["linear"]["cdnv_new"],
            d["linear"]["fewshot_error"],
            strict=True,
        )
    )
    summary = (
        f"new classes, {_label(result.config)} (linear control): {per_k}; raw input err {raw:.3f}; "
        f"Spearman link trained {fmt(link(tr))}, linear {fmt(link('linear'))}"
    )
    if "untrained" in d:
        summary += f"; untrained encoder err {_mean(d['untrained']['fewshot_error']):.3f}"
    if m1:
        summary += (
            f"; mnist1d 5-shot err raw {m1['fewshot_error_input']:.3f}, trained {_mean(m1[tr]['fewshot_error']):.3f}, "
            f"linear {_mean(m1['linear']['fewshot_error']):.3f}"
        )
        if "untrained" in m1:
            summary += f", untrained {_mean(m1['untrained']['fewshot_error']):.3f}"
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    c = result.config
    counts = d["source_counts"]
    fig, (ax, ax2) = new_figure(ncols=2, width=4.8, height=3.8)
    tr = _trained_key(d)
    for enc, color, label in ((tr, "C0", _label(c)), ("linear", "C7", "linear encoder (control)")):
        r = d[enc]
        ax.plot(counts, [_mean(v) for v in r["cdnv_new"]], "o-", color=color, label=label)
        ax2.plot(counts, [_mean(v) for v in r["fewshot_error"]], "o-", color=color, label=label)
        for K, cs, es in zip(counts, r["cdnv_new"], r["fewshot_error"], strict=True):
            ax.scatter([K] * len(cs), cs, color=color, s=10, alpha=0.4)
            ax2.scatter([K] * len(es), es, color=color, s=10, alpha=0.4)
    ax.axhline(d["cdnv_new_input"], color="grey", ls=":", lw=1, label="raw input")
    if "untrained" in d:
        ax.axhline(_mean(d["untrained"]["cdnv_new"]), color="C3", ls="--", lw=1, label="untrained encoder")
    ax2.axhline(d["fewshot_error_input"], color="grey", ls=":", lw=1, label="raw input")
    if "untrained" in d:
        ax2.axhline(_mean(d["untrained"]["fewshot_error"]), color="C3", ls="--", lw=1, label="untrained encoder")
    for a, ylabel in ((ax, "CDNV on new classes"), (ax2, f"{c['ways']}-way {c['shots']}-shot NCC error, new classes")):
        a.set_xscale("log")
        a.minorticks_off()  # the log axis's minor labels (6x10^0, 3x10^1) would crowd the K ticks
        a.set_xticks(counts)
        a.set_xticklabels([str(k) for k in counts])
        a.set_xlabel("source classes K")
        a.set_ylabel(ylabel)
        a.legend(fontsize=7)
    ax.set_yscale("log")
    ax.set_title("collapse on new classes")
    ax2.set_title("few-shot transfer")
    paths = [save(fig, out_dir, "transfer_vs_source_classes")]

    fig, ax = new_figure(width=4.6, height=3.8)
    for enc, color, label in ((tr, "C0", _label(c)), ("linear", "C7", "linear encoder")):
        r = d[enc]
        ax.scatter(
            [x for row in r["cdnv_new"] for x in row],
            [e for row in r["fewshot_error"] for e in row],
            color=color,
            s=16,
            label=label,
        )
    if "untrained" in d:
        u = d["untrained"]
        ax.scatter(u["cdnv_new"], u["fewshot_error"], color="C3", marker="x", s=20, label="untrained encoder")
    ax.set_xscale("log")
    ax.set_xlabel("CDNV on new classes (one point per run)")
    ax.set_ylabel("5-shot NCC error on new classes")
    ax.set_title("few-shot error vs collapse, across runs")
    ax.legend(fontsize=8)
    paths.append(save(fig, out_dir, "fewshot_vs_cdnv"))
    return paths
