"""Class-conditional FID and IS: BCFID / WCFID / BCIS / WCIS see failures that the unconditional FID and IS miss.

Benny, Galanti, Benaim, Wolf 2021, "Evaluation metrics for conditional image generation", IJCV 129,
arXiv 2004.12361. With ``p(y|x)`` a classifier's class probabilities and ``c`` the conditioning class:
``BCIS = exp(E_c KL(p(y|c) || p(y)))``, ``WCIS = exp(E_c E_{x|c} KL(p(y|x) || p(y|c)))`` and exactly
``IS = BCIS * WCIS``; ``BCFID`` is the Frechet distance between Gaussians fitted to the class means of the real and
the generated features, ``WCFID`` the per-class FID averaged over classes, and ``FID <= BCFID + WCFID`` (the paper's
upper bound). Definitions and their checks: :mod:`phenomlab.probes.generative`.

Protocol: a small MLP is trained on part of sklearn digits (``ctx.train``); its penultimate activations are the
features and its softmax the ``p(y|x)``. The held-out digits are split per class into a reference set (two halves
``A``, ``B`` of ``n_per_class`` each, redrawn every repeat) and a disjoint generator pool. Simulated generators
draw ``n_per_class`` held-out points per conditioning class from the pool:

- ``perfect``: points of the right class;
- ``mode_drop``: points of the right class from ONE k-means cluster (the largest of ``n_modes``) of that class;
- ``swap``: points of class ``c + 1 (mod K)`` for condition ``c`` (correct images, wrong labels);
- ``ignore``: a fresh draw like ``perfect`` (the same class pools), its labels shuffled across classes (the
  generator ignores the class);
- ``real``: reference half ``B`` itself (the real-vs-real baseline).

Every generator is scored against reference half ``A``; ``repeats`` fresh draws per seed, averaged.

Checks (thresholds fixed a priori from the definitions, margins against the seed std measured on seeds 0-2, see
docs/phenomena/conditional-fid-is.md and the results table; the std values are in the constant comments):

- ``IS = BCIS x WCIS``: ``max |log IS - log BCIS - log WCIS|`` over all draws <= ``PRODUCT_TOL`` (1e-9);
- ``FID <= BCFID + WCFID``: ``max FID / (BCFID + WCFID)`` over all draws <= 1;
- class swap: ``WCFID(swap) / WCFID(perfect) >= MIN_SWAP_WCFID_RATIO``;
- class ignored: ``BCIS(ignore) / BCIS(perfect) <= MAX_IGNORE_BCIS_RATIO``,
  ``WCIS(ignore) / WCIS(perfect) >= MIN_IGNORE_WCIS_RATIO``,
  ``BCFID(ignore) / BCFID(perfect) >= MIN_IGNORE_BCFID_RATIO``;
- mode dropping: ``WCFID(mode_drop) / WCFID(perfect) >= MIN_MODE_WCFID_RATIO`` while the IS stays:
  ``|log IS(mode_drop) - log IS(perfect)| <= MAX_LOG_IS_SHIFT``;
- control (the paper's motivating failure): the unconditional metrics do not see the swap nor the ignored class:
  ``max |FID(g) / FID(perfect) - 1| <= MAX_FID_SHIFT`` and ``max |log IS(g) - log IS(perfect)| <= MAX_LOG_IS_SHIFT``
  for ``g`` in (swap, ignore), while their conditional metrics moved (checks above);
- control: the perfect generator scores like real data on every conditional metric:
  ``max |log M(perfect) - log M(real)| <= MAX_PERFECT_LOG_DEV`` for M in BCFID, WCFID, BCIS, WCIS.

Background, measurements and caveats: docs/phenomena/conditional-fid-is.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import digits
from ..errors import ConfigError
from ..models import MLP
from ..probes.generative import conditional_fid, conditional_scores
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "conditional-fid-is"
#: builds its tensors and models on the CPU whatever the run's device (not ported to accelerators)
RUNS_ON_CPU = True

GENERATORS = ("real", "perfect", "mode_drop", "swap", "ignore")
METRICS = ("BCFID", "WCFID", "FID", "BCIS", "WCIS", "IS")

#: IS = BCIS x WCIS is an identity (chain rule of mutual information): only float rounding is allowed
PRODUCT_TOL = 1e-9  # seeds 0-2: max 1.1e-15
#: FID <= BCFID + WCFID (paper's upper bound): the largest ratio over every draw
MAX_BOUND_RATIO = 1.0  # seeds 0-2: 0.187 +- 0.026 (mean +- seed std)
#: swapped labels: every class is scored against another class's real features
MIN_SWAP_WCFID_RATIO = 3.0  # seeds 0-2: 45.6 +- 7.0
#: ignored class: p(y|c) -> p(y), so BCIS -> 1 (from ~K) and WCIS -> ~K (from ~1)
MAX_IGNORE_BCIS_RATIO = 0.5  # seeds 0-2: 0.158 +- 0.006
MIN_IGNORE_WCIS_RATIO = 2.0  # seeds 0-2: 6.34 +- 0.23
#: ignored class: the class means collapse onto the global mean, so the between-class Gaussian shrinks to a point
MIN_IGNORE_BCFID_RATIO = 3.0  # seeds 0-2: 78.6 +- 12.5
#: one cluster per class: the within-class covariance shrinks
MIN_MODE_WCFID_RATIO = 1.5  # seeds 0-2: 2.43 +- 0.32
#: the IS / FID of a generator that keeps the pooled image distribution: within finite-sample noise
MAX_LOG_IS_SHIFT = 0.1  # seeds 0-2: mode_drop 0.024 +- 0.008; swap/ignore 0.0032 +- 0.0017
MAX_FID_SHIFT = 0.25  # seeds 0-2: 0.062 +- 0.012
#: the perfect generator against the real-vs-real baseline, every conditional metric (log ratio): a perfect generator
#: must not deviate from real data by as much as the smallest effect this verdict calls a failure (log 1.5)
MAX_PERFECT_LOG_DEV = math.log(MIN_MODE_WCFID_RATIO)  # 0.405; seeds 0-2: 0.143 +- 0.055


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(optimizer="adam", lr=3e-3, steps=1500, batch_size=64, weight_decay=1e-4, eval_every=500),
):
    width: int = param(16, "classifier MLP width = feature dimension (penultimate activations)", gt=0)
    depth: int = param(2, "classifier MLP hidden layers", ge=1)
    train_fraction: float = param(0.3, "fraction of digits used to train the classifier", gt=0.0, lt=1.0)
    n_per_class: int = param(30, "samples per class in the reference half A, the baseline B and each generator", ge=3)
    n_modes: int = param(2, "k-means clusters per class; mode_drop keeps the largest", ge=2)
    repeats: int = param(30, "fresh draws of every generator per seed (metrics averaged)", gt=0)


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: the pipeline only
    "smoke": dict(steps=200, eval_every=100, repeats=2, n_per_class=12),
    "quick": {},
    # more draws; the same data (digits has 1,797 points, so n_per_class cannot grow much)
    "paper": dict(repeats=200, steps=3000),
}


def _features(model: MLP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate activations and softmax probabilities of ``model`` on ``x``."""
    h = x.flatten(1)
    with torch.no_grad():
        for i in range(1, model.depth + 1):
            h = getattr(model, f"act{i}")(getattr(model, f"fc{i}")(h))
        probs = model.out(h).softmax(1)
    return h.double(), probs.double()


