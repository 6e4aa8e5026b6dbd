"""Hypernetwork single-image GANs: a network that emits a per-image GAN models each held-out image's own patches.

Bensadoun, Gur, Galanti, Wolf (2021), "Meta Internal Learning", NeurIPS, arXiv 2110.02900. A convolutional
hypernetwork maps an image ``x_i`` to the weights of a multi-scale single-image GAN (a SinGAN pyramid: generators
and patch critics per scale); it is trained adversarially (WGAN-GP) plus a reconstruction loss over a COLLECTION
of images, and then models a NOVEL image feed-forward, without training on it. Embeddings can be interpolated.

Protocol (CPU scale): 16x16 grey-level textures (oriented gratings with random orientation, period, sharpness,
contrast and noise: distinct patch statistics per image), ``n_train`` for training and ``n_test`` held out. The
hypernetwork (:class:`phenomlab.models.hypergan.HyperSinGAN`, 2 scales 8x8 and 16x16, 3-layer 3x3 conv
generators/critics of width ``width``) trains for ``steps`` alternating critic/generator steps. Measurement: for
held-out image ``i``, ``n_eval`` samples ``S_i`` of its emitted generator; ``M[i, j] = patch_fid(S_i, x_j)`` with
a fixed random 5x5 patch feature extractor (:mod:`phenomlab.probes.patches`); ``win_i`` = fraction of held-out
``j != i`` with ``M[i, i] < M[i, j]``.

Checks:
- ``own_image_fraction``: the fraction of held-out images with ``win_i > 0.5`` (their own image is closer than
  most others) is >= ``OWN_FRACTION`` (0.8, the issue's number);
- ``sample_diversity``: the emitted GANs are not a deterministic copy of the image: mean per-pixel std over
  samples of one generator >= ``MIN_DIVERSITY`` (0.05 on images in [-1, 1]); a copy plus noise passes it (and the
  own-image and interpolation checks): see the caveat in docs/phenomena/hyper-singan.md;
- ``interpolation_monotone``: generators emitted for ``(1-a) e_g(x_p) + a e_g(x_q)`` move from ``x_p``'s
  patch statistics to ``x_q``'s: the median over pairs of ``(rho(a, FID to x_p) - rho(a, FID to x_q)) / 2``
  (Spearman over 5 values of ``a``) >= ``MIN_INTERP_RHO`` (0.8);
- ``sample_novelty``: the samples are NEW arrangements of the image's patches, not the image plus noise:
  ``r_i`` = mean over the ``n_eval`` samples of generator ``i`` of the Pearson correlation between the sample's
  pixels and image ``i``'s pixels (:func:`pixel_correlations`); the median over held-out images of ``r_i`` <=
  ``MAX_NOVELTY_R`` (0.5). The textures are random-phase gratings: a single-image GAN re-arranges the image's
  patches at a new phase (``r`` near 0), a copy plus pixel noise keeps ``r`` near 1 (image + N(0, 0.3^2) noise
  gives about 0.9, + N(0, 0.45^2) about 0.8; an independent texture of the same family about 0). Also reported
  (not checked): the same statistic for the shuffled control and for the emitted generator's reconstruction path
  (the fixed training noise map ``z_rec`` at the coarsest scale, zero noise above: the one input the
  reconstruction loss asks to reproduce the image);
- ``control_own_image_fraction``: the same pipeline with the generator's conditioning SHUFFLED during
  training (the hyper-generator sees ``x_pi(i)`` while critic and reconstruction target ``x_i``; ``pi`` a fixed
  random permutation) shows no own-image advantage on held-out images: its ``own_image_fraction`` <=
  ``CONTROL_MAX_FRACTION`` (0.65; no advantage is 0.5, and 32 held-out images give a binomial std of ~0.09).
  No information about a held-out image reaches this arm's generator, so it is at chance by construction: under
  the project's rules it does not count as a negative control (the next one does);
- ``control_rec_only_novel_own_fraction`` (pre-registered before any run): the main arm's pipeline with the
  adversarial term removed (reconstruction loss only, no critic; the abstract: the meta-learner "is therefore
  required" to be trained adversarially). Per held-out image, the signature is ``win_i > 0.5`` AND ``r_i <=
  MAX_NOVELTY_R`` (:func:`novel_own_fraction`); the fraction of images with it must be <= ``REC_ONLY_MAX_FRACTION``
  (0.65, no advantage is at most 0.5).

Quick preset, seeds 0-2 (mean +- seed std): own-image fraction 0.896 +- 0.048 (threshold 0.8), diversity
0.439 +- 0.013 (0.05), interpolation 0.875 +- 0.043 (0.8), control own-image fraction 0.531 +- 0.054 (0.65),
sample-image pixel correlation 0.015 +- 0.025 (0.5; reconstruction path 0.39 +- 0.26, control 0.001 +- 0.004).
The reconstruction-only arm FAILS its control on seeds 0-4: novel own-image fraction 0.917 +- 0.065 (seeds 3 / 4:
0.844 / 0.812) against the main arm's 0.896 +- 0.048, so at this scale the checks do not need the adversarial
training and the row is not reproduced at quick scale. Details: docs/phenomena/hyper-singan.md.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import PhenomlabError
from ..models.hypergan import HyperSinGAN
from ..probes.patches import patch_fid, random_patch_extractor
from ._stats import fmt, spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "hyper-singan"
#: builds its tensors and models on the CPU whatever the run's device (not ported to accelerators)
RUNS_ON_CPU = True

#: the issue's number; seeds 0-2: 0.896, seed std 0.048
OWN_FRACTION = 0.8
#: a copying hypernetwork gives 0; seeds 0-2: 0.439, seed std 0.013
MIN_DIVERSITY = 0.05
#: 1 = both FIDs monotone along the path; seeds 0-2: 0.875, seed std 0.043
MIN_INTERP_RHO = 0.8
#: no advantage is 0.5 (binomial std ~0.09 at 32 images); seeds 0-2: 0.531, seed std 0.054
CONTROL_MAX_FRACTION = 0.65
#: fixed before any run (audit fix): copy + noise ~0.8-0.9, new texture ~0; seeds 0-2: 0.015, seed std 0.025
MAX_NOVELTY_R = 0.5
#: pre-registered before any run of the arm (docs page): the reconstruction-only arm's fraction of held-out images
#: with the per-image signature (own image closer than most, novel samples); no advantage is at most 0.5.
#: Seeds 0-2: 0.917, seed std 0.065; seeds 3 / 4: 0.844 / 0.812: fails on every seed
REC_ONLY_MAX_FRACTION = 0.65
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(lr=5e-4, steps=1500, batch_size=16, eval_every=250)):
    size: int = param(16, "image side (pixels); 2 scales: size/2 and size", gt=3)
    n_train: int = param(128, "training textures", gt=1)
    n_test: int = param(32, "held-out textures (feed-forward modelling)", gt=2)
    width: int = param(16, "channels of the emitted generators and critics", gt=0)
    embed_dim: int = param(32, "embedding size of e_g and e_d", gt=0)
    n_fake: int = param(2, "generator samples per image per step", gt=0)
    gp_weight: float = param(0.1, "WGAN-GP gradient penalty weight", ge=0.0)
    rec_weight: float = param(10.0, "reconstruction loss weight (fixed noise at the coarsest scale)", ge=0.0)
    fine_noise: float = param(0.2, "noise amplitude at the fine scale (1 at the coarsest)", ge=0.0)
    n_eval: int = param(8, "samples per emitted generator for the patch FID", gt=1)
    n_pairs: int = param(8, "held-out pairs for the interpolation check", gt=0)
    control: bool = param(True, "also train the shuffled-conditioning control")
    rec_only: bool = param(True, "also train the reconstruction-only arm (no adversarial term: the negative control)")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(n_train=16, n_test=6, steps=30, batch_size=8, eval_every=15, width=8, n_pairs=2, n_eval=4),
    "quick": {},
    # a larger collection and longer training (not run in the test suite)
    "paper": dict(size=32, n_train=1024, n_test=64, steps=20000, width=32, embed_dim=64, eval_every=1000),
}


def textures(n: int, size: int, seed: int) -> torch.Tensor:
    """``[n, 1, size, size]`` oriented gratings in [-1, 1]: random orientation, period 3-8 px, phase, sharpness
    (sine to near-square wave), contrast 0.4-0.9 and additive Gaussian noise 0-0.25."""
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(n, 6, generator=g)
    theta, period, phase = u[:, 0] * math.pi, 3 + 5 * u[:, 1], 2 * math.pi * u[:, 2]
    sharp, contrast, noise = 1 + 6 * u[:, 3], 0.4 + 0.5 * u[:, 4], 0.25 * u[:, 5]
    r = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    wave = torch.sin(2 * math.pi * proj / period[:, None, None] + phase[:, None, None])
    img = contrast[:, None, None] * torch.tanh(sharp[:, None, None] * wave) / torch.tanh(sharp)[:, None, None]
    img = img + noise[:, None, None] * torch.randn(n, size, size, generator=g)
    return img.clamp(-1, 1)[:, None]


def _noises(model: HyperSinGAN, n: int, B: int, sigmas: list[float], g: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(n, B, model.channels, s, s, generator=g) for s in model.sizes]


def _gradient_penalty(model: HyperSinGAN, theta_d: Any, real: torch.Tensor, fake: torch.Tensor, s: int, g: Any):
    eps = torch.rand(fake.shape[0], fake.shape[1], 1, 1, 1, generator=g)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.discriminate(theta_d, mix, s).sum(), mix, create_graph=True)
    return (grad.flatten(2).norm(dim=2) - 1).pow(2).mean()


def _reconstruction_loss(
    model: HyperSinGAN, theta_g: Any, z_rec: torch.Tensor, reals: list[torch.Tensor], sigmas: list[float]
) -> torch.Tensor:
    """``sum_s ||G_s(z_rec) - x_s||^2`` (mean over pixels): ``z_rec`` at the coarsest scale, zero noise above."""
    B = reals[0].shape[1]
    noise = [z_rec.expand(1, B, -1, -1, -1)] + [torch.zeros_like(r) for r in reals[1:]]
    recs = model.generate(theta_g, noise, sigmas)
    return sum((recs[s] - reals[s]).pow(2).mean() for s in range(model.n_scales))


def train_hypergan(
    model: HyperSinGAN,
    cond: torch.Tensor,
    target: torch.Tensor,
    cfg: Config,
    seed: int,
    log: Any = None,
    adversarial: bool = True,
) -> torch.Tensor:
    """Adversarial training of the hyper-generator (on ``cond``) against per-image critics (on ``target``).

    Per step: a batch of ``batch_size`` images; critic step ``E D(fake) - E D(real) + gp * GP`` summed over
    scales; generator step ``-E D(fake) + rec * ||G(z_rec) - x||^2`` (``z_rec`` a fixed noise map at the
    coarsest scale, zero noise above, as in SinGAN). Adam(lr, betas (0.5, 0.999)) for both. With
    ``adversarial=False`` (the reconstruction-only ablation) the generator step is ``rec * ||G(z_rec) - x||^2``
    alone and no critic is trained (it could not affect the generator). Returns ``z_rec``.
    """
    g = torch.Generator().manual_seed(seed)
    sigmas = [1.0] + [cfg.fine_noise] * (model.n_scales - 1)
    opt_g = torch.optim.Adam(model.hyper_parameters("g"), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.hyper_parameters("d"), lr=cfg.lr, betas=(0.5, 0.999))
    z_rec = torch.randn(1, 1, model.channels, model.sizes[0], model.sizes[0], generator=g)
    n = cond.shape[0]
    B = min(cfg.batch_size or n, n)
    for step in range(cfg.steps):
        idx = torch.randperm(n, generator=g)[:B]
        c, reals = cond[idx], [r[None] for r in model.pyramid(target[idx])]
        if not adversarial:
            rec = _reconstruction_loss(model, model.emit(model.embed(c, "g"), "g"), z_rec, reals, sigmas)
            opt_g.zero_grad(set_to_none=True)
            (cfg.rec_weight * rec).backward()
            opt_g.step()
            if log is not None and (step % cfg.eval_every == 0 or step == cfg.steps - 1):
                log(step, {"rec": float(rec.detach())})
            continue
        # critic step
        with torch.no_grad():
            fakes = model.generate(
                model.emit(model.embed(c, "g"), "g"), _noises(model, cfg.n_fake, B, sigmas, g), sigmas
            )
        theta_d = model.emit(model.embed(target[idx], "d"), "d")
        loss_d = torch.zeros(())
        for s in range(model.n_scales):
            real_s = reals[s].expand_as(fakes[s])
            loss_d = loss_d + model.discriminate(theta_d, fakes[s], s).mean()
            loss_d = loss_d - model.discriminate(theta_d, reals[s], s).mean()
            if cfg.gp_weight:
                loss_d = loss_d + cfg.gp_weight * _gradient_penalty(model, theta_d, real_s, fakes[s], s, g)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator step
        theta_g = model.emit(model.embed(c, "g"), "g")
        fakes = model.generate(theta_g, _noises(model, cfg.n_fake, B, sigmas, g), sigmas)
        rec = _reconstruction_loss(model, theta_g, z_rec, reals, sigmas)
        with torch.no_grad():
            theta_d = [
                [(w.detach(), b.detach()) for w, b in sc] for sc in model.emit(model.embed(target[idx], "d"), "d")
            ]
        adv = sum(-model.discriminate(theta_d, fakes[s], s).mean() for s in range(model.n_scales))
        loss_g = adv + cfg.rec_weight * rec
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if log is not None and (step % cfg.eval_every == 0 or step == cfg.steps - 1):
            log(step, {"loss_d": loss_d.item(), "adv_g": float(adv.detach()), "rec": float(rec.detach())})
    return z_rec


@torch.no_grad()
def sample(model: HyperSinGAN, e_g: torch.Tensor, n: int, fine_noise: float, g: torch.Generator) -> torch.Tensor:
    """``[B, n, C, H, W]``: ``n`` full-resolution samples of each generator emitted for embeddings ``e_g``."""
    sigmas = [1.0] + [fine_noise] * (model.n_scales - 1)
    out = model.generate(model.emit(e_g, "g"), _noises(model, n, e_g.shape[0], sigmas, g), sigmas)[-1]
    return out.transpose(0, 1)


@torch.no_grad()
def reconstruct(model: HyperSinGAN, e_g: torch.Tensor, z_rec: torch.Tensor, fine_noise: float) -> torch.Tensor:
    """``[B, C, H, W]``: the reconstruction path of each generator emitted for ``e_g`` (``z_rec`` at the coarsest
    scale, zero noise above): the input on which training asks the generator to reproduce its image."""
    sigmas = [1.0] + [fine_noise] * (model.n_scales - 1)
    B = e_g.shape[0]
    noise = [z_rec.expand(1, B, -1, -1, -1)] + [torch.zeros(1, B, model.channels, s, s) for s in model.sizes[1:]]
    return model.generate(model.emit(e_g, "g"), noise, sigmas)[-1][0]


def pixel_correlations(samples: torch.Tensor, images: torch.Tensor) -> list[float]:
    """``r_i``: mean over samples ``k`` of the Pearson correlation between ``samples[i, k]`` and ``images[i]``.

    ``samples`` is ``[B, n, C, H, W]``, ``images`` ``[B, C, H, W]``. Near 1 for a (noisy) copy of the image, near
    0 for a sample whose patches sit at an unrelated phase. A constant sample or image has no correlation: its
    term is 0 (no pixel-wise resemblance).
    """
    if samples.dim() != 5 or samples.shape[0] != images.shape[0] or samples.shape[2:] != images.shape[1:]:
        raise PhenomlabError(f"samples {tuple(samples.shape)} do not match images {tuple(images.shape)}")
    s = samples.flatten(2).double()
    x = images.flatten(1).double()
    s = s - s.mean(2, keepdim=True)
    x = x - x.mean(1, keepdim=True)
    den = s.norm(dim=2) * x.norm(dim=1, keepdim=True)
    r = torch.where(den > 0, (s * x[:, None]).sum(2) / den.clamp_min(1e-300), torch.zeros_like(den))
    return [float(v) for v in r.mean(1)]


def fid_matrix(samples: torch.Tensor, images: torch.Tensor, extractor: Any) -> list[list[float]]:
    """``M[i][j] = patch_fid(samples[i], images[j])``: generator ``i``'s samples against image ``j``."""
    return [
        [patch_fid(samples[i], images[j : j + 1], extractor) for j in range(images.shape[0])]
        for i in range(len(samples))
    ]


