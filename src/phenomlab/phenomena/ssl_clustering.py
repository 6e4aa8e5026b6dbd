"""Self-supervised learning clusters by semantic class, more so with depth.

Ben-Shaul, Shwartz-Ziv, Galanti, Dekel, LeCun 2023, "Reverse engineering self-supervised learning" (NeurIPS,
arXiv 2305.15614); the objective is VICReg (Bardes, Ponce, LeCun 2022, arXiv 2105.04906; :func:`vicreg_loss`).

"The representation" is the deepest encoder layer ``out``; held-out NCC accuracy uses class centres from the
training features and accuracy on test points. Checks (seed std from seeds 0-2 in docs/phenomena/ssl-clustering.md):
- held-out semantic NCC of the representation, final minus initial >= ``MIN_RISE`` (0.05);
- final held-out semantic NCC minus that of the raw signals >= ``MIN_OVER_INPUT`` (0.10);
- at the end, ``Spearman(layer index, semantic NCC)`` over the encoder layers >= ``DEPTH_SPEARMAN`` (0.8), and
  deepest minus shallowest layer >= ``MIN_DEPTH_GAIN`` (0.05);
- per-term gradient attribution (:func:`term_attribution`): at every checkpoint after step 0, one step along the
  regulariser's (variance + covariance) Adam-preconditioned gradient raises held-out semantic NCC strictly more
  than one along the invariance term's, at a fraction >= ``MIN_ATTRIBUTION_FRACTION`` (2/3) of checkpoints;
- negative control: on the training points themselves (centres and accuracy on the same points, where a random
  labelling is not at chance by construction), final semantic minus random-label NCC >= ``MIN_RANDOM_GAP`` (0.30).

Background, measurements and caveats: docs/phenomena/ssl-clustering.md.
"""

from __future__ import annotations

import copy
import statistics
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
from .config import PhenomenonConfig, data, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "ssl-clustering"

# thresholds from issue 11 (item 5) and the catalogue; quick-preset measurements, mean (seed std over seeds 0-2):
MIN_RISE = 0.05  # measured 0.31 (0.03)
MIN_OVER_INPUT = 0.10  # measured 0.36 (0.01)
DEPTH_SPEARMAN = 0.8  # measured 1.0 (0)
MIN_DEPTH_GAIN = 0.05  # measured 0.32 (0.02)
MIN_ATTRIBUTION_FRACTION = 2 / 3  # measured 0.63 (0.13): not reproduced at quick scale (regulariser wins early only)
MIN_RANDOM_GAP = 0.30  # measured 0.55 (0.02)


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    # 4000 held-out signals resolve NCC changes of 0.00025, well below the one-step changes measured
    data(n_train=4000, n_test=4000),
    training(lr=1e-3, steps=2000, batch_size=256, weight_decay=0.0, eval_every=250),
):
    channels: tuple[int, ...] = param((32, 64), "conv channels of the SmallCNN encoder", gt=0)
    kernel_size: int = param(5, "conv kernel size", gt=0)
    hidden: int = param(128, "width of the encoder's fc layer after pooling", gt=0)
    rep_dim: int = param(128, "representation (encoder output) dimension", gt=0)
    proj_dim: int = param(256, "projector (expander) width", gt=0)
    sim_coeff: float = param(25.0, "VICReg invariance coefficient lambda", ge=0.0)
    std_coeff: float = param(25.0, "VICReg variance coefficient mu", ge=0.0)
    cov_coeff: float = param(1.0, "VICReg covariance coefficient nu", ge=0.0)
    attribution_step: float = param(3e-3, "per-term attribution: step size a of theta -+ a d_term", gt=0.0)
    attribution_batches: int = param(16, "per-term attribution: training batches the term gradients average", gt=0)
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
        attribution_batches=1,
    ),
    "quick": {},
    # closer to Bardes et al. / Ben-Shaul et al.: a deeper conv encoder, a wide 3-layer-like expander
    # (here one wide hidden layer), larger batches and longer training
    "paper": {
        "n_train": 8000,
        "n_test": 8000,
        "channels": (64, 128, 128),
        "hidden": 256,
        "rep_dim": 256,
        "proj_dim": 2048,
        "batch_size": 512,
        "steps": 20000,
        "eval_every": 1000,
    },
}


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, ...]:
    """The three unweighted VICReg terms (invariance, variance, covariance) of ``z1, z2`` as tensors
    (definitions in :func:`vicreg_loss`), so that each can be differentiated on its own."""
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)

    def variance(z: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - torch.sqrt(z.var(dim=0) + eps)).mean()

    def covariance(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0)
        c = z.T @ z / (n - 1)
        return (c.square().sum() - c.diagonal().square().sum()) / d

    return inv, (variance(z1) + variance(z2)) / 2, covariance(z1) + covariance(z2)


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
    inv, var, cov = vicreg_terms(z1, z2, eps)
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