def _kmeans_largest(x: torch.Tensor, k: int, g: torch.Generator, iters: int = 50) -> torch.Tensor:
    """Indices of the largest cluster of a k-means (Lloyd, k-means++-style seeding by distance) on ``x``."""
    n = x.shape[0]
    centres = [x[int(torch.randint(n, (1,), generator=g))]]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).pow(2).min(1).values
        centres.append(x[int(torch.multinomial(d2 / d2.sum(), 1, generator=g))])
    C = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, C).argmin(1)
        C = torch.stack([x[assign == j].mean(0) if (assign == j).any() else C[j] for j in range(k)])
    assign = torch.cdist(x, C).argmin(1)
    sizes = torch.bincount(assign, minlength=k)
    return torch.nonzero(assign == int(sizes.argmax())).flatten()


def _draw(idx: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
    # without replacement while enough points exist; a (rare) small cluster is topped up with repeats
    if len(idx) >= m:
        return idx[torch.randperm(len(idx), generator=g)[:m]]
    return torch.cat([idx, idx[torch.randint(len(idx), (m - len(idx),), generator=g)]])


def _score(
    fa: torch.Tensor, ya: torch.Tensor, fg: torch.Tensor, pg: torch.Tensor, yg: torch.Tensor
) -> dict[str, float]:
    c = conditional_fid(fa, ya, fg, yg)
    s = conditional_scores(pg, yg)
    return {"BCFID": c["BCFID"], "WCFID": c["WCFID"], "FID": c["FID"], **s}


def _evaluate(cfg: Config, feats: torch.Tensor, probs: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    K, m = int(y.max()) + 1, cfg.n_per_class
    # per class: 2m reference points (halves A and B are redrawn each repeat), the rest is the generator pool
    ref, pool, mode = {}, {}, {}
    for c in range(K):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        if len(idx) < 3 * m:
            raise ConfigError(f"class {c} has {len(idx)} held-out digits; n_per_class={m} needs {3 * m}")
        ref[c], pool[c] = idx[: 2 * m], idx[2 * m :]
        mode[c] = pool[c][_kmeans_largest(feats[pool[c]], cfg.n_modes, g)]
    out: dict[str, dict[str, list[float]]] = {k: {mt: [] for mt in METRICS} for k in GENERATORS}
    labels = torch.arange(K).repeat_interleave(m)
    for _ in range(cfg.repeats):
        halves = [ref[c][torch.randperm(2 * m, generator=g)] for c in range(K)]
        a = torch.cat([h[:m] for h in halves])
        draws = {
            "real": (torch.cat([h[m:] for h in halves]), labels),
            "perfect": (torch.cat([_draw(pool[c], m, g) for c in range(K)]), labels),
            "mode_drop": (torch.cat([_draw(mode[c], m, g) for c in range(K)]), labels),
            # condition c gets real points of class c+1: every image is realistic, its class is wrong
            "swap": (torch.cat([_draw(pool[(c + 1) % K], m, g) for c in range(K)]), labels),
            "ignore": (torch.cat([_draw(pool[c], m, g) for c in range(K)]), labels[torch.randperm(K * m, generator=g)]),
        }
        for name, (idx, lab) in draws.items():
            for mt, v in _score(feats[a], labels, feats[idx], probs[idx], lab).items():
                out[name][mt].append(v)
    return {
        "draws": out,
        "mean": {k: {mt: sum(v) / len(v) for mt, v in d.items()} for k, d in out.items()},
        "mode_fraction": sum(len(mode[c]) for c in range(K)) / sum(len(pool[c]) for c in range(K)),
        "pool_per_class_min": min(len(pool[c]) for c in range(K)),
    }


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = digits(test_fraction=1.0 - cfg.train_fraction, seed=ctx.seed_for("data"))
    torch.manual_seed(ctx.seed_for("init"))
    model = MLP(ds.input_dim, ds.n_classes, width=cfg.width, depth=cfg.depth)
    hist = ctx.train("classifier", model, ds.train(), cfg.train_config(), eval_sets={"test": ds.test()})
    model.eval()
    feats, probs = _features(model, ds.x_test)
    res = ctx.cached("metrics", lambda: _evaluate(cfg, feats, probs, ds.y_test, ctx.seed_for("draws")))
    return {
        **res,
        "classifier_test_acc": float(hist.column("test_acc")[-1]),
        "n_classes": ds.n_classes,
        "feature_dim": int(feats.shape[1]),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def _log_dev(a: float, b: float) -> float | None:
    return abs(math.log(a) - math.log(b)) if a > 0 and b > 0 else None


def signature(result: Result) -> Verdict:
    d = result.data
    M, dr = d["mean"], d["draws"]
    per = [{mt: dr[gname][mt][i] for mt in METRICS} for gname in dr for i in range(len(dr[gname]["IS"]))]
    prod_err = max(abs(math.log(r["IS"]) - math.log(r["BCIS"]) - math.log(r["WCIS"])) for r in per)
    bound = max(r["FID"] / (r["BCFID"] + r["WCFID"]) for r in per)
    P = M["perfect"]
    fid_shift = max(abs(M[gn]["FID"] / P["FID"] - 1) for gn in ("swap", "ignore"))
    is_devs = [_log_dev(M[gn]["IS"], P["IS"]) for gn in ("swap", "ignore")]
    is_shift = None if any(v is None for v in is_devs) else max(is_devs)
    devs = [_log_dev(P[mt], M["real"][mt]) for mt in ("BCFID", "WCFID", "BCIS", "WCIS")]
    perfect_dev = None if any(v is None for v in devs) else max(devs)
    checks = [
        check("is_equals_bcis_x_wcis", prod_err, "<=", PRODUCT_TOL, "max |log IS - log BCIS - log WCIS| over draws"),
        check("fid_upper_bound", bound, "<=", MAX_BOUND_RATIO, "max FID / (BCFID + WCFID) over draws"),
        check(
            "swap_raises_wcfid",
            _ratio(M["swap"]["WCFID"], P["WCFID"]),
            ">=",
            MIN_SWAP_WCFID_RATIO,
            "WCFID(swap) / WCFID(perfect)",
        ),
        check(
            "ignore_lowers_bcis",
            _ratio(M["ignore"]["BCIS"], P["BCIS"]),
            "<=",
            MAX_IGNORE_BCIS_RATIO,
            "BCIS(ignore) / BCIS(perfect)",
        ),
        check(
            "ignore_raises_wcis",
            _ratio(M["ignore"]["WCIS"], P["WCIS"]),
            ">=",
            MIN_IGNORE_WCIS_RATIO,
            "WCIS(ignore) / WCIS(perfect)",
        ),
        check(
            "ignore_raises_bcfid",
            _ratio(M["ignore"]["BCFID"], P["BCFID"]),
            ">=",
            MIN_IGNORE_BCFID_RATIO,
            "BCFID(ignore) / BCFID(perfect)",
        ),
        check(
            "mode_drop_raises_wcfid",
            _ratio(M["mode_drop"]["WCFID"], P["WCFID"]),
            ">=",
            MIN_MODE_WCFID_RATIO,
            "WCFID(mode_drop) / WCFID(perfect)",
        ),
        check(
            "mode_drop_is_unchanged",
            _log_dev(M["mode_drop"]["IS"], P["IS"]),
            "<=",
            MAX_LOG_IS_SHIFT,
            "|log IS(mode_drop) - log IS(perfect)|: the IS misses within-class mode dropping",
        ),
        check(
            "control_fid_blind_to_labels",
            fid_shift,
            "<=",
            MAX_FID_SHIFT,
            "max |FID(g)/FID(perfect) - 1|, g in swap, ignore: the unconditional FID misses wrong labels",
        ),
        check(
            "control_is_blind_to_labels",
            is_shift,
            "<=",
            MAX_LOG_IS_SHIFT,
            "max |log IS(g) - log IS(perfect)|, g in swap, ignore: the unconditional IS misses wrong labels",
        ),
        check(
            "control_perfect_like_real",
            perfect_dev,
            "<=",
            MAX_PERFECT_LOG_DEV,
            "max |log M(perfect) - log M(real)|, M in BCFID, WCFID, BCIS, WCIS",
        ),
    ]
    summary = (
        f"WCFID perfect {fmt(P['WCFID'])}, swap {fmt(M['swap']['WCFID'])}, mode_drop {fmt(M['mode_drop']['WCFID'])}; "
        f"BCIS perfect {fmt(P['BCIS'])} vs ignore {fmt(M['ignore']['BCIS'])}; FID perfect {fmt(P['FID'])}, "
        f"swap {fmt(M['swap']['FID'])}, ignore {fmt(M['ignore']['FID'])}; IS = BCIS x WCIS to {prod_err:.1e}; "
        f"max FID/(BCFID+WCFID) {fmt(bound)}"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    M = result.data["mean"]
    fig, axes = new_figure(ncols=2, width=5.5, height=3.8)
    x = range(len(GENERATORS))
    for ax, group in zip(axes, (("FID", "BCFID", "WCFID"), ("IS", "BCIS", "WCIS")), strict=True):
        w = 0.8 / len(group)
        for j, mt in enumerate(group):
            ax.bar([i + (j - 1) * w for i in x], [M[gn][mt] for gn in GENERATORS], width=w, label=mt)
        ax.set_xticks(list(x), list(GENERATORS), rotation=20)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_title("Frechet distances to real half A (lower is better)")
    axes[1].set_title("Inception scores (BCIS high, WCIS low is better)")
    return [save(fig, out_dir, "metrics")]
