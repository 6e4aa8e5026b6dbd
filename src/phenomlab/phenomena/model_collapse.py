"""Model collapse: generative models fitted recursively on their own samples lose the tails, then the spread.

Shumailov, Shumaylov, Zhao, Papernot, Anderson, Gal 2024, "AI models collapse when trained on recursively generated
data", Nature 631 (arXiv 2305.17493). Generation ``t + 1`` is fitted to ``n`` samples of generation ``t``; generation
1 to samples of the real distribution. Three systems of the paper, each with its control, where a fraction
``real_fraction`` of every generation's training set is fresh real data (the paper: keeping original data in the
mix reduces the degradation; Gerstgrasser et al. 2024, arXiv 2404.01413, show the error then stays bounded):

1. 1-D Gaussian, maximum-likelihood fit (mean, biased variance) on ``n`` samples: ``E[sigma_t^2] = sigma_0^2
   ((n-1)/n)^t`` exactly, while ``sigma_t^2 -> 0`` almost surely (its log is a random walk with negative drift
   ``E log(chi^2_{n-1}/n) ~ -1/n - 1/(n-1)``). Checks: ``gaussian_closed_form_rel_err`` = max over measured
   generations of ``|mean_chains sigma_t^2 / closed form - 1| <= GAUSS_REL_TOL`` (0.05; the Monte Carlo standard
   error at the last generation is stored, ~0.013 with the quick preset); ``gaussian_median_var_ratio`` = the
   median over chains of ``sigma_T^2 / sigma_0^2 <= GAUSS_MAX_MEDIAN`` (0.5; theory ~0.37 for n=100, T=50);
   ``control_gaussian_real_mix``: the same median with real data mixed in ``>= GAUSS_CONTROL_MIN`` (0.8).
2. Gaussian mixture (2-D, 5 modes, one of weight 0.05), refitted by EM (scikit-learn) warm-started at the previous
   generation: modes are lost, rare ones first. A mode is lost when generation T puts less than ``LOST_FRACTION``
   (0.2) of its initial mass within ``MODE_RADIUS`` of its centre. Checks: ``gmm_modes_lost`` = mean fraction of
   modes lost per chain ``>= GMM_MIN_LOST`` (0.15); ``gmm_rare_lost_first`` = loss rate of the rare mode minus
   the mean loss rate of the other modes ``>= GMM_RARE_MARGIN`` (0.25); ``control_gmm_real_mix`` = modes lost
   with real data mixed in / without ``<= GMM_CONTROL_MAX_RATIO`` (1/3).
3. A small VAE on MNIST-1D signals, each generation trained with the one engine (``ctx.train``, objective hook) on
   the previous generation's samples, drawn from the model's own likelihood: ``x = dec(z) + N(0, sigma^2 I)``,
   ``z ~ N(0, I)``, ``sigma^2 = 1/2`` (the decoder variance the loss implies, see ``VAE``); the spread of the samples
   (total variance) shrinks. Checks: ``vae_spread_ratio`` = total variance of generation T's samples / generation
   1's ``<= VAE_MAX_RATIO`` (0.5); ``control_vae_real_mix``: the same ratio with a fraction ``vae_real_fraction``
   (0.1, the paper's 10% of original data) of real data mixed in ``>= VAE_CONTROL_MIN`` (0.65). The ratio with
   ``real_fraction`` (0.5) real data is reported beside it, not checked. An earlier version sampled decoder means
   (no decoder noise), which drops about half the variance in every generation whatever the recursion does: that
   loss of spread was the sampling shortcut, not model collapse (audit 2026-12-02). Measured (quick preset, 1 thread):
   ``vae_spread_ratio`` 0.755 +- 0.021 on seeds 0-2 (0.738 / 0.748 on untuned seeds 3 / 4): FAILS 0.5 on every
   seed; ``control_vae_real_mix`` 0.791 +- 0.010 (0.806 / 0.839): passes 0.65, but only 0.04-0.09 above the
   collapse arm, which would pass that threshold itself; with 0.5 real data 0.909 +- 0.012 (0.932 / 0.939). The
   sampled noise puts a floor ``D sigma^2 = 20`` (about half of generation 1's spread) under the spread, so the
   ratio stays above about 0.49 however far the learned part (``decoder_mean_spread``) shrinks.

Thresholds were set a priori from one exploratory run before seeds 0-2 (seed std next to each in
docs/BENCHMARKS.md). Background, measurements and caveats: docs/phenomena/model-collapse.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import mnist1d
from ..errors import ConfigError
from ..seeding import derive_seed
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "model-collapse"
#: builds its tensors and models on the CPU whatever the run's device (not ported to accelerators)
RUNS_ON_CPU = True

GAUSS_REL_TOL = 0.05
GAUSS_MAX_MEDIAN = 0.5
GAUSS_CONTROL_MIN = 0.8
LOST_FRACTION = 0.2
MODE_RADIUS = 1.5
GMM_MIN_LOST = 0.15
GMM_RARE_MARGIN = 0.25
GMM_CONTROL_MAX_RATIO = 1 / 3
VAE_MAX_RATIO = 0.5
VAE_CONTROL_MIN = 0.65
#: the VAE's fixed decoder variance per dimension, implied by its loss (see ``VAE``)
VAE_DECODER_VARIANCE = 0.5

#: the mixture of part 2: centres, weights (the last mode is the rare one) and a shared isotropic variance
GMM_CENTERS = ((0.0, 0.0), (4.0, 0.0), (0.0, 4.0), (4.0, 4.0), (8.0, 8.0))
GMM_WEIGHTS = (0.3, 0.3, 0.2, 0.15, 0.05)
GMM_VARIANCE = 0.5


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(optimizer="adam", lr=1e-3, steps=400, batch_size=256, eval_every=400)):
    real_fraction: float = param(
        0.5, "control: fraction of each generation's training set that is real data", gt=0.0, lt=1.0
    )
    gauss_n: int = param(100, "Gaussian: samples per generation", ge=2)
    gauss_generations: int = param(50, "Gaussian: generations", ge=1)
    gauss_chains: int = param(10000, "Gaussian: independent chains (Monte Carlo of the expectation)", ge=2)
    gmm_n: int = param(200, "mixture: samples per generation", ge=10)
    gmm_generations: int = param(40, "mixture: generations", ge=1)
    gmm_chains: int = param(20, "mixture: independent chains", ge=2)
    vae_n: int = param(2000, "VAE: samples per generation (and real MNIST-1D training signals)", ge=10)
    vae_generations: int = param(6, "VAE: generations", ge=2)
    vae_width: int = param(64, "VAE: hidden width of encoder and decoder", gt=0)
    vae_latent: int = param(8, "VAE: latent dimension", gt=0)
    vae_real_fraction: float = param(
        0.1, "VAE control: fraction of each generation's data that is real (the paper's 10%)", gt=0.0, lt=1.0
    )

    def validate(self) -> None:
        super().validate()
        if round(self.real_fraction * self.gauss_n) < 1 or round(self.real_fraction * self.gmm_n) < 1:
            raise ConfigError("real_fraction * gauss_n and real_fraction * gmm_n must round to at least one sample")
        if round(self.vae_real_fraction * self.vae_n) < 1:
            raise ConfigError("vae_real_fraction * vae_n must round to at least one sample")


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(gauss_chains=200, gauss_generations=10, gmm_chains=3, gmm_generations=5, vae_generations=2, steps=40),
    "quick": {},
    "paper": dict(gauss_chains=100000, gauss_generations=200, gmm_chains=100, gmm_generations=200, vae_generations=20),
}


# ---- 1. Gaussian ------------------------------------------------------------------------------------------------


def gaussian_chains(n: int, generations: int, chains: int, real_fraction: float, g: torch.Generator) -> torch.Tensor:
    """``sigma_t^2`` of ``chains`` recursive maximum-likelihood fits of N(mu, sigma^2), shape (generations, chains).

    Generation 0 is the real N(0, 1); each generation draws ``n`` samples, ``round(real_fraction n)`` of them from the
    real distribution (0 for the collapse chains), and fits mean and biased variance.
    """
    k = round(real_fraction * n)
    mu = torch.zeros(chains, dtype=torch.float64)
    var = torch.ones(chains, dtype=torch.float64)
    out = []
    for _ in range(generations):
        x = mu[:, None] + var.sqrt()[:, None] * torch.randn(chains, n - k, generator=g, dtype=torch.float64)
        if k:
            x = torch.cat([x, torch.randn(chains, k, generator=g, dtype=torch.float64)], 1)
        mu, var = x.mean(1), x.var(1, unbiased=False)
        out.append(var)
    return torch.stack(out)


def expected_variance(n: int, t: int) -> float:
    """``E[sigma_t^2] / sigma_0^2 = ((n - 1) / n)^t`` for recursive maximum-likelihood Gaussian fits."""
    return ((n - 1) / n) ** t


# ---- 2. Gaussian mixture ----------------------------------------------------------------------------------------


def _gmm_sample(rng: np.random.Generator, w: np.ndarray, mu: np.ndarray, cov: np.ndarray, n: int) -> np.ndarray:
    comp = rng.choice(len(w), size=n, p=w / w.sum())
    chol = np.linalg.cholesky(cov)
    return mu[comp] + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((n, mu.shape[1])))


def mode_masses(w: np.ndarray, mu: np.ndarray, cov: np.ndarray, rng: np.random.Generator, m: int = 4000) -> np.ndarray:
    """Monte Carlo mass the mixture ``(w, mu, cov)`` puts within ``MODE_RADIUS`` of each of the true centres."""
    x = _gmm_sample(rng, w, mu, cov, m)
    d = np.linalg.norm(x[:, None, :] - np.asarray(GMM_CENTERS)[None], axis=2)
    return (d < MODE_RADIUS).mean(0)


def gmm_chain(n: int, generations: int, real_fraction: float, seed: int) -> list[list[float]]:
    """Mode masses (``mode_masses``) of each generation 0..T of one chain of recursive EM fits."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(seed)
    true = (
        np.asarray(GMM_WEIGHTS),
        np.asarray(GMM_CENTERS),
        np.tile(np.eye(2) * GMM_VARIANCE, (len(GMM_WEIGHTS), 1, 1)),
    )
    w, mu, cov = true
    k = round(real_fraction * n)
    masses = [mode_masses(w, mu, cov, rng).tolist()]
    for _ in range(generations):
        x = _gmm_sample(rng, w, mu, cov, n - k)
        if k:
            x = np.concatenate([x, _gmm_sample(rng, *true, k)])
        gm = GaussianMixture(
            len(w), weights_init=w, means_init=mu, precisions_init=np.linalg.inv(cov), reg_covar=1e-6, tol=1e-4
        )
        with warnings.catch_warnings():  # a component left with no samples does not converge: that is the loss
            warnings.simplefilter("ignore")
            gm.fit(x)
        w, mu, cov = gm.weights_, gm.means_, gm.covariances_
        masses.append(mode_masses(w, mu, cov, rng).tolist())
    return masses


