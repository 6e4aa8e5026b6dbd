"""Model-wise double descent: test error peaks where the network can first interpolate noisy labels.

Belkin, Hsu, Ma, Mandal 2019, "Reconciling modern machine learning practice and the bias-variance trade-off"
(arXiv 1812.11118); Nakkiran, Kaplun, Bansal, Yang, Barak, Sutskever 2019, "Deep double descent" (arXiv 1912.02292).

With ``train_err(w)``, ``test_err(w)`` the final errors of width ``w`` averaged over its seeds: threshold ``w*`` =
the smallest ``w`` with ``train_err(w) <= INTERP_ERR`` (0.01); sweet spot ``w_0 = argmin_{w < w*} test_err(w)``;
peak ``w_p = argmax_{w > w_0} test_err(w)``. Checks:
- some width interpolates the noisy training labels: ``min_w train_err(w) <= 0.01``;
- the peak is within ``PEAK_WINDOW`` (2x) of the threshold: ``w*/2 <= w_p <= 2 w*``;
- ``test_err(w_p) - min_{w < w_p} test_err(w) >= MIN_RISE`` (0.03);
- ``test_err(w_p) - test_err(w_max) >= MIN_RISE`` (0.03; the second descent).

Background, measurements and caveats: docs/phenomena/double-descent.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, digits, mnist1d, with_label_noise
from ..errors import ConfigError
from ..train.ensemble import EnsembleState, MLPEnsemble, train_ensemble
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "double-descent"

#: "train error ~0": a width interpolates when its seed-averaged noisy-label train error is <= this
INTERP_ERR = 0.01
#: the peak must lie within this factor of the interpolation threshold
PEAK_WINDOW = 2.0
#: and stand this far (error, i.e. 3 percentage points) above the best smaller width and the largest width
MIN_RISE = 0.03


@dataclass(frozen=True)
class Config(
    PhenomenonConfig, training(optimizer="adam", lr=1e-3, steps=10000, batch_size=64, weight_decay=0.0, eval_every=1000)
):
    dataset: str = param("digits", "sklearn digits (64-dim) or mnist1d (40-dim)", choices=("digits", "mnist1d"))
    n_train: int = param(1000, "training points (0 = all 1,348 for digits; mnist1d generates this many)", ge=0)
    n_test: int = param(2000, "mnist1d test points (digits keeps its 25% split)", gt=0)
    standardize: bool = param(True, "standardise each input feature with training mean/std")
    label_noise: float = param(0.2, "fraction of training labels replaced by a different class", ge=0.0, lt=1.0)
    min_width: int = param(1, "smallest hidden width", gt=0)
    max_width: int = param(512, "largest hidden width", gt=0)
    n_widths: int = param(24, "number of distinct log-spaced widths", ge=3)
    depth: int = param(1, "hidden layers of the MLP", ge=1, le=4)
    seeds_per_width: int = param(3, "init seeds averaged per width", ge=1)
    loss: str = param("cross_entropy", "training loss", choices=("cross_entropy", "mse"))

    def validate(self) -> None:
        super().validate()
        if self.max_width <= self.min_width:
            raise ConfigError(f"max_width={self.max_width} must exceed min_width={self.min_width}")
        if self.dataset == "mnist1d" and self.n_train == 0:
            raise ConfigError("mnist1d needs n_train > 0 (it is generated)")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(n_train=300, n_widths=5, max_width=32, seeds_per_width=2, steps=200, eval_every=100),
    "quick": {},
    # Nakkiran et al. 2019: 15% label noise, Adam 1e-4-ish, thousands of epochs, no data augmentation;
    # here on MNIST-1D (4,000 train), more widths and seeds, ~1,000 epochs
    "paper": {
        "dataset": "mnist1d",
        "n_train": 4000,
        "label_noise": 0.15,
        "max_width": 1024,
        "n_widths": 40,
        "seeds_per_width": 5,
        "batch_size": 128,
        "steps": 40000,
        "eval_every": 2000,
    },
}


def widths_of(cfg: Config) -> list[int]:
    """``n_widths`` distinct integers, log-spaced from ``min_width`` to ``max_width``.

    Rounding merges neighbouring small widths (1, 1.3, 1.6 -> 1, 1, 2), so the grid is refined until
    ``n_widths`` distinct values remain (or every integer in the range is used).
    """
    lo, hi = math.log(cfg.min_width), math.log(cfg.max_width)
    target = min(cfg.n_widths, cfg.max_width - cfg.min_width + 1)
    m = cfg.n_widths
    while True:
        ws = sorted({round(math.exp(lo + (hi - lo) * i / (m - 1))) for i in range(m)})
        if len(ws) >= target:
            return ws
        m += 1


def load_data(cfg: Config, ctx: RunContext) -> Dataset:
    seed = ctx.seed_for("data")
    if cfg.dataset == "digits":
        ds = digits(seed=seed)
        if cfg.n_train:
            ds = ds.subset_train(min(cfg.n_train, ds.n_train), seed=seed)
    else:
        ds = mnist1d(n_train=cfg.n_train, n_test=cfg.n_test, seed=seed, standardize=False)
    if cfg.standardize:
        # per feature; constant border pixels of digits get std floored so they stay ~0, not blown up
        mu = ds.x_train.mean(0)
        sd = ds.x_train.std(0).clamp_min(0.1)
        ds = replace(ds, x_train=(ds.x_train - mu) / sd, x_test=(ds.x_test - mu) / sd)
    return with_label_noise(ds, cfg.label_noise, seed=ctx.seed_for("noise"))


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = load_data(cfg, ctx).to(ctx.device)
    widths = widths_of(cfg)
    k = cfg.seeds_per_width
    members = [w for w in widths for _ in range(k)]
    seeds = [ctx.seed_for("init", w, s) for w in widths for s in range(k)]
    ens = MLPEnsemble(ds.x_train[0].numel(), ds.n_classes, members, depth=cfg.depth, seeds=seeds).to(ctx.device)
    tcfg = cfg.train_config(loss=cfg.loss)
    noisy = ds.meta["noisy_mask"].to(ctx.device)
    x_tr, y_tr = ds.train()

    def memorised(s: EnsembleState) -> dict[str, list[float]]:
        # fraction of the flipped training points predicted with their (wrong) training label
        with torch.no_grad():
            pred = s.ensemble(x_tr[noisy]).argmax(2)
        return {"noisy_fit": (pred == y_tr[noisy]).float().mean(1).tolist()}

    def logger(step: int, metrics: dict[str, float]) -> None:
        # the store gets the member-averaged curves; per-width results go in the result data
        means: dict[str, list[float]] = {}
        for key, v in metrics.items():
            means.setdefault(key.rsplit("/", 1)[0], []).append(v)
        ctx.log(step, {f"mean_{k}": sum(v) / len(v) for k, v in means.items()}, prefix="ensemble")

    hist = train_ensemble(
        ens,
        (x_tr, y_tr),
        tcfg,
        eval_sets={"test": ds.test()},
        callbacks=[memorised],
        logger=logger,
        checkpoint=ctx.checkpoint_path("ensemble"),
        seed=ctx.seed_for("batches"),
        on_nan="continue",
        progress="double-descent" if ctx.progress else False,
    )

    def per_width(name: str) -> list[list[float]]:
        v = hist.last(name)
        return [[v[i * k + j] for j in range(k)] for i in range(len(widths))]

    def mean_ok(rows: list[list[float]]) -> list[float]:
        out = []
        for row in rows:
            vals = [v for v in row if math.isfinite(v)]
            out.append(sum(vals) / len(vals) if vals else float("nan"))
        return out

    train_all, test_all = per_width("train_err"), per_width("test_err")
    # a diverged member (none expected with Adam 1e-3) is dropped from its width's average
    for m in hist.diverged:
        train_all[m // k][m % k] = test_all[m // k][m % k] = float("nan")
    for w, row_tr, row_te in zip(widths, mean_ok(train_all), mean_ok(test_all), strict=True):
        ctx.log(w, {"train_err": row_tr, "test_err": row_te}, prefix="width")
    return {
        "widths": widths,
        "params": [sum(p.numel() for p in ens.member(i * k).parameters()) for i in range(len(widths))],
        "train_err": mean_ok(train_all),
        "test_err": mean_ok(test_all),
        "train_err_seeds": train_all,
        "test_err_seeds": test_all,
        "test_loss": mean_ok(per_width("test_loss")),
        "noisy_fit": mean_ok(per_width("noisy_fit")),
        "n_train": int(ds.n_train),
        "interp_err": INTERP_ERR,
        "diverged": {str(m): s for m, s in hist.diverged.items()},
        "train_seconds": hist.wall_time,
    }


def analyse(d: dict[str, Any]) -> dict[str, Any]:
    """Threshold, sweet spot and peak (see the module docstring) from the width curves in ``d``."""
    widths, tr, te = d["widths"], d["train_err"], d["test_err"]
    eps = d.get("interp_err", INTERP_ERR)
    thr_i = next((i for i, e in enumerate(tr) if math.isfinite(e) and e <= eps), None)
    out: dict[str, Any] = {
        "threshold": None,
        "sweet_spot": None,
        "peak": None,
        "rise_over_smaller": None,
        "rise_over_largest": None,
        "peak_ratio": None,
    }
    if thr_i is None:
        return out
    out["threshold"] = widths[thr_i]
    before = [i for i in range(thr_i) if math.isfinite(te[i])]
    i0 = min(before, key=lambda i: te[i]) if before else 0
    after = [i for i in range(i0 + 1, len(widths)) if math.isfinite(te[i])]
    if not after:
        return out
    ip = max(after, key=lambda i: te[i])
    out["sweet_spot"], out["peak"] = widths[i0], widths[ip]
    out["peak_ratio"] = widths[ip] / widths[thr_i]
    smaller = [te[i] for i in range(ip) if math.isfinite(te[i])]
    out["rise_over_smaller"] = te[ip] - min(smaller) if smaller else None
    out["rise_over_largest"] = te[ip] - te[-1] if ip < len(widths) - 1 and math.isfinite(te[-1]) else None
    return out


def signature(result: Result) -> Verdict:
    d = result.data
    a = analyse(d)
    checks = [
        check(
            "min_train_err",
            min((e for e in d["train_err"] if math.isfinite(e)), default=None),
            "<=",
            INTERP_ERR,
            f"some width interpolates the noisy training labels (train error <= {INTERP_ERR})",
        ),
        check(
            "peak_width/threshold",
            a["peak_ratio"],
            ">=",
            1 / PEAK_WINDOW,
            "the test-error peak is at least half the interpolation threshold",
        ),
        check(
            "threshold/peak_width",
            None if a["peak_ratio"] is None else 1 / a["peak_ratio"],
            ">=",
            1 / PEAK_WINDOW,
            "the test-error peak is at most twice the interpolation threshold",
        ),
        check(
            "peak_minus_best_smaller",
            a["rise_over_smaller"],
            ">=",
            MIN_RISE,
            "peak test error >= best smaller-width test error + 3 points",
        ),
        check(
            "peak_minus_largest",
            a["rise_over_largest"],
            ">=",
            MIN_RISE,
            "peak test error >= largest-width test error + 3 points (second descent)",
        ),
    ]
    te = dict(zip(d["widths"], d["test_err"], strict=True))
    if a["threshold"] is None:
        summary = f"no width reached train error <= {INTERP_ERR} (min {min(d['train_err']):.3f})"
    else:
        summary = (
            f"interpolation threshold w*={a['threshold']} (train err <= {INTERP_ERR}); peak at w={a['peak']} "
            f"(test err {_pct(te.get(a['peak']))}), best smaller {_pct(_min_before(d, a['peak']))}, "
            f"largest w={d['widths'][-1]} {_pct(d['test_err'][-1])}"
        )
    return Verdict(checks, summary)


def _min_before(d: dict[str, Any], w: int | None) -> float | None:
    vals = [e for x, e in zip(d["widths"], d["test_err"], strict=True) if w is not None and x < w]
    return min(vals) if vals else None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d, c = result.data, result.config
    a = analyse(d)
    fig, ax = new_figure(width=6.5, height=4.2)
    w = d["widths"]
    for i, x in enumerate(w):
        ax.scatter(
            [x] * len(d["test_err_seeds"][i]),
            [100 * v for v in d["test_err_seeds"][i]],
            s=6,
            color="C1",
            alpha=0.35,
            lw=0,
        )
        ax.scatter(
            [x] * len(d["train_err_seeds"][i]),
            [100 * v for v in d["train_err_seeds"][i]],
            s=6,
            color="C0",
            alpha=0.35,
            lw=0,
        )
    ax.plot(w, [100 * v for v in d["train_err"]], "o-", ms=3, color="C0", label="train error (noisy labels)")
    ax.plot(w, [100 * v for v in d["test_err"]], "o-", ms=3, color="C1", label="test error (clean labels)")
    ax.plot(w, [100 * v for v in d["noisy_fit"]], ":", color="C2", label="flipped train labels fitted")
    if a["threshold"] is not None:
        ax.axvline(a["threshold"], color="grey", ls="--", lw=1)
        ax.text(a["threshold"], 55, f" w*={a['threshold']}", va="center", fontsize=8, color="grey")
        ax.axvspan(
            a["threshold"] / PEAK_WINDOW,
            a["threshold"] * PEAK_WINDOW,
            color="grey",
            alpha=0.08,
            lw=0,
            label=f"w*/{PEAK_WINDOW:g} .. {PEAK_WINDOW:g}w* (train err <= {INTERP_ERR} at w*)",
        )
    if a["peak"] is not None:
        pe = d["test_err"][w.index(a["peak"])]
        ax.plot([a["peak"]], [100 * pe], marker="v", ms=9, color="C3", ls="none", label=f"peak w={a['peak']}")
    ax.set_xscale("log")
    ax.set_xlabel("hidden width")
    ax.set_ylabel("error (%)")
    ax.set_ylim(-2, 100)
    ax.set_title(
        f"double descent: {c['dataset']}, {int(100 * c['label_noise'])}% label noise, "
        f"{c['steps']} {c['optimizer']} steps"
    )
    ax.legend(fontsize=8, loc="upper right")
    return [save(fig, out_dir, "double_descent")]