def win_rates(M: list[list[float]]) -> tuple[list[float], list[float]]:
    """Row wins (own image closer than image ``j``) and column wins (own generator closer than generator ``j``)."""
    n = len(M)
    rows = [sum(M[i][i] < M[i][j] for j in range(n) if j != i) / (n - 1) for i in range(n)]
    cols = [sum(M[i][i] < M[j][i] for j in range(n) if j != i) / (n - 1) for i in range(n)]
    return rows, cols


def _evaluate(
    model: HyperSinGAN, test: torch.Tensor, cfg: Config, seed: int, interp: bool, z_rec: torch.Tensor
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    extractor = random_patch_extractor(model.channels, 16, 5, seed=seed + 1)
    model.eval()
    with torch.no_grad():
        e = model.embed(test, "g")
    S = sample(model, e, cfg.n_eval, cfg.fine_noise, g)
    M = fid_matrix(S, test, extractor)
    rows, cols = win_rates(M)
    out: dict[str, Any] = {
        "fid": M,
        "row_wins": rows,
        "col_wins": cols,
        "own_fraction": sum(w > 0.5 for w in rows) / len(rows),
        "own_generator_fraction": sum(w > 0.5 for w in cols) / len(cols),
        "diversity": float(S.std(dim=1).mean()),
    }
    # no random draws here: the other numbers of the original protocol are unchanged by it
    r = pixel_correlations(S, test)
    r_rec = pixel_correlations(reconstruct(model, e, z_rec, cfg.fine_noise)[:, None], test)
    out.update(novelty_r=r, novelty=statistics.median(r), rec_r=r_rec, rec_novelty=statistics.median(r_rec))
    if interp:
        rhos, curves = [], []
        for k in range(min(cfg.n_pairs, test.shape[0] // 2)):
            p, q = 2 * k, 2 * k + 1
            ea = torch.stack([(1 - a) * e[p] + a * e[q] for a in ALPHAS])
            Sa = sample(model, ea, cfg.n_eval, cfg.fine_noise, g)
            fp = [patch_fid(Sa[t], test[p : p + 1], extractor) for t in range(len(ALPHAS))]
            fq = [patch_fid(Sa[t], test[q : q + 1], extractor) for t in range(len(ALPHAS))]
            rp, rq = spearman(list(ALPHAS), fp), spearman(list(ALPHAS), fq)
            rhos.append(((rp or 0.0) - (rq or 0.0)) / 2)
            curves.append({"fid_p": fp, "fid_q": fq})
        out["interp_rho"] = rhos
        out["interp_curves"] = curves
    return out


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    data_seed = ctx.seed_for("data")
    train_x = textures(cfg.n_train, cfg.size, data_seed)
    test_x = textures(cfg.n_test, cfg.size, data_seed + 1)
    out: dict[str, Any] = {}
    # arms after the first two are appended, so main and control (and their numbers) are those of a run without them
    arms = [("main", False, True)] + ([("control", True, True)] if cfg.control else [])
    arms += [("rec_only", False, False)] if cfg.rec_only else []
    for name, shuffled, adversarial in arms:

        def compute(name: str = name, shuffled: bool = shuffled, adversarial: bool = adversarial) -> dict[str, Any]:
            torch.manual_seed(ctx.seed_for("init"))
            model = HyperSinGAN(1, cfg.size, 2, cfg.width, 3, cfg.embed_dim)
            cond = train_x
            if shuffled:  # the generator sees another image than the one its critic and reconstruction target
                cond = train_x[torch.randperm(cfg.n_train, generator=ctx.generator("perm"))]
            z_rec = train_hypergan(
                model,
                cond,
                train_x,
                cfg,
                ctx.seed_for("train", name),
                lambda s, m: ctx.log(s, m, name),
                adversarial=adversarial,
            )
            return _evaluate(model, test_x, cfg, ctx.seed_for("eval"), interp=name == "main", z_rec=z_rec)

        out[name] = ctx.cached(name, compute)
    out["test_images"] = test_x.squeeze(1).tolist()
    return out


def novel_own_fraction(arm: dict[str, Any]) -> float | None:
    """The fraction of held-out images ``i`` with the per-image signature: ``win_i > 0.5`` (own image closer
    than most others) and ``r_i <= MAX_NOVELTY_R`` (samples are new arrangements, not the image plus noise).
    None for an arm stored without the per-image pixel correlations."""
    wins, r = arm.get("row_wins"), arm.get("novelty_r")
    if not wins or not r or len(wins) != len(r):
        return None
    return sum(w > 0.5 and v <= MAX_NOVELTY_R for w, v in zip(wins, r, strict=True)) / len(wins)


def signature(result: Result) -> Verdict:
    d = result.data
    main, ctrl, rec_only = d["main"], d.get("control"), d.get("rec_only")
    rec_fraction = novel_own_fraction(rec_only) if rec_only else None
    rho = statistics.median(main["interp_rho"]) if main.get("interp_rho") else None
    checks = [
        check(
            "own_image_fraction",
            main["own_fraction"],
            ">=",
            OWN_FRACTION,
            "held-out images whose emitted GAN matches their own patches better than most others'",
        ),
        check(
            "sample_diversity",
            main["diversity"],
            ">=",
            MIN_DIVERSITY,
            "mean per-pixel std over samples of one emitted generator",
        ),
        check(
            "interpolation_monotone",
            rho,
            ">=",
            MIN_INTERP_RHO,
            "median over pairs of the Spearman trend of patch FID along the embedding path",
        ),
        check(
            "sample_novelty",
            main.get("novelty"),
            "<=",
            MAX_NOVELTY_R,
            "median over held-out images of the mean pixel correlation of a sample with its own image",
        ),
        check(
            "control_own_image_fraction",
            ctrl["own_fraction"] if ctrl else None,
            "<=",
            CONTROL_MAX_FRACTION,
            "shuffled conditioning: no own-image advantage",
        ),
        check(
            "control_rec_only_novel_own_fraction",
            rec_fraction,
            "<=",
            REC_ONLY_MAX_FRACTION,
            "no adversarial term (reconstruction loss only): held-out images whose samples are novel AND closer to "
            "their own image than to most others",
        ),
    ]
    mean_win = statistics.mean(main["row_wins"])
    c_nov, c_rec = (ctrl.get("novelty"), ctrl.get("rec_novelty")) if ctrl else (None, None)
    summary = (
        f"own-image fraction {fmt(main['own_fraction'], '.2f')} (mean row win {fmt(mean_win)}), "
        f"own-generator fraction {fmt(main['own_generator_fraction'], '.2f')}, diversity {fmt(main['diversity'])}, "
        f"interpolation rho {fmt(rho, '.2f')}, sample-image pixel correlation {fmt(main.get('novelty'))} "
        f"(reconstruction path {fmt(main.get('rec_novelty'))}); shuffled control own-image fraction "
        f"{fmt(ctrl['own_fraction'] if ctrl else None, '.2f')}, pixel correlation "
        f"{fmt(c_nov)} (reconstruction {fmt(c_rec)}); novel own-image fraction: main "
        f"{fmt(novel_own_fraction(main), '.2f')}, reconstruction-only {fmt(rec_fraction, '.2f')} (its own-image "
        f"fraction {fmt(rec_only['own_fraction'] if rec_only else None, '.2f')}, pixel correlation "
        f"{fmt(rec_only.get('novelty') if rec_only else None)}, diversity "
        f"{fmt(rec_only['diversity'] if rec_only else None)})"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, axes = new_figure(ncols=2, width=4.5, height=3.6)
    arms = [("main", d["main"])] + ([("shuffled control", d["control"])] if d.get("control") else [])
    arms += [("reconstruction only", d["rec_only"])] if d.get("rec_only") else []
    for k, (name, arm) in enumerate(arms):
        axes[0].hist(arm["row_wins"], bins=10, range=(0, 1), alpha=0.6, color=f"C{k}", label=name)
    axes[0].axvline(0.5, color="grey", ls=":")
    axes[0].set_xlabel("win rate: own image closer than image j")
    axes[0].set_ylabel("held-out images")
    axes[0].legend(fontsize=8)
    for k, c in enumerate(d["main"].get("interp_curves", [])):
        axes[1].plot(ALPHAS, c["fid_p"], color=f"C{k % 10}", alpha=0.7)
        axes[1].plot(ALPHAS, c["fid_q"], color=f"C{k % 10}", ls="--", alpha=0.7)
    axes[1].set_xlabel("interpolation a (embedding of x_p -> x_q)")
    axes[1].set_ylabel("patch FID to x_p (solid), x_q (dashed)")
    return [save(fig, out_dir, "hyper_singan")]