def modes_lost(masses: list[list[list[float]]]) -> np.ndarray:
    """(chains, modes) booleans: generation T keeps less than ``LOST_FRACTION`` of the mode's generation-0 mass."""
    m = np.asarray(masses)
    return m[:, -1, :] < LOST_FRACTION * m[:, 0, :]


# ---- 3. VAE -----------------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """Gaussian-encoder VAE (Kingma & Welling 2014, arXiv 1312.6114) with a fixed Gaussian decoder of variance 1/2
    per dimension, ``z = m + e^(lv/2) eps``.

    The loss per example is ``||x - dec(z)||^2 + KL(q(z|x) || N(0, I))``. For a decoder ``p(x|z) = N(dec(z),
    sigma^2 I)`` in ``D`` dimensions, ``-log p(x|z) = ||x - dec(z)||^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2)``;
    the KL term enters the negative ELBO with weight 1, so the loss is the negative ELBO up to a constant exactly
    when ``1 / (2 sigma^2) = 1``, i.e. ``sigma^2 = 1/2`` (``VAE_DECODER_VARIANCE``). ``sample`` draws from that
    likelihood."""

    def __init__(self, dim: int, width: int, latent: int) -> None:
        super().__init__()
        self.latent = latent
        self.enc = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.enc_out = nn.Linear(width, 2 * latent)
        self.dec = nn.Sequential(
            nn.Linear(latent, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, dim)
        )

    def loss(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        m, lv = self.enc_out(self.enc(x)).chunk(2, dim=1)
        z = m + torch.randn(m.shape, generator=g, dtype=m.dtype) * (0.5 * lv).exp()
        rec = ((self.dec(z) - x) ** 2).sum(1).mean()
        kl = 0.5 * (m**2 + lv.exp() - lv - 1).sum(1).mean()
        return rec + kl, {"reconstruction": float(rec.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def decode_prior(self, n: int, g: torch.Generator) -> torch.Tensor:
        """Decoder means ``dec(z)`` of ``z ~ N(0, I)``."""
        return self.dec(torch.randn(n, self.latent, generator=g))

    @torch.no_grad()
    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, dec(z))``: samples ``x = dec(z) + N(0, VAE_DECODER_VARIANCE I)`` of the model, ``z ~ N(0, I)``, and
        their decoder means (returned for diagnostics only)."""
        mean = self.decode_prior(n, g)
        return mean + math.sqrt(VAE_DECODER_VARIANCE) * torch.randn(mean.shape, generator=g), mean


