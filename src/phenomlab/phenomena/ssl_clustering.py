"""Self-supervised learning clusters by semantic class, more so with depth.

Ben-Shaul, Shwartz-Ziv, Galanti, Dekel, LeCun 2023, "Reverse engineering self-supervised learning" (NeurIPS,
arXiv 2305.15614); the objective is VICReg (Bardes, Ponce, LeCun 2022, arXiv 2105.04906; :func:`vicreg_loss`).

NCC accuracy on held-out points with class centres from training features; "the representation" is the deepest
encoder layer ``out``. Checks:
- semantic NCC accuracy of the representation, final minus initial >= ``MIN_RISE`` (0.05);
- final semantic minus final random-label NCC accuracy of the representation >= ``MIN_GAP`` (0.20);
- at the end, ``Spearman(layer index, semantic NCC)`` over the encoder layers >= ``DEPTH_SPEARMAN`` (0.8), and
  deepest minus shallowest layer >= ``MIN_DEPTH_GAIN`` (0.05);
- final semantic NCC, full minus ablation (variance/covariance coefficients 0) >= ``MIN_ABLATION_DROP`` (0.05).

Background, measurements and caveats: docs/phenomena/ssl-clustering.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, mnist1d
from ..data.augment import Augment1D
from ..errors import ConfigError
from ..models import SmallCNN
from ..probes.activations import features
from ..probes.collapse import ncc_accuracy
from ..seeding import derive_seed
from ..train import Objective, TrainState
from ._stats import spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "ssl-clustering"

MIN_RISE = 0.05
MIN_GAP = 0.20
DEPTH_SPEARMAN = 0.8
MIN_DEPTH_GAIN = 0.05
MIN_ABLATION_DROP = 0.05


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(lr=1e-3, steps=2000, batch_size=256, weight_decay=0.0, eval_every=250)):
    n_train: int = param(4000, "MNIST-1D training signals (class centres)", gt=0)
    n_test: int = param(1000, "MNIST-1D held-out signals (NCC accuracy)", gt=0)
    channels: tuple[int, ...] = param((32, 64), "conv channels of the SmallCNN encoder", gt=0)
    kernel_size: int = param(5, "conv kernel size", gt=0)
    hidden: int = param(128, "width of the encoder's fc layer after pooling", gt=0)
    rep_dim: int = param(128, "representation (encoder output) dimension", gt=0)
    proj_dim: int = param(256, "projector (expander) width", gt=0)
    sim_coeff: float = param(25.0, "VICReg invariance coefficient lambda", ge=0.0)
    std_coeff: float = param(25.0, "VICReg variance coefficient mu", ge=0.0)
    cov_coeff: float = param(1.0, "VICReg covariance coefficient nu", ge=0.0)
    ablation: bool = param(True, "also run the same training with std_coeff = cov_coeff = 0")
    max_shift: int = param(20, "augmentation: max circular shift (steps)", ge=0)
    scale_low: float = param(0.8, "augmentation: min amplitude factor", ge=0.0)
    scale_high: float = param(1.2, "augmentation: max amplitude factor", ge=0.0)
    max_stretch: float = param(0.15, "augmentation: max relative time stretch", ge=0.0)
    mask_fraction: float = param(0.15, "augmentation: max masked fraction", ge=0.0, le=1.0)
    noise_std: float = param(0.1, "augmentation: additive Gaussian noise std", ge=0.0)

    def validate(self) -> None:
        super().validate()
        if not self.channels:
            raise ConfigError("channels must list at least one conv layer")
        if self.scale_low > self.scale_high:
            raise ConfigError(f"scale_low={self.scale_low} > scale_high={self.scale_high}")
        if self.batch_size > self.n_train:
            raise ConfigError(f"batch_size={self.batch_size} > n_train={self.n_train}")
        if self.batch_size == 1 or (self.batch_size and self.n_train % self.batch_size == 1):
            # each epoch ends with the remainder batch; one signal has no batch variance/covariance
            raise ConfigError(
                f"n_train={self.n_train} leaves a batch of one signal at the end of each epoch "
                f"(batch_size={self.batch_size}); VICReg needs at least two"
            )
        if self.eval_every > self.steps:
            raise ConfigError(f"eval_every={self.eval_every} > steps={self.steps}")

    def augment(self) -> Augment1D:
        return Augment1D(
            max_shift=self.max_shift,
            scale_range=(self.scale_low, self.scale_high),
            noise_std=self.noise_std,
            max_stretch=self.max_stretch,
            mask_fraction=self.mask_fraction,
        )


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        n_train=300,
        n_test=100,
        channels=(8,),
        hidden=16,
        rep_dim=16,
        proj_dim=32,
        batch_size=64,
        steps=20,
        eval_every=10,
    ),
    "quick": {},
    # closer to Bardes et al. / Ben-Shaul et al.: a deeper conv encoder, a wide 3-layer-like expander
    # (here one wide hidden layer), larger batches and longer training
    "paper": {
        "n_train": 8000,
        "n_test": 2000,
        "channels": (64, 128, 128),
        "hidden": 256,
        "rep_dim": 256,
        "proj_dim": 2048,
        "batch_size": 512,
        "steps": 20000,
        "eval_every": 1000,
    },
}


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The VICReg objective (Bardes, Ponce, LeCun 2022, arXiv 2105.04906) of embeddings ``z1, z2`` (``[n, d]``).

    ``L = sim_coeff * 1/(n d) sum_i ||z1_i - z2_i||^2 + std_coeff * [v(z1) + v(z2)] / 2 + cov_coeff * [c(z1) + c(z2)]``
    with ``v(Z) = 1/d sum_j max(0, 1 - sqrt(Var(Z_:j) + eps))`` and ``c(Z) = 1/d sum_{j != k} Cov(Z)_jk^2``
    (the halving of the variance term follows the authors' code).

    Returns the total loss and its three unweighted terms (invariance, variance, covariance).
    """
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)

    def variance(z: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()

    def covariance(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0)
        c = z.T @ z / (n - 1)
        return (c.square().sum() - c.diagonal().square().sum()) / d

    var = (variance(z1) + variance(z2)) / 2
    cov = covariance(z1) + covariance(z2)
    total = sim_coeff * inv + std_coeff * var + cov_coeff * cov
    return total, {
        "invariance": float(inv.detach()),
        "variance": float(var.detach()),
        "covariance": float(cov.detach()),
    }


def encoder_layers(cfg: Config) -> list[str]:
    """Encoder modules whose outputs are probed, shallow to deep."""
    return [f"act{i}" for i in range(1, len(cfg.channels) + 1)] + ["act_fc", "out"]


class VICRegNet(nn.Module):
    """Encoder and projector as one module, so the shared training loop optimises, checkpoints and
    restores both; the probes read the encoder alone (the representation is its output)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def _network(cfg: Config, seed: int) -> VICRegNet:
    torch.manual_seed(seed)
    enc = SmallCNN(1, cfg.rep_dim, dims=1, channels=cfg.channels, kernel_size=cfg.kernel_size, hidden=cfg.hidden)
    proj = nn.Sequential(
        nn.Linear(cfg.rep_dim, cfg.proj_dim),
        nn.BatchNorm1d(cfg.proj_dim),
        nn.ReLU(),
        nn.Linear(cfg.proj_dim, cfg.proj_dim),
    )
    return VICRegNet(enc, proj)


def _ncc_table(
    enc: nn.Module, ds: Dataset, layers: list[str], y_rand: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, list[float]]:
    """Held-out NCC accuracy per layer: centres from training features, accuracy on test features."""
    ftr = features(enc, ds.x_train, layers)
    fte = features(enc, ds.x_test, layers)
    return {
        "semantic": [ncc_accuracy(ftr[k], ds.y_train, fte[k], ds.y_test) for k in layers],
        "random": [ncc_accuracy(ftr[k], y_rand[0], fte[k], y_rand[1]) for k in layers],
    }


def vicreg_objective(cfg: Config, views_seed: int, std_coeff: float, cov_coeff: float) -> Objective:
    """The loop's objective: VICReg between two augmented views of the minibatch.

    The views at ``step`` come from a generator seeded by ``(views_seed, step)`` (the loop's resume
    contract), so runs sharing ``views_seed`` and the batch order see exactly the same views. The
    labels the loop passes are ignored: no label ever reaches the training.
    """
    aug = cfg.augment()

    def objective(
        model: nn.Module, xb: torch.Tensor, _yb: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        g = torch.Generator().manual_seed(derive_seed(views_seed, "objective", step))
        z = model(torch.cat([aug(xb, g), aug(xb, g)]))
        b = len(xb)
        return vicreg_loss(z[:b], z[b:], cfg.sim_coeff, std_coeff, cov_coeff)

    return objective


def _train_ssl(
    name: str,
    cfg: Config,
    ctx: RunContext,
    ds: Dataset,
    std_coeff: float,
    cov_coeff: float,
    y_rand: tuple[torch.Tensor, torch.Tensor],
) -> list[dict[str, Any]]:
    """VICReg training through the shared loop (``ctx.train``: checkpointed, resumable) with the NCC
    table measured by a callback at every evaluation; returns one record per evaluation.

    Main and ablation runs start from the same weights and share the batch order and view seeds, so
    they differ only in the coefficients.
    """
    layers = encoder_layers(cfg)
    net = _network(cfg, ctx.seed_for("init")).to(ctx.device)

    def ncc(state: TrainState) -> dict[str, float]:
        table = _ncc_table(net.encoder, ds, layers, y_rand)
        return {f"semantic_{k}": v for k, v in zip(layers, table["semantic"], strict=True)} | {
            f"random_{k}": v for k, v in zip(layers, table["random"], strict=True)
        }

    tcfg = cfg.train_config(optimizer="adam")
    # the loop needs labels only to count examples; placeholders keep the real ones out of reach
    unlabelled = (ds.x_train, torch.zeros(ds.n_train, dtype=torch.long, device=ds.x_train.device))
    hist = ctx.train(
        name,
        net,
        unlabelled,
        tcfg,
        callbacks=[ncc],
        batch_seed=ctx.seed_for("batches"),
        objective=vicreg_objective(cfg, ctx.seed_for("views"), std_coeff, cov_coeff),
    )
    return [
        {
            "step": int(r["step"]),
            "semantic": [r[f"semantic_{k}"] for k in layers],
            "random": [r[f"random_{k}"] for k in layers],
            **{part: r.get(f"train_{part}") for part in ("invariance", "variance", "covariance")},
        }
        for r in hist.records
    ]


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = mnist1d(cfg.n_train, cfg.n_test, seed=ctx.seed_for("data")).to(ctx.device)
    g = ctx.generator("random_labels")
    # a fixed random labelling of the same points, with the class count of the semantic labels
    y_rand = (
        torch.randint(0, ds.n_classes, (ds.n_train,), generator=g).to(ctx.device),
        torch.randint(0, ds.n_classes, (ds.n_test,), generator=g).to(ctx.device),
    )
    layers = encoder_layers(cfg)
    runs = {"full": (cfg.std_coeff, cfg.cov_coeff)}
    if cfg.ablation:
        runs["no_var_cov"] = (0.0, 0.0)
    out: dict[str, Any] = {
        "layers": layers,
        "chance": 1.0 / ds.n_classes,
        "input_semantic": ncc_accuracy(ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        "input_random": ncc_accuracy(ds.x_train, y_rand[0], ds.x_test, y_rand[1]),
    }
    for name, (mu, nu) in runs.items():
        recs = _train_ssl(name, cfg, ctx, ds, mu, nu, y_rand)
        out[name] = {
            "steps": [r["step"] for r in recs],
            "semantic": [r["semantic"] for r in recs],  # [checkpoint][layer]
            "random": [r["random"] for r in recs],
            "invariance": [r["invariance"] for r in recs],
            "variance": [r["variance"] for r in recs],
            "covariance": [r["covariance"] for r in recs],
        }
    return out


def signature(result: Result) -> Verdict:
    d = result.data
    full = d["full"]
    sem0, sem1 = full["semantic"][0][-1], full["semantic"][-1][-1]
    rnd1 = full["random"][-1][-1]
    final = full["semantic"][-1]
    rho = spearman(list(range(len(final))), final, min_points=3)
    abl = d.get("no_var_cov")
    abl_final = abl["semantic"][-1][-1] if abl else None
    checks = [
        check(
            "semantic_ncc_rise",
            sem1 - sem0,
            ">=",
            MIN_RISE,
            "semantic NCC accuracy of the representation rises during training (final - initial)",
        ),
        check(
            "semantic_minus_random_ncc",
            sem1 - rnd1,
            ">=",
            MIN_GAP,
            "final semantic NCC accuracy exceeds the random-label NCC accuracy (held-out points)",
        ),
        check(
            "spearman(depth, semantic_ncc)",
            rho,
            ">=",
            DEPTH_SPEARMAN,
            "final semantic NCC accuracy rises with depth over the encoder layers",
        ),
        check(
            "deepest_minus_shallowest_ncc",
            final[-1] - final[0],
            ">=",
            MIN_DEPTH_GAIN,
            "the deepest encoder layer clusters better than the shallowest",
        ),
        check(
            "ablation_drop",
            None if abl_final is None else sem1 - abl_final,
            ">=",
            MIN_ABLATION_DROP,
            "without the variance/covariance terms the final semantic NCC accuracy is lower",
        ),
    ]
    layers = d["layers"]
    per_layer = ", ".join(f"{k} {v:.3f}" for k, v in zip(layers, final, strict=True))
    summary = (
        f"representation NCC acc semantic {sem0:.3f}->{sem1:.3f}, random {full['random'][0][-1]:.3f}->"
        f"{rnd1:.3f} (chance {d['chance']:.2f}, raw input {d['input_semantic']:.3f}); final per layer: "
        f"{per_layer}; ablation final {'n/a' if abl_final is None else f'{abl_final:.3f}'}"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    layers = d["layers"]
    full = d["full"]
    paths = []

    fig, ax = new_figure(width=6.0, height=4.0)
    for i, k in enumerate(layers):
        ax.plot(full["steps"], [r[i] for r in full["semantic"]], color=f"C{i}", marker="o", ms=3, label=f"{k} semantic")
        ax.plot(full["steps"], [r[i] for r in full["random"]], color=f"C{i}", ls="--", alpha=0.7, label=f"{k} random")
    ax.axhline(d["chance"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("VICReg step")
    ax.set_ylabel("held-out NCC accuracy")
    ax.set_title("semantic vs random-label clustering over training")
    ax.legend(fontsize=7, ncol=2)
    paths.append(save(fig, out_dir, "ncc_over_training"))

    fig, ax = new_figure(width=5.0, height=3.8)
    xs = list(range(1, len(layers) + 1))
    ax.plot(xs, full["semantic"][0], marker="o", color="C0", alpha=0.5, label="semantic, init")
    ax.plot(xs, full["semantic"][-1], marker="o", color="C0", label="semantic, trained")
    ax.plot(xs, full["random"][-1], marker="s", color="C3", ls="--", label="random labels, trained")
    if "no_var_cov" in d:
        ax.plot(xs, d["no_var_cov"]["semantic"][-1], marker="^", color="C2", label="semantic, ablation")
    ax.axhline(d["input_semantic"], color="grey", lw=0.8, ls=":", label="raw input (semantic)")
    ax.set_xticks(xs, layers)
    ax.set_xlabel("encoder layer (depth)")
    ax.set_ylabel("held-out NCC accuracy")
    ax.set_title("clustering vs depth")
    ax.legend(fontsize=7)
    paths.append(save(fig, out_dir, "ncc_vs_depth"))

    if "no_var_cov" in d:
        abl = d["no_var_cov"]
        fig, ax = new_figure(width=5.0, height=3.8)
        c = result.config
        ax.plot(
            full["steps"],
            [r[-1] for r in full["semantic"]],
            marker="o",
            color="C0",
            label=f"VICReg ({c['sim_coeff']:g}/{c['std_coeff']:g}/{c['cov_coeff']:g}) semantic",
        )
        ax.plot(
            abl["steps"],
            [r[-1] for r in abl["semantic"]],
            marker="^",
            color="C2",
            label=f"invariance only ({c['sim_coeff']:g}/0/0) semantic",
        )
        ax.plot(full["steps"], [r[-1] for r in full["random"]], color="C0", ls="--", alpha=0.6, label="VICReg random")
        ax.plot(
            abl["steps"], [r[-1] for r in abl["random"]], color="C2", ls="--", alpha=0.6, label="invariance only random"
        )
        ax.axhline(d["chance"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("step")
        ax.set_ylabel(f"held-out NCC accuracy ({layers[-1]})")
        ax.set_title("ablation: variance/covariance terms off")
        ax.legend(fontsize=7)
        paths.append(save(fig, out_dir, "ablation"))
    return paths
