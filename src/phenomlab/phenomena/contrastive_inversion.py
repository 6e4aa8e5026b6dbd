"""Contrastive learning inverts the data-generating process.

Zimmermann, Sharma, Schneider, Bethge, Brendel 2021, "Contrastive Learning Inverts the Data Generating Process"
(ICML 2021, arXiv 2102.08850). Latents ``z`` are uniform on the sphere ``S^(d-1)``, observations are ``x = g(z)`` for
an injective generator ``g``, positive pairs are ``z~ ~ vMF(z, kappa)``; an encoder ``h`` with unit-norm outputs
trained by InfoNCE (temperature ``tau = 1/kappa``) then satisfies ``h(g(z)) = Q z`` with ``Q`` orthogonal at the
loss minimum (their Theorem 2), so a linear map from ``h(x)`` recovers ``z``.

Protocol: ``g`` is a random 3-layer square leaky-ReLU MLP (slope 0.2, column-normalised weights chosen for a small
condition number, as in the authors' code); ``h`` a ReLU MLP (``activation="leaky_relu"``: the authors' slope-0.01
leaky ReLU) normalised to the sphere, trained through ``ctx.train``'s objective hook
(:func:`phenomlab.train.contrastive.info_nce`, :func:`phenomlab.train.contrastive.sample_vmf`). The
loop draws minibatches of latents from a pool; the objective maps them through ``g`` (the encoder sees only ``x``)
and draws their positives with a per-step generator. Linear ``R^2`` (:func:`linear_r2`, mean over the ``d`` latent
dims) is fit on one held-out set of latents and scored on another.

Checks (thresholds from issue 15; seed std over seeds 0-2 in docs/phenomena/contrastive-inversion.md):
- ``linear_r2``: held-out linear R^2 of the trained encoder's output to ``z`` >= ``MIN_R2`` (0.9);
- ``r2_gain_over_untrained``: that minus the R^2 of the same encoder at initialisation (same architecture,
  same draw, measured) >= ``MIN_GAIN`` (0.3);
- negative control: the same pipeline (same generator, init and batches) where positives break the paper's
  assumption: they share only the first ``content_dims`` latent coordinates (vMF-perturbed); the rest of the
  sphere point, the "style", is re-drawn uniformly with its norm kept, so ``z~`` is still uniform on the sphere
  but the conditional is not a vMF. Content/style identification theory (von Kuegelgen et al. 2021, arXiv
  2106.04619) predicts that only the shared block is recovered. ``control_style_r2_drop``: R^2 on the style
  latents with vMF positives minus that with the re-drawn style >= ``MIN_CONTROL_DROP`` (0.3, the issue's
  margin for "clearly above"); ``control_content_r2``: the control still recovers its content latents with
  R^2 >= ``MIN_R2``, so the drop is specific to the broken coordinates and not a failed run.

Background, measurements and caveats: docs/phenomena/contrastive-inversion.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import MLP
from ..seeding import derive_seed
from ..train import Objective, TrainState
from ..train.contrastive import info_nce, sample_vmf, vmf_mean_cosine
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "contrastive-inversion"

# thresholds from issue 15; quick-preset measurements, mean (seed std over seeds 0-2):
MIN_R2 = 0.9  # linear R^2 measured 0.846 (0.065): not reproduced at quick scale; control content R^2 0.944 (0.040)
MIN_GAIN = 0.3  # measured 0.462 (0.041); untrained R^2 0.384 (0.030)
MIN_CONTROL_DROP = 0.3  # style-block R^2, vMF minus content-only positives: measured 0.519 (0.088)

CONDITIONALS = ("vmf", "content_only")


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(optimizer="adam", lr=3e-3, steps=3000, batch_size=512, eval_every=500, schedule="cosine"),
):
    latent_dim: int = param(10, "latent dimension d (z on the sphere S^(d-1); observations x = g(z) in R^d)", ge=2)
    mixing_layers: int = param(3, "layers of the generator g (square, leaky-ReLU between them)", gt=0)
    leaky_slope: float = param(0.2, "negative slope of g's leaky ReLUs (0 < slope keeps g injective)", gt=0.0, le=1.0)
    mixing_candidates: int = param(1000, "random matrices per layer of g; the best-conditioned one is used", gt=0)
    kappa: float = param(30.0, "vMF concentration of the positive pairs", gt=0.0)
    tau: float | None = param(None, "InfoNCE temperature (None: 1/kappa, where the paper's theory applies)", gt=0.0)
    width: int = param(256, "encoder MLP hidden width", gt=0)
    depth: int = param(4, "encoder MLP hidden layers", ge=0)
    activation: str = param(
        "relu", "encoder activation (leaky ReLU at slope 0.01 is the authors')", choices=("relu", "leaky_relu")
    )
    content_dims: int = param(5, "control: latent coordinates positives share (the rest is re-drawn)", gt=0)
    n_train: int = param(100_000, "pool of training latents the loop draws minibatches from", gt=1)
    n_eval: int = param(4096, "held-out latents to fit the linear map on, and as many to score it on", gt=1)

    def validate(self) -> None:
        super().validate()
        if self.content_dims >= self.latent_dim:
            raise ConfigError(
                f"content_dims={self.content_dims} must be < latent_dim={self.latent_dim} (the control re-draws "
                "the other coordinates)"
            )
        if self.batch_size == 1 or self.batch_size > self.n_train:
            raise ConfigError(f"batch_size={self.batch_size} must be in [2, n_train={self.n_train}] (0: full batch)")
        if self.batch_size and self.n_train % self.batch_size == 1:
            raise ConfigError(
                f"n_train={self.n_train} leaves a batch of one latent at the end of each epoch "
                f"(batch_size={self.batch_size}); InfoNCE needs at least one negative"
            )
        if self.eval_every > self.steps:
            raise ConfigError(f"eval_every={self.eval_every} > steps={self.steps}")

    @property
    def temperature(self) -> float:
        return self.tau if self.tau is not None else 1.0 / self.kappa


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        latent_dim=4,
        content_dims=2,
        width=32,
        depth=2,
        n_train=2000,
        n_eval=256,
        batch_size=128,
        steps=40,
        eval_every=20,
        mixing_candidates=50,
    ),
    "quick": {},
    # closer to the authors' MLP experiments (main_mlp.py): kappa = 1/tau = 1, batch 6144, a 6-layer encoder
    # (widths 10d, 50d x4, 10d), Adam 1e-4, 300k steps
    "paper": {
        "kappa": 1.0,
        "width": 500,
        "depth": 6,
        "batch_size": 6144,
        "lr": 1e-4,
        "schedule": "constant",
        "steps": 300_000,
        "eval_every": 10_000,
        "n_train": 1_000_000,
    },
}


def uniform_sphere(n: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points uniform on the unit sphere ``S^(d-1)`` (normalised standard Gaussians)."""
    return F.normalize(torch.randn(n, d, generator=generator), dim=1)