def total_variance(x: torch.Tensor) -> float:
    return float(x.var(0).sum())


def _vae_chain(cfg: Config, ctx: RunContext, real: torch.Tensor, name: str, real_fraction: float) -> dict[str, Any]:
    k = round(real_fraction * len(real))
    pick = ctx.generator("vae", name, "real")
    x = real
    spread, mean_spread, tail = [], [], []
    norm_q99 = float(torch.quantile((real - real.mean(0)).norm(dim=1), 0.99))
    for gen in range(cfg.vae_generations):
        torch.manual_seed(ctx.seed_for("vae", name, gen, "init"))
        model = VAE(real.shape[1], cfg.vae_width, cfg.vae_latent)
        obj_seed = ctx.seed_for("vae", name, gen, "objective")

        def objective(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int, s: int = obj_seed) -> Any:
            return m.loss(xb, torch.Generator().manual_seed(derive_seed(s, step)))

        ctx.train(f"{name}-g{gen + 1}", model, (x, torch.zeros(len(x))), cfg.train_config(), objective=objective)
        samples, means = model.sample(len(real), ctx.generator("vae", name, gen, "sample"))
        spread.append(total_variance(samples))
        mean_spread.append(total_variance(means))
        tail.append(float((((samples - real.mean(0)).norm(dim=1)) > norm_q99).float().mean()))
        x = samples
        if k:  # the controls: a fraction of the next training set is fresh real data
            fresh = real[torch.randperm(len(real), generator=pick)[:k]]
            x = torch.cat([samples[: len(real) - k], fresh])
    return {"spread": spread, "decoder_mean_spread": mean_spread, "tail_beyond_real_q99": tail}


