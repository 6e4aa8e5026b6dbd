"""Representation similarity across seeds: linear CKA identifies corresponding layers, CCA does not.

Kornblith, Norouzi, Lee, Hinton 2019, "Similarity of Neural Network Representations Revisited", ICML
(arXiv 1905.00414). Networks of one architecture trained from different initialisations learn similar
representations layer by layer: for each layer i of net A, the layer of net B most similar to it by linear CKA
is layer i (their Table 2: 99.3% for CKA; CCA-based measures, invariant to every invertible linear map, much
lower). Same-layer similarity across seeds grows with width (their Figure 6).

Protocol: ``nets`` CNNs (``SmallCNN``: 4 conv layers of ``c`` channels, a hidden layer of ``2c`` units) per width
``c`` in ``widths``, trained identically from different initialisations on MNIST-1D; representations = the 5
post-activation layers on ``n_examples`` test signals (flattened). Checks:
- ``cka_identification``: fraction of (ordered pair of nets, layer i) whose most CKA-similar layer is i, at the
  widest width, ``>= MIN_CKA_ID`` (0.9, the issue's threshold);
- ``control_cca_identification_gap``: the same test with mean canonical correlation ``rho_bar`` (the measure
  the paper shows failing), on the same nets and examples, scores at least ``MIN_GAP`` (0.2) lower. ``rho_bar``
  is 1 by construction once a layer's width reaches the number of examples (the paper's Theorem 1), so
  ``n_examples`` must be at least twice the widest flattened layer: the failure is then measured, not forced;
- ``width_trend_ci_low``: the least-squares slope of same-layer CKA (mean over layers, per pair of nets) against
  log2(width), across separately trained nets (not checkpoints); the lower end of its 95% interval (jackknife over
  the nets of each width, Student t) must be ``> 0``; and ``width_gain``: mean same-layer CKA at the widest
  width minus at the narrowest ``>= MIN_GAIN`` (0.05).

Seed standard deviations of each deciding number: docs/BENCHMARKS.md. Background: docs/phenomena/
representation-similarity.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import mnist1d
from ..errors import ConfigError
from ..models import SmallCNN
from ..probes.activations import features
from ..probes.similarity import cca_matrices, cka_matrices
from ._stats import fmt, slope
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "representation-similarity"

MIN_CKA_ID = 0.9
MIN_GAP = 0.2
MIN_GAIN = 0.05
LAYERS = ("act1", "act2", "act3", "act4", "act_fc")
SIGNAL_LENGTH = 40  # MNIST-1D


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(optimizer="adam", lr=1e-3, steps=1500, batch_size=128, eval_every=1500)):
    widths: tuple[int, ...] = param((8, 16, 32), "channels per conv layer, one set of nets per width", gt=0)
    nets: int = param(8, "independently initialised nets per width", ge=2)
    n_train: int = param(4000, "MNIST-1D training signals", ge=100)
    n_examples: int = param(3000, "test signals on which representations are compared", ge=10)

    def validate(self) -> None:
        super().validate()
        if len(self.widths) < 3:
            raise ConfigError(f"widths needs at least 3 values for a trend, got {self.widths}")
        widest = SIGNAL_LENGTH * max(self.widths)
        if self.n_examples < 2 * widest:
            raise ConfigError(
                f"n_examples={self.n_examples} must be >= 2 x the widest flattened layer ({widest}): "
                "CCA is 1 by construction once a layer is as wide as the number of examples"
            )


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(widths=(2, 3, 4), nets=2, steps=50, eval_every=50, n_train=400, n_examples=400),
    "quick": {},
    "paper": dict(widths=(8, 16, 32, 64), nets=10, steps=5000, eval_every=5000, n_examples=6000),
}


def identification(sims: list[torch.Tensor]) -> float:
    """Fraction of rows ``i`` of the layer-by-layer similarity matrices whose largest entry is column ``i``."""
    hits = sum(int((s.argmax(1) == torch.arange(s.shape[0])).sum()) for s in sims)
    return hits / sum(s.shape[0] for s in sims)


def _mean_off_diagonal(m: list[list[float | None]], idx: list[int]) -> float:
    """Mean of ``m[idx[a]][idx[b]]`` over positions ``a != b`` whose nets differ and whose value is finite."""
    vals = [
        v
        for a, i in enumerate(idx)
        for b, j in enumerate(idx)
        if a != b and i != j and (v := m[i][j]) is not None and math.isfinite(v)
    ]
    return sum(vals) / len(vals) if vals else math.nan


def jackknife_var(m: list[list[float | None]]) -> float:
    """Jackknife variance of the mean over pairs of distinct nets (a U-statistic), leaving out one net at a time:
    ``(n-1)/n sum_i (mean_without_i - mean of those)^2`` (Efron & Stein 1981)."""
    n = len(m)
    loo = [_mean_off_diagonal(m, [j for j in range(n) if j != i]) for i in range(n)]
    loo = [v for v in loo if math.isfinite(v)]
    if len(loo) < 2:
        return math.nan
    mean = sum(loo) / len(loo)
    return (len(loo) - 1) / len(loo) * sum((v - mean) ** 2 for v in loo)


def width_slope_ci(widths: list[int], pair_cka: list[list[list[float | None]]]) -> tuple[float, float, float]:
    """Slope of mean same-layer CKA on log2(width) with a 95% interval: per width the jackknife variance over its
    nets (the widths are trained independently), propagated through the least-squares weights, and a Student t
    quantile with Welch-Satterthwaite degrees of freedom (each width contributing n_nets - 1)."""
    from scipy.stats import t as student_t

    x = [math.log2(w) for w in widths]
    means = [_mean_off_diagonal(m, list(range(len(m)))) for m in pair_cka]
    point = slope(x, means)
    mx = sum(x) / len(x)
    sxx = sum((a - mx) ** 2 for a in x)
    terms = [((a - mx) / sxx) ** 2 * jackknife_var(m) for a, m in zip(x, pair_cka, strict=True)]
    dfs = [len(m) - 1 for m in pair_cka]
    var = sum(terms)
    if not math.isfinite(var) or var <= 0:
        return point, math.nan, math.nan
    df = var**2 / sum(tv**2 / d for tv, d in zip(terms, dfs, strict=True) if tv > 0)
    half = float(student_t.ppf(0.975, df)) * math.sqrt(var)
    return point, point - half, point + half


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = mnist1d(n_train=cfg.n_train, n_test=cfg.n_examples, seed=ctx.seed_for("data")).to(ctx.device)
    out: dict[str, Any] = {
        "widths": list(cfg.widths),
        "same_layer_cka": [],
        "pair_cka": [],
        "cka_id": [],
        "test_acc": [],
    }
    for c in cfg.widths:
        feats, accs = [], []
        for k in range(cfg.nets):
            torch.manual_seed(ctx.seed_for("init", c, k))
            net = SmallCNN(1, ds.n_classes, channels=(c,) * 4, hidden=2 * c).to(ctx.device)
            hist = ctx.train(f"c{c}-net{k}", net, ds.train(), cfg.train_config(), eval_sets={"test": ds.test()})
            accs.append(hist.last("test_acc"))
            feats.append(features(net, ds.x_test, list(LAYERS)))
        pairs = list(itertools.permutations(range(cfg.nets), 2))
        cka = list(cka_matrices(feats, pairs).values())
        # mean over layers of each ordered pair's same-layer CKA (NaN: a dead layer, skipped)
        per_pair = {p: float(m.diagonal().nanmean()) for p, m in zip(pairs, cka, strict=True)}
        out["pair_cka"].append([[per_pair.get((a, b)) for b in range(cfg.nets)] for a in range(cfg.nets)])
        out["same_layer_cka"].append(float(torch.tensor(list(per_pair.values())).nanmean()))
        out["cka_id"].append(identification(cka))
        out["test_acc"].append(accs)
        if c == max(cfg.widths):
            # rho_bar is symmetric, so one matrix per unordered pair serves both orders (rows and columns)
            cca = cca_matrices(feats, [(a, b) for a, b in pairs if a < b])
            out["cca_id"] = identification([cca[(a, b)] if a < b else cca[(b, a)].T for a, b in pairs])
            out["cka_widest"] = cka[0].tolist()
            out["cca_widest"] = cca[(0, 1)].tolist()
    return out


def signature(result: Result) -> Verdict:
    d = result.data
    cka_id = d["cka_id"][d["widths"].index(max(d["widths"]))]
    gap = cka_id - d["cca_id"] if d.get("cca_id") is not None else None
    trend, lo, hi = width_slope_ci(d["widths"], d["pair_cka"])
    order = sorted(range(len(d["widths"])), key=lambda i: d["widths"][i])
    gain = d["same_layer_cka"][order[-1]] - d["same_layer_cka"][order[0]]
    checks = [
        check("cka_identification", cka_id, ">=", MIN_CKA_ID, "layer i of net A is most CKA-similar to layer i of B"),
        check(
            "control_cca_identification_gap",
            gap,
            ">=",
            MIN_GAP,
            "CKA's identification rate minus mean CCA's on the same nets (CCA must fail)",
        ),
        check(
            "width_trend_ci_low",
            lo if math.isfinite(lo) else None,
            ">",
            0.0,
            f"same-layer CKA vs log2(width): slope {trend:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] (jackknife over nets)",
        ),
        check("width_gain", gain, ">=", MIN_GAIN, "same-layer CKA: widest minus narrowest width"),
    ]
    summary = (
        f"at width {max(d['widths'])}: CKA identifies {fmt(cka_id, '.0%')} of layers, mean CCA "
        f"{fmt(d.get('cca_id'), '.0%')}; same-layer CKA across seeds "
        + ", ".join(f"{w}: {v:.3f}" for w, v in zip(d["widths"], d["same_layer_cka"], strict=True))
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, axes = new_figure(ncols=3, width=4.2, height=3.8)
    for ax, key, title in (
        (axes[0], "cka_widest", "linear CKA"),
        (axes[1], "cca_widest", "mean CCA"),
    ):
        im = ax.imshow(d[key], vmin=0, vmax=1, cmap="magma")
        ax.set_xticks(range(len(LAYERS)), LAYERS, rotation=45, fontsize=7)
        ax.set_yticks(range(len(LAYERS)), LAYERS, fontsize=7)
        ax.set_xlabel("net B (other seed)")
        ax.set_ylabel("net A")
        ax.set_title(f"{title}, width {max(d['widths'])}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[2]
    widths, means = d["widths"], d["same_layer_cka"]
    for w, m in zip(widths, d["pair_cka"], strict=True):
        vals = [v for row in m for v in row if v is not None and math.isfinite(v)]
        ax.plot([w] * len(vals), vals, ".", color="tab:blue", alpha=0.25, ms=3)
    err = [math.sqrt(v) if math.isfinite(v := jackknife_var(m)) else 0.0 for m in d["pair_cka"]]
    ax.errorbar(widths, means, yerr=[1.96 * e for e in err], fmt="o", capsize=3, label="same-layer CKA (+-1.96 SE)")
    trend, lo, hi = width_slope_ci(widths, d["pair_cka"])
    x = [math.log2(w) for w in widths]
    icpt = sum(means) / len(means) - trend * sum(x) / len(x)
    ax.plot(widths, [icpt + trend * a for a in x], "-", color="tab:blue", label=f"fit: {trend:.3f} per doubling")
    ax.plot(widths, d["cka_id"], "s--", color="tab:orange", label="CKA identification rate")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("channels per conv layer")
    ax.legend(fontsize=7)
    ax.set_title(f"vs width: slope 95% CI [{lo:.3f}, {hi:.3f}]", fontsize=9)
    return [save(fig, out_dir, "similarity")]