class InjectiveMLP(nn.Module):
    """A fixed random generator ``g(z) = W_L s(... s(W_1 z))`` with ``s`` a leaky ReLU and square ``W_l``.

    Each ``W_l`` is the best-conditioned of ``candidates`` matrices with entries U(-1, 1) and unit-norm columns
    (the construction of Zimmermann et al.'s code, after Hyvarinen & Morioka's PCL); a square invertible matrix
    and a leaky ReLU with slope > 0 are both bijections of R^d, so ``g`` is injective. No parameters train.
    """

    def __init__(self, d: int, layers: int, slope: float, candidates: int, generator: torch.Generator) -> None:
        super().__init__()
        self.slope = slope
        mats = []
        for _ in range(layers):
            a = 2 * torch.rand(candidates, d, d, generator=generator, dtype=torch.float64) - 1
            a = a / a.norm(dim=1, keepdim=True)
            mats.append(a[torch.linalg.cond(a).argmin()].float())
        self.register_buffer("weights", torch.stack(mats))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for i, w in enumerate(self.weights):
            x = x @ w.T
            if i < len(self.weights) - 1:
                x = F.leaky_relu(x, self.slope)
        return x


class SphereEncoder(nn.Module):
    """An MLP whose output is projected onto the unit sphere: ``h(x) = f(x) / ||f(x)||``."""

    def __init__(self, d: int, width: int, depth: int, activation: str = "relu") -> None:
        super().__init__()
        self.net = MLP(d, d, width=width, depth=depth, activation_name=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def content_only_positives(
    z: torch.Tensor, kappa: float, content_dims: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Positives that break the vMF assumption: ``w ~ vMF(z, kappa)``, then ``w``'s coordinates after the first
    ``content_dims`` are replaced by a uniformly random direction of the same norm. ``z~`` stays uniform on the
    sphere when ``z`` is (the vMF step and a rotation of the style block both preserve it), but shares with ``z``
    only its content block (and, through the norm, nothing more)."""
    w = sample_vmf(z, kappa, generator)
    style = w[:, content_dims:]
    new = F.normalize(torch.randn(style.shape, generator=generator, dtype=style.dtype).to(z.device), dim=1)
    return torch.cat([w[:, :content_dims], style.norm(dim=1, keepdim=True) * new], dim=1)


def linear_r2(h_fit: torch.Tensor, z_fit: torch.Tensor, h_test: torch.Tensor, z_test: torch.Tensor) -> torch.Tensor:
    """Per-dimension held-out ``R^2`` of an affine least-squares map from features to latents.

    ``A, b = argmin sum ||h A + b - z||^2`` over ``(h_fit, z_fit)``; on ``(h_test, z_test)``,
    ``R^2_j = 1 - sum_i (z_ij - zhat_ij)^2 / sum_i (z_ij - mean_i z_ij)^2`` (Zimmermann et al. 2021 report its
    mean over ``j``). Computed in float64.
    """
    if len(h_fit) != len(z_fit) or len(h_test) != len(z_test) or len(h_fit) <= h_fit.shape[1]:
        raise ConfigError(
            f"linear_r2 needs matching rows and more fit points than features, got {tuple(h_fit.shape)}, "
            f"{tuple(z_fit.shape)}, {tuple(h_test.shape)}, {tuple(z_test.shape)}"
        )
    h_fit, z_fit, h_test, z_test = (t.detach().double().cpu() for t in (h_fit, z_fit, h_test, z_test))
    ones = torch.ones(len(h_fit), 1, dtype=torch.float64)
    # gelsd (SVD), not torch's CPU default gelsy: MKL's gelsy returns different last bits from one call to the next
    # on the same inputs, which made this row's stored R^2 differ run to run (by up to 1e-15)
    coef = torch.linalg.lstsq(torch.cat([h_fit, ones], 1), z_fit, driver="gelsd").solution
    pred = torch.cat([h_test, torch.ones(len(h_test), 1, dtype=torch.float64)], 1) @ coef
    res = (z_test - pred).square().sum(0)
    tot = (z_test - z_test.mean(0)).square().sum(0)
    return 1 - res / tot


def orthogonal_r2(h_fit: torch.Tensor, z_fit: torch.Tensor, h_test: torch.Tensor, z_test: torch.Tensor) -> float:
    """Held-out mean ``R^2`` of the best orthogonal map ``z ~ h Q`` (orthogonal Procrustes: ``Q = U V^T`` for
    ``h_fit^T z_fit = U S V^T``; Schoenemann 1966), the isometry the paper's theorem predicts."""
    h_fit, z_fit, h_test, z_test = (t.detach().double().cpu() for t in (h_fit, z_fit, h_test, z_test))
    u, _, vt = torch.linalg.svd(h_fit.T @ z_fit)
    pred = h_test @ (u @ vt)
    res = (z_test - pred).square().sum(0)
    tot = (z_test - z_test.mean(0)).square().sum(0)
    return float((1 - res / tot).mean())


def contrastive_objective(g: nn.Module, cfg: Config, conditional: str, pairs_seed: int) -> Objective:
    """The loop's objective: InfoNCE between ``h(g(z))`` and ``h(g(z~))`` for the minibatch of latents ``z``.

    Positives at ``step`` come from a generator seeded by ``(pairs_seed, step)`` (the loop's resume contract).
    The loop's labels are placeholders and are ignored.
    """
    if conditional not in CONDITIONALS:
        raise ConfigError(f"conditional must be one of {list(CONDITIONALS)}, got {conditional!r}")
    tau = cfg.temperature

    def objective(
        model: nn.Module, zb: torch.Tensor, _yb: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        gen = torch.Generator().manual_seed(derive_seed(pairs_seed, "objective", step))
        if conditional == "vmf":
            zp = sample_vmf(zb, cfg.kappa, gen)
        else:
            zp = content_only_positives(zb, cfg.kappa, cfg.content_dims, gen)
        with torch.no_grad():
            x, xp = g(zb), g(zp)
        a, p = model(x), model(xp)
        return info_nce(a, p, tau), {"positive_cosine": float((a * p).sum(1).mean().detach())}

    return objective


def _train_encoder(
    name: str,
    conditional: str,
    cfg: Config,
    ctx: RunContext,
    g: nn.Module,
    pool: torch.Tensor,
    evalset: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, Any]:
    """InfoNCE training of a fresh encoder (the same init for every conditional) with held-out R^2 logged at
    each evaluation; returns the curves and the final per-dim R^2."""
    d = cfg.latent_dim
    torch.manual_seed(ctx.seed_for("init"))
    enc = SphereEncoder(d, cfg.width, cfg.depth, cfg.activation).to(ctx.device)
    z_fit, z_test = evalset
    with torch.no_grad():
        x_fit, x_test = g(z_fit), g(z_test)

    def r2_now() -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            h_fit, h_test = enc(x_fit), enc(x_test)
        return linear_r2(h_fit, z_fit, h_test, z_test), orthogonal_r2(h_fit, z_fit, h_test, z_test)

    def measure(state: TrainState) -> dict[str, float]:
        per_dim, ortho = r2_now()
        return {"r2": float(per_dim.mean()), "orthogonal_r2": ortho}

    unlabelled = (pool, torch.zeros(len(pool), dtype=torch.long, device=pool.device))
    hist = ctx.train(
        name,
        enc,
        unlabelled,
        cfg.train_config(),
        callbacks=[measure],
        batch_seed=ctx.seed_for("batches"),
        objective=contrastive_objective(g, cfg, conditional, ctx.seed_for("pairs")),
    )
    per_dim, _ = r2_now()  # the trained weights (also when a finished checkpoint was loaded)
    return {
        "steps": hist.column("step"),
        "r2": hist.column("r2"),
        "orthogonal_r2": hist.column("orthogonal_r2"),
        "objective": [r.get("train_objective") for r in hist.records],
        "positive_cosine": [r.get("train_positive_cosine") for r in hist.records],
        "final_r2_per_dim": [float(v) for v in per_dim],
    }


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    d = cfg.latent_dim
    g = InjectiveMLP(d, cfg.mixing_layers, cfg.leaky_slope, cfg.mixing_candidates, ctx.generator("generator"))
    g = g.to(ctx.device)
    pool = uniform_sphere(cfg.n_train, d, ctx.generator("pool")).to(ctx.device)
    ev = ctx.generator("eval")
    z_fit, z_test = (uniform_sphere(cfg.n_eval, d, ev).to(ctx.device) for _ in range(2))
    with torch.no_grad():
        generator_r2 = float(linear_r2(g(z_fit), z_fit, g(z_test), z_test).mean())
    runs = {
        name: _train_encoder(name, conditional, cfg, ctx, g, pool, (z_fit, z_test))
        for name, conditional in (("vmf", "vmf"), ("control", "content_only"))
    }
    return {
        "latent_dim": d,
        "content_dims": cfg.content_dims,
        "generator_r2": generator_r2,  # how nonlinear g is: linear R^2 of x = g(z) itself to z
        "vmf_mean_cosine": vmf_mean_cosine(d, cfg.kappa),  # E[z.z~] of a positive pair
        **runs,
    }


def summarise(d: dict[str, Any]) -> dict[str, float | None]:
    """The deciding numbers of a result's data (content: the first ``content_dims`` latents, style: the rest)."""
    main, ctrl = d["vmf"], d["control"]
    k = d["content_dims"]

    def block(per: list[float], content: bool) -> float:
        part = per[:k] if content else per[k:]
        return sum(part) / len(part)

    return {
        "r2": main["r2"][-1],
        "untrained_r2": main["r2"][0] if main["steps"][0] == 0 else None,
        "orthogonal_r2": main["orthogonal_r2"][-1],
        "style_r2": block(main["final_r2_per_dim"], False),
        "control_r2": ctrl["r2"][-1],
        "control_content_r2": block(ctrl["final_r2_per_dim"], True),
        "control_style_r2": block(ctrl["final_r2_per_dim"], False),
    }


def signature(result: Result) -> Verdict:
    s = summarise(result.data)
    r2, r2_0, r2_c = s["r2"], s["untrained_r2"], s["control_r2"]
    checks = [
        check("linear_r2", r2, ">=", MIN_R2, "held-out linear R^2 of the trained encoder's output to the latents"),
        check(
            "r2_gain_over_untrained",
            None if r2_0 is None else r2 - r2_0,
            ">=",
            MIN_GAIN,
            "trained minus untrained (the same encoder at initialisation) linear R^2",
        ),
        check(
            "control_style_r2_drop",
            s["style_r2"] - s["control_style_r2"],
            ">=",
            MIN_CONTROL_DROP,
            "R^2 on the style latents: vMF positives minus positives that re-draw them (the paper's assumption "
            "broken on those coordinates)",
        ),
        check(
            "control_content_r2",
            s["control_content_r2"],
            ">=",
            MIN_R2,
            "the control run still recovers the latents its positives share (the drop is specific to the style)",
        ),
    ]
    summary = (
        f"linear R^2 {fmt(r2_0)} (untrained) -> {fmt(r2)} (trained, vMF positives; style dims "
        f"{fmt(s['style_r2'])}; orthogonal map {fmt(s['orthogonal_r2'])}); control (content-only positives) "
        f"{fmt(r2_c)}: content dims {fmt(s['control_content_r2'])}, style dims {fmt(s['control_style_r2'])}; "
        f"g itself {fmt(result.data['generator_r2'])}"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, axes = new_figure(ncols=2, width=9.0, height=3.6)
    ax = axes[0]
    for name, color, label in (("vmf", "C0", "vMF positives"), ("control", "C3", "content-only positives")):
        ax.plot(d[name]["steps"], d[name]["r2"], marker="o", ms=3, color=color, label=f"{label}: linear")
        ax.plot(d[name]["steps"], d[name]["orthogonal_r2"], ls="--", color=color, alpha=0.6, label="orthogonal")
    ax.axhline(MIN_R2, color="grey", lw=0.8, ls=":")
    ax.axhline(d["generator_r2"], color="k", lw=0.8, ls="-.", label="g(z) itself")
    ax.set_xlabel("InfoNCE step")
    ax.set_ylabel("held-out R^2 to the latents")
    ax.legend(fontsize=7)
    ax = axes[1]
    dims = list(range(1, d["latent_dim"] + 1))
    ax.bar([i - 0.2 for i in dims], d["vmf"]["final_r2_per_dim"], width=0.4, color="C0", label="vMF")
    ax.bar([i + 0.2 for i in dims], d["control"]["final_r2_per_dim"], width=0.4, color="C3", label="content-only")
    ax.axvline(d["content_dims"] + 0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("latent dimension (left of the line: content)")
    ax.set_ylabel("final R^2")
    ax.legend(fontsize=7)
    return [save(fig, out_dir, "r2")]