# ---- run, signature, plot ---------------------------------------------------------------------------------------


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    checkpoints = sorted({*range(10, cfg.gauss_generations + 1, 10), cfg.gauss_generations})

    def gaussian() -> dict[str, Any]:
        res: dict[str, Any] = {"generations": checkpoints, "n": cfg.gauss_n}
        for name, frac in (("collapse", 0.0), ("control", cfg.real_fraction)):
            v = gaussian_chains(
                cfg.gauss_n, cfg.gauss_generations, cfg.gauss_chains, frac, ctx.generator("gauss", name)
            )
            rows = v[[t - 1 for t in checkpoints]]
            res[name] = {
                "mean": rows.mean(1).tolist(),
                "median": rows.median(1).values.tolist(),
                "se": (rows.std(1) / math.sqrt(cfg.gauss_chains)).tolist(),
            }
        return res

    out["gaussian"] = ctx.cached("gaussian", gaussian)

    def mixture() -> dict[str, Any]:
        return {
            name: [
                gmm_chain(cfg.gmm_n, cfg.gmm_generations, frac, ctx.seed_for("gmm", name, c))
                for c in range(cfg.gmm_chains)
            ]
            for name, frac in (("collapse", 0.0), ("control", cfg.real_fraction))
        }

    out["gmm"] = ctx.cached("gmm", mixture)

    ds = mnist1d(n_train=cfg.vae_n, n_test=100, seed=ctx.seed_for("data"))
    real = ds.x_train.float()
    out["vae"] = {
        "real_spread": total_variance(real),
        "collapse": _vae_chain(cfg, ctx, real, "collapse", 0.0),
        "control": _vae_chain(cfg, ctx, real, "control", cfg.vae_real_fraction),
        "real_fraction": cfg.vae_real_fraction,
        # reported beside the control, not checked: the fraction of the Gaussian and mixture controls
        "control_half": _vae_chain(cfg, ctx, real, "control-half", cfg.real_fraction),
        "control_half_real_fraction": cfg.real_fraction,
    }
    return out