def _semantic_ncc(enc: nn.Module, ds: Dataset) -> float:
    """Held-out semantic NCC accuracy of the representation (the encoder output)."""
    ftr = features(enc, ds.x_train, "out")["out"]
    fte = features(enc, ds.x_test, "out")["out"]
    return ncc_accuracy(ftr, ds.y_train, fte, ds.y_test)


def _ncc_table(enc: nn.Module, ds: Dataset, layers: list[str], y_rand: torch.Tensor) -> dict[str, list[float]]:
    """NCC accuracy per layer: ``semantic``, held out (centres from training features, accuracy on test
    features); ``semantic_train`` and ``random_train``, on the training points themselves (centres and
    accuracy on the same points) w.r.t. the semantic labels and w.r.t. a fixed random labelling."""
    ftr = features(enc, ds.x_train, layers)
    fte = features(enc, ds.x_test, layers)
    return {
        "semantic": [ncc_accuracy(ftr[k], ds.y_train, fte[k], ds.y_test) for k in layers],
        "semantic_train": [ncc_accuracy(ftr[k], ds.y_train) for k in layers],
        "random_train": [ncc_accuracy(ftr[k], y_rand) for k in layers],
    }


def term_attribution(
    net: VICRegNet,
    optimizer: torch.optim.Optimizer,
    ds: Dataset,
    cfg: Config,
    seed: int,
    step_sizes: tuple[float, ...] | None = None,
) -> dict[str, list[float]] | None:
    """Per-term gradient attribution of semantic clustering at the current weights.

    The gradients of the invariance term ``sim_coeff * inv`` and of the regulariser ``std_coeff * var +
    cov_coeff * cov`` are taken separately (averaged over ``attribution_batches`` training batches of two
    fresh views each, projector BatchNorm in training mode as in training). Each term's direction is its share
    of Adam's next update: ``d_term = (1 - b1) / (1 - b1^(t+1)) * g_term / (sqrt(v_hat') + eps)`` with
    ``v_hat'`` the second moment Adam would hold after this gradient, ``(b2 v + (1 - b2) g^2) / (1 - b2^(t+1))``,
    ``g = g_inv + g_reg``; the two directions add up to the update less its momentum, which neither fresh
    gradient owns. (Dividing by the old ``sqrt(v_hat)`` alone is unbounded on units whose gradient history is
    ~0, such as dead ReLUs: there a one-step probe moved the NCC by 0.17.) From the same weights one step of
    size ``a`` along each term is taken (only the encoder's parameters move: the representation is its output)
    and the change of held-out semantic NCC accuracy of the representation is measured by the central
    difference ``[NCC(theta - a d) - NCC(theta + a d)] / 2``, for each term alone and for both.

    Returns ``{"regulariser": [...], "invariance": [...], "both": [...]}`` (one entry per step size ``a``,
    default ``attribution_step``), or None before the optimiser has a second-moment estimate (step 0).
    The weights, the optimiser state and the global random state are left untouched.
    """
    sizes = step_sizes if step_sizes is not None else (cfg.attribution_step,)
    params = list(net.parameters())
    states = [optimizer.state.get(p, {}) for p in params]
    if any("exp_avg_sq" not in s for s in states):
        return None
    group = optimizer.param_groups[0]
    (beta1, beta2), eps = group["betas"], group["eps"]

    probe = copy.deepcopy(net).train()  # BatchNorm running statistics of the copy may change, not the net's
    probe_params = list(probe.parameters())
    aug = cfg.augment()
    g = torch.Generator().manual_seed(seed)
    grads = {t: [torch.zeros_like(p) for p in params] for t in ("invariance", "regulariser")}
    for _ in range(cfg.attribution_batches):
        idx = torch.randperm(ds.n_train, generator=g)[: cfg.batch_size].to(ds.x_train.device)
        xb = ds.x_train[idx]
        z = probe(torch.cat([aug(xb, g), aug(xb, g)]))
        inv, var, cov = vicreg_terms(z[: len(xb)], z[len(xb) :])
        losses = {"invariance": cfg.sim_coeff * inv, "regulariser": cfg.std_coeff * var + cfg.cov_coeff * cov}
        for t, loss in losses.items():
            parts = torch.autograd.grad(loss, probe_params, retain_graph=True, allow_unused=True)
            for acc, part in zip(grads[t], parts, strict=True):
                if part is not None:
                    acc.add_(part, alpha=1.0 / cfg.attribution_batches)
    precond = []
    for st, gi, gr in zip(states, grads["invariance"], grads["regulariser"], strict=True):
        t = float(st["step"]) + 1
        v_next = (beta2 * st["exp_avg_sq"] + (1 - beta2) * (gi + gr).square()) / (1 - beta2**t)
        precond.append((v_next.sqrt() + eps) * (1 - beta1**t) / (1 - beta1))
    directions = {t: [gr / pc for gr, pc in zip(grads[t], precond, strict=True)] for t in grads}
    directions["both"] = [a + b for a, b in zip(directions["invariance"], directions["regulariser"], strict=True)]

    enc_ids = {id(p) for p in net.encoder.parameters()}
    moved = copy.deepcopy(net.encoder)

    def ncc_after(direction: list[torch.Tensor], a: float) -> float:
        with torch.no_grad():
            enc_dirs = (d for p, d in zip(params, direction, strict=True) if id(p) in enc_ids)
            for q, p, d in zip(moved.parameters(), net.encoder.parameters(), enc_dirs, strict=True):
                q.copy_(p - a * d)
        return _semantic_ncc(moved, ds)

    out: dict[str, list[float]] = {t: [] for t in ("regulariser", "invariance", "both")}
    for t in out:
        for a in sizes:
            # central difference: the curvature that makes any large move lower NCC is even in a and cancels
            out[t].append((ncc_after(directions[t], a) - ncc_after(directions[t], -a)) / 2)
    return out


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
    y_rand: torch.Tensor,
    step_sizes: tuple[float, ...] | None = None,
) -> list[dict[str, Any]]:
    """VICReg training through the shared loop (``ctx.train``: checkpointed, resumable) with the NCC
    table and the per-term attribution measured by callbacks at every evaluation; returns one record per
    evaluation."""
    layers = encoder_layers(cfg)
    net = _network(cfg, ctx.seed_for("init")).to(ctx.device)

    def ncc(state: TrainState) -> dict[str, float]:
        table = _ncc_table(net.encoder, ds, layers, y_rand)
        return {f"{kind}_{k}": v for kind, row in table.items() for k, v in zip(layers, row, strict=True)}

    def attribution(state: TrainState) -> dict[str, float]:
        att = term_attribution(
            net, state.optimizer, ds, cfg, ctx.seed_for("attribution", state.step), step_sizes=step_sizes
        )
        if att is None:
            return {}
        return {f"attr_{t}_{i}": v for t, row in att.items() for i, v in enumerate(row)}

    tcfg = cfg.train_config(optimizer="adam")
    # the loop needs labels only to count examples; placeholders keep the real ones out of reach
    unlabelled = (ds.x_train, torch.zeros(ds.n_train, dtype=torch.long, device=ds.x_train.device))
    hist = ctx.train(
        name,
        net,
        unlabelled,
        tcfg,
        callbacks=[ncc, attribution],
        batch_seed=ctx.seed_for("batches"),
        objective=vicreg_objective(cfg, ctx.seed_for("views"), cfg.std_coeff, cfg.cov_coeff),
    )
    n_sizes = len(step_sizes) if step_sizes is not None else 1
    recs = []
    for r in hist.records:
        rec: dict[str, Any] = {"step": int(r["step"])}
        for kind in ("semantic", "semantic_train", "random_train"):
            rec[kind] = [r[f"{kind}_{k}"] for k in layers]
        for t in ("regulariser", "invariance", "both"):
            vals = [r.get(f"attr_{t}_{i}") for i in range(n_sizes)]
            rec[f"attr_{t}"] = None if vals[0] is None else (vals if step_sizes is not None else vals[0])
        for part in ("invariance", "variance", "covariance"):
            rec[part] = r.get(f"train_{part}")
        recs.append(rec)
    return recs


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = mnist1d(cfg.n_train, cfg.n_test, seed=ctx.seed_for("data")).to(ctx.device)
    # a fixed random labelling of the training points, with the class count of the semantic labels
    y_rand = torch.randint(0, ds.n_classes, (ds.n_train,), generator=ctx.generator("random_labels")).to(ctx.device)
    recs = _train_ssl("full", cfg, ctx, ds, y_rand)
    keys = ("semantic", "semantic_train", "random_train", "invariance", "variance", "covariance")
    return {
        "layers": encoder_layers(cfg),
        "chance": 1.0 / ds.n_classes,
        "input_semantic": ncc_accuracy(ds.x_train, ds.y_train, ds.x_test, ds.y_test),
        "full": {"steps": [r["step"] for r in recs]} | {k: [r[k] for r in recs] for k in keys},
        # per checkpoint (None at step 0): change of held-out semantic NCC after one step along each term
        "attribution": {
            "steps": [r["step"] for r in recs if r["attr_both"] is not None],
            **{
                t: [r[f"attr_{t}"] for r in recs if r["attr_both"] is not None]
                for t in ("regulariser", "invariance", "both")
            },
        },
    }