def gaussian_numbers(g: dict[str, Any]) -> dict[str, float]:
    closed = [expected_variance(g["n"], t) for t in g["generations"]]
    return {
        "rel_err": max(abs(m / c - 1) for m, c in zip(g["collapse"]["mean"], closed, strict=True)),
        "mc_se": g["collapse"]["se"][-1] / closed[-1],
        "median": g["collapse"]["median"][-1],
        "control_median": g["control"]["median"][-1],
    }


def gmm_numbers(gmm: dict[str, Any]) -> dict[str, float | None]:
    lost = modes_lost(gmm["collapse"])
    ctrl = modes_lost(gmm["control"])
    frac = float(lost.mean())
    return {
        "lost": frac,
        "rare_margin": float(lost[:, -1].mean() - lost[:, :-1].mean()),
        "control_lost": float(ctrl.mean()),
        "control_ratio": float(ctrl.mean()) / frac if frac > 0 else None,
    }


def vae_numbers(v: dict[str, Any]) -> dict[str, float | None]:
    c, k = v["collapse"]["spread"], v["control"]["spread"]
    h = v.get("control_half", {}).get("spread")
    return {"ratio": c[-1] / c[0], "control_ratio": k[-1] / k[0], "control_half_ratio": h[-1] / h[0] if h else None}


def signature(result: Result) -> Verdict:
    d = result.data
    g, m, v = gaussian_numbers(d["gaussian"]), gmm_numbers(d["gmm"]), vae_numbers(d["vae"])
    T = d["gaussian"]["generations"][-1]
    checks = [
        check(
            "gaussian_closed_form_rel_err",
            g["rel_err"],
            "<=",
            GAUSS_REL_TOL,
            f"max_t |mean sigma_t^2 / ((n-1)/n)^t - 1| (Monte Carlo s.e. at t={T}: {g['mc_se']:.3f})",
        ),
        check("gaussian_median_var_ratio", g["median"], "<=", GAUSS_MAX_MEDIAN, f"median sigma_{T}^2 / sigma_0^2"),
        check(
            "control_gaussian_real_mix",
            g["control_median"],
            ">=",
            GAUSS_CONTROL_MIN,
            "the same median with real data in every generation",
        ),
        check("gmm_modes_lost", m["lost"], ">=", GMM_MIN_LOST, "mean fraction of the 5 modes lost per chain"),
        check(
            "gmm_rare_lost_first",
            m["rare_margin"],
            ">=",
            GMM_RARE_MARGIN,
            "loss rate of the rare mode (weight 0.05) minus that of the others",
        ),
        check(
            "control_gmm_real_mix",
            m["control_ratio"],
            "<=",
            GMM_CONTROL_MAX_RATIO,
            "modes lost with real data mixed in / without",
        ),
        check("vae_spread_ratio", v["ratio"], "<=", VAE_MAX_RATIO, "VAE sample variance: last / first generation"),
        check(
            "control_vae_real_mix",
            v["control_ratio"],
            ">=",
            VAE_CONTROL_MIN,
            f"the same ratio with a fraction {fmt(d['vae'].get('real_fraction'), '.2g')} of real data per generation",
        ),
    ]
    summary = (
        f"Gaussian: median sigma^2 after {T} generations {fmt(g['median'])} (control {fmt(g['control_median'])}), "
        f"closed form within {fmt(g['rel_err'])}; mixture: {fmt(m['lost'])} of modes lost "
        f"(rare-mode margin {fmt(m['rare_margin'])}; control {fmt(m['control_lost'])}); "
        f"VAE spread ratio {fmt(v['ratio'])} (control {fmt(v['control_ratio'])}; "
        f"with half real data {fmt(v['control_half_ratio'])}, not checked)"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, axes = new_figure(ncols=3, width=4.4, height=3.8)
    g = d["gaussian"]
    ts = g["generations"]
    ax = axes[0]
    ax.plot(ts, [expected_variance(g["n"], t) for t in ts], "k--", label="((n-1)/n)^t")
    ax.plot(ts, g["collapse"]["mean"], "o-", color="C0", label="mean (own samples)")
    ax.plot(ts, g["collapse"]["median"], "s-", color="C0", alpha=0.5, label="median (own samples)")
    ax.plot(ts, g["control"]["median"], "s-", color="C2", label="median (real mixed in)")
    ax.set_xlabel("generation")
    ax.set_ylabel("sigma_t^2 / sigma_0^2")
    ax.set_title("1-D Gaussian")
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, colour in (("collapse", "C0"), ("control", "C2")):
        m = np.asarray(d["gmm"][name])
        kept = (m >= LOST_FRACTION * m[:, :1, :]).mean(axis=(0, 2)) * len(GMM_WEIGHTS)
        ax.plot(range(len(kept)), kept, color=colour, label=f"{name}: modes kept (mean over chains)")
        ax.plot(range(len(kept)), m[:, :, -1].mean(0) / m[0, 0, -1] * len(GMM_WEIGHTS), ls=":", color=colour)
    ax.set_xlabel("generation")
    ax.set_ylabel("modes kept (dotted: rare-mode mass x5)")
    ax.set_title("Gaussian mixture (EM)")
    ax.legend(fontsize=7)
    ax = axes[2]
    v = d["vae"]
    for name, colour in (("collapse", "C0"), ("control", "C2"), ("control_half", "C1")):
        if name not in v:
            continue
        sp = v[name]["spread"]
        ax.plot(range(1, len(sp) + 1), [s / v["real_spread"] for s in sp], "o-", color=colour, label=name)
    ax.set_xlabel("generation")
    ax.set_ylabel("sample variance / real")
    ax.set_ylim(bottom=0)
    ax.set_title("VAE on MNIST-1D")
    ax.legend(fontsize=7)
    return [save(fig, out_dir, "collapse")]