def signature(result: Result) -> Verdict:
    d = result.data
    full, att = d["full"], d["attribution"]
    sem0, sem1 = full["semantic"][0][-1], full["semantic"][-1][-1]
    sem_tr, rnd_tr = full["semantic_train"][-1][-1], full["random_train"][-1][-1]
    final = full["semantic"][-1]
    rho = spearman(list(range(len(final))), final, min_points=3)
    wins = [r > i for r, i in zip(att["regulariser"], att["invariance"], strict=True)]
    win_frac = sum(wins) / len(wins) if wins else None
    checks = [
        check(
            "semantic_ncc_rise",
            sem1 - sem0,
            ">=",
            MIN_RISE,
            "held-out semantic NCC accuracy of the representation rises during training (final - initial)",
        ),
        check(
            "semantic_ncc_minus_raw_input",
            sem1 - d["input_semantic"],
            ">=",
            MIN_OVER_INPUT,
            "the final representation clusters by class better than the raw signals (held-out NCC)",
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
            "regulariser_step_helps_more_fraction",
            win_frac,
            ">=",
            MIN_ATTRIBUTION_FRACTION,
            "checkpoints where one step along the regulariser's gradient raises semantic NCC more than one "
            "along the invariance term's (same weights)",
        ),
        check(
            "control_random_label_train_ncc_gap",
            sem_tr - rnd_tr,
            ">=",
            MIN_RANDOM_GAP,
            "on the training points themselves, semantic NCC exceeds NCC w.r.t. a fixed random labelling",
        ),
    ]
    layers = d["layers"]
    per_layer = ", ".join(f"{k} {v:.3f}" for k, v in zip(layers, final, strict=True))
    mean = statistics.fmean
    summary = (
        f"representation held-out semantic NCC {sem0:.3f}->{sem1:.3f} (raw input {d['input_semantic']:.3f}, "
        f"chance {d['chance']:.2f}); training points: semantic {sem_tr:.3f} vs random labels {rnd_tr:.3f}; "
        f"final per layer: {per_layer}; one-step dNCC regulariser vs invariance wins {sum(wins)}/{len(wins)}"
        + (f" (mean {mean(att['regulariser']):+.4f} vs {mean(att['invariance']):+.4f})" if wins else "")
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
        ax.plot(full["steps"], [r[i] for r in full["semantic"]], color=f"C{i}", marker="o", ms=3, label=f"{k} held out")
    ax.plot(
        full["steps"], [r[-1] for r in full["semantic_train"]], color="k", ls="-", alpha=0.6, label="out, train pts"
    )
    ax.plot(
        full["steps"], [r[-1] for r in full["random_train"]], color="k", ls="--", alpha=0.6, label="out, random labels"
    )
    ax.axhline(d["input_semantic"], color="grey", lw=0.8, ls="-.", label="raw input")
    ax.axhline(d["chance"], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("VICReg step")
    ax.set_ylabel("NCC accuracy")
    ax.set_title("semantic vs random-label clustering over training")
    ax.legend(fontsize=7, ncol=2)
    paths.append(save(fig, out_dir, "ncc_over_training"))

    fig, ax = new_figure(width=5.0, height=3.8)
    xs = list(range(1, len(layers) + 1))
    ax.plot(xs, full["semantic"][0], marker="o", color="C0", alpha=0.5, label="semantic, init")
    ax.plot(xs, full["semantic"][-1], marker="o", color="C0", label="semantic, trained")
    ax.plot(xs, full["random_train"][-1], marker="s", color="C3", ls="--", label="random labels (train pts), trained")
    ax.axhline(d["input_semantic"], color="grey", lw=0.8, ls=":", label="raw input (semantic)")
    ax.set_xticks(xs, layers)
    ax.set_xlabel("encoder layer (depth)")
    ax.set_ylabel("NCC accuracy")
    ax.set_title("clustering vs depth")
    ax.legend(fontsize=7)
    paths.append(save(fig, out_dir, "ncc_vs_depth"))

    att = d["attribution"]
    fig, ax = new_figure(width=5.0, height=3.8)
    for t, color in (("regulariser", "C0"), ("invariance", "C1"), ("both", "grey")):
        ax.plot(att["steps"], att[t], marker="o", color=color, label=f"{t} step")
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xlabel("checkpoint (VICReg step)")
    ax.set_ylabel("change of held-out semantic NCC")
    ax.set_title(f"one step per term, a = {result.config['attribution_step']:g}")
    ax.legend(fontsize=7)
    paths.append(save(fig, out_dir, "attribution"))
    return paths
