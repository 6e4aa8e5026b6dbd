"""Effective depth: SGD-trained deep nets become NCC-separable at an intermediate layer, deeper for harder tasks.

Galanti, Galanti, Ben-Shaul 2022, "On the implicit bias towards minimal depth of deep neural networks"
(arXiv 2202.09028).

For layer ``i`` (0 = the input, ``1..L`` the hidden activations, ``L = depth``), ``NCC_i`` = train accuracy of the
nearest-class-centre rule on its features (labels as trained); ``L* = min{i >= 1: NCC_i >= NCC_SEPARABLE}`` (0.99).
The claim: ``L*`` grows with task difficulty (here the label-noise fraction) and does NOT grow with the total
depth ``L`` once ``L`` exceeds it. Each condition trains ``inits`` nets (the same init seeds in every condition)
and the deciding numbers are the means of ``L*`` over them. Checks:
- every net fits its training labels: min train accuracy >= ``FIT_ACC`` (0.99);
- NCC rises with depth: min over nets of ``Spearman(i, NCC_i)`` (i = 0..L) >= ``RISE_SPEARMAN`` (0.8);
- on clean labels the top layers are redundant: mean ``L*(noise 0) < L``;
- ``Spearman(noise, mean L*)`` over ``noise_levels`` >= ``NOISE_SPEARMAN`` (0.9);
- ``mean L*(max noise) - mean L*(0) >= NOISE_GAIN`` (2 layers);
- controls: the mean ``L*`` varies by <= ``DEPTH_RANGE`` (1 layer) over ``control_depths`` at noise 0 and over
  ``noisy_control_depths`` (depths above the noisy task's ``L*``) at ``noisy_control_noise``.

Background, measurements and caveats: docs/phenomena/effective-depth.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, mnist1d, with_label_noise
from ..errors import ConfigError
from ..models import MLP
from ..train.ensemble import MLPEnsemble, train_ensemble
from ._stats import fmt, spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "effective-depth"

NCC_SEPARABLE = 0.99  # NCC train accuracy that counts as separable (defines L*)
FIT_ACC = 0.99  # the nets must fit their training labels: the premise of the claim
RISE_SPEARMAN = 0.8  # a-priori bar for "NCC accuracy rises with depth"
# the issue-11 bars, fixed before any run. Quick preset, seeds 0-2, mean (seed std): Spearman(noise, mean L*)
# 0.12 (0.08); L*(0.5) - L*(0) 0.67 (0.0); clean control range 1.17 (0.24, 2 seeds); noisy control range 2.67 (1 seed:
# the others had a net that never reached 0.99). Details: docs/phenomena/effective-depth.md
NOISE_SPEARMAN = 0.9  # Spearman(noise, mean L*)
NOISE_GAIN = 2.0  # mean L*(max noise) - mean L*(0), in layers
DEPTH_RANGE = 1.0  # control: max - min of mean L* over the total depths, in layers


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(lr=0.05, steps=3000, batch_size=128, weight_decay=5e-4, momentum=0.9, eval_every=3000, schedule="cosine"),
):
    n_train: int = param(1000, "mnist1d training points", gt=0)
    n_test: int = param(500, "mnist1d test points (reported, not used by the signature)", gt=0)
    depth: int = param(10, "hidden layers L of the MLPs of the noise sweep", ge=2)
    width: int = param(128, "hidden width", gt=0)
    activation: str = param("relu", "hidden activation", choices=("relu", "tanh", "gelu"))
    noise_levels: tuple[float, ...] = param(
        (0.0, 0.1, 0.2, 0.3, 0.5), "label-noise fractions of the noise sweep (must include 0)", ge=0.0, lt=1.0
    )
    inits: int = param(3, "nets (init seeds) per condition; L* is averaged over them", ge=1)
    control_depths: tuple[int, ...] = param((6, 8, 10, 12), "total depths L of the clean-label control sweep", ge=2)
    noisy_control_noise: float = param(0.2, "label noise of the second depth-sweep control", gt=0.0, lt=1.0)
    noisy_control_depths: tuple[int, ...] = param(
        (10, 12), "total depths of the noisy control (above the noisy task's L*, so no ceiling)", ge=2
    )

    def validate(self) -> None:
        super().validate()
        if self.eval_every > self.steps:
            raise ConfigError(f"eval_every={self.eval_every} must be <= steps={self.steps}")
        if len(set(self.noise_levels)) < 3 or 0.0 not in self.noise_levels:
            raise ConfigError(f"noise_levels needs >= 3 distinct values including 0, got {self.noise_levels}")
        for name in ("control_depths", "noisy_control_depths"):
            if len(set(getattr(self, name))) < 2:
                raise ConfigError(f"{name} needs >= 2 distinct depths, got {getattr(self, name)}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        n_train=200,
        n_test=100,
        depth=3,
        width=32,
        steps=200,
        eval_every=200,
        noise_levels=(0.0, 0.2, 0.5),
        inits=1,
        control_depths=(2, 3),
        noisy_control_depths=(2, 3),
    ),
    "quick": {},
    # closer to the paper's MLP runs: more data, wider/deeper nets, longer SGD training
    "paper": {
        "n_train": 4000,
        "n_test": 1000,
        "depth": 16,
        "width": 512,
        "steps": 20000,
        "eval_every": 5000,
        "inits": 5,
        "control_depths": (8, 12, 16, 20),
        "noisy_control_depths": (12, 16, 20),
    },
}


def _members(cfg: Config, depth: int, seeds: list[int]) -> list[MLP]:
    out = []
    for s in seeds:
        torch.manual_seed(s)
        # He init: with PyTorch's default (variance 1/(3 fan_in)) a 10-layer ReLU net starts with
        # vanishing signals and SGD does not leave the plateau in the quick budget
        out.append(MLP(40, 10, width=cfg.width, depth=depth, activation_name=cfg.activation, init="he"))
    return out


def layer_ncc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, depth: int) -> list[float]:
    """NCC train accuracy of the input (index 0) and of each hidden layer's features ``act_1..act_L``."""
    from ..probes.activations import features
    from ..probes.collapse import ncc_accuracy

    feats = features(model, x, [f"act{i}" for i in range(1, depth + 1)])
    return [ncc_accuracy(x.flatten(1), y)] + [ncc_accuracy(feats[f"act{i}"], y) for i in range(1, depth + 1)]


def effective_depth(ncc: list[float], threshold: float = NCC_SEPARABLE) -> int | None:
    """``L* = min{i >= 1 : NCC_i >= threshold}`` (``ncc[0]`` is the input), or None."""
    return next((i for i, a in enumerate(ncc) if i >= 1 and a >= threshold), None)


def mean_or_none(values: list[int | None]) -> float | None:
    """Mean of the nets' ``L*``; None when any net never became separable (its ``L*`` is undefined)."""
    return None if not values or any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]


def condition(ncc: list[list[float]], train_acc: list[float], test_acc: list[float]) -> dict[str, Any]:
    """One (depth, noise) condition's record from its nets' NCC curves and accuracies."""
    ls = [effective_depth(c) for c in ncc]
    return {
        "ncc": ncc,
        "L_star": ls,
        "L_star_mean": mean_or_none(ls),
        "spearman": [spearman(range(len(c)), c) for c in ncc],
        "train_acc": train_acc,
        "test_acc": test_acc,
    }


def _train(cfg: Config, ctx: RunContext, name: str, ds: Dataset, depth: int) -> dict[str, Any]:
    x, y = ds.train()
    seeds = [ctx.seed_for("init", i) for i in range(cfg.inits)]  # the same inits in every condition
    ens = MLPEnsemble.from_models(_members(cfg, depth, seeds)).to(ctx.device)
    hist = train_ensemble(
        ens,
        (x, y),
        cfg.train_config(optimizer="sgd"),
        eval_sets={"test": ds.test()},
        checkpoint=ctx.checkpoint_path(name),
        seed=ctx.seed_for("batches"),  # the same minibatch order in every condition
        progress=name if ctx.progress else False,
    )
    ncc = [layer_ncc(ens.member(m), x, y, depth) for m in range(cfg.inits)]
    return condition(ncc, hist.last("train_acc"), hist.last("test_acc"))


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    base = mnist1d(n_train=cfg.n_train, n_test=cfg.n_test, seed=ctx.seed_for("data")).to(ctx.device)

    def noisy(p: float) -> Dataset:
        # one noise seed: the points corrupted at a lower level are a subset of those at a higher one
        return base if p == 0.0 else with_label_noise(base, p, seed=ctx.seed_for("noise")).to(ctx.device)

    done: dict[tuple[int, float], dict[str, Any]] = {}

    def cond(L: int, p: float) -> dict[str, Any]:
        if (L, p) not in done:  # a condition shared by two sweeps is trained once
            done[(L, p)] = _train(cfg, ctx, f"noise{p:g}_depth{L}", noisy(p), L)
        return done[(L, p)]

    noises = sorted(set(cfg.noise_levels))
    return {
        "depth": cfg.depth,
        "inits": cfg.inits,
        "noise_sweep": [{"noise": p, **cond(cfg.depth, p)} for p in noises],
        "controls": [
            {"noise": p, "sweep": [{"depth": L, **cond(L, p)} for L in sorted(set(depths))]}
            for p, depths in ((0.0, cfg.control_depths), (cfg.noisy_control_noise, cfg.noisy_control_depths))
        ],
    }


def signature(result: Result) -> Verdict:
    d = result.data
    L = d["depth"]
    sweep, controls = d["noise_sweep"], d["controls"]
    noises = [r["noise"] for r in sweep]
    means = [r["L_star_mean"] for r in sweep]
    clean = next(r["L_star_mean"] for r in sweep if r["noise"] == 0.0)
    hardest = sweep[-1]["L_star_mean"]
    rho = spearman(noises, means) if all(m is not None for m in means) else None
    gain = hardest - clean if (hardest is not None and clean is not None) else None
    rows = sweep + [r for c in controls for r in c["sweep"]]
    min_fit = min(a for r in rows for a in r["train_acc"])
    rises = [s for r in rows for s in r["spearman"]]
    min_rise = None if any(s is None for s in rises) else min(rises)
    top = sweep[-1]["noise"]
    checks = [
        check("min_train_acc", min_fit, ">=", FIT_ACC, "every net (all sweeps) fits its training labels"),
        check(
            "min_spearman(layer, NCC)",
            min_rise,
            ">=",
            RISE_SPEARMAN,
            "in every net NCC train accuracy rises with depth (rank correlation over layers 0..L)",
        ),
        check(
            "L*(noise 0)",
            clean,
            "<",
            L,
            f"clean labels: mean L* below the last layer (L={L}): the top layers are redundant",
        ),
        check(
            "spearman(noise, mean L*)",
            rho,
            ">=",
            NOISE_SPEARMAN,
            f"mean L* grows monotonically with label noise over {noises}",
        ),
        check(
            f"L*(noise {top:g}) - L*(noise 0)",
            gain,
            ">=",
            NOISE_GAIN,
            f"the hardest task needs at least {NOISE_GAIN:g} more layers than the clean one",
        ),
    ]
    for c in controls:
        cmeans = [r["L_star_mean"] for r in c["sweep"]]
        spread = max(cmeans) - min(cmeans) if all(m is not None for m in cmeans) else None
        checks.append(
            check(
                f"control_depth_L*_range(noise {c['noise']:g})",
                spread,
                "<=",
                DEPTH_RANGE,
                f"control: at noise {c['noise']:g} mean L* varies by <= {DEPTH_RANGE:g} layer over total depths "
                f"{[r['depth'] for r in c['sweep']]} (it must not grow with L)",
            )
        )
    summary = (
        f"L={L}, mean L* over {d['inits']} inits by label noise: "
        + ", ".join(f"{p:g}: {fmt(m, '.2f')}" for p, m in zip(noises, means, strict=True))
        + "; controls by total depth: "
        + "; ".join(
            f"noise {c['noise']:g}: " + ", ".join(f"L={r['depth']}: {fmt(r['L_star_mean'], '.2f')}" for r in c["sweep"])
            for c in controls
        )
    )
    never = [r for r in rows if r["L_star_mean"] is None]
    if never:
        summary += f"; {len(never)} condition(s) with a net whose NCC never reached {NCC_SEPARABLE}"
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, (ax, ax2, ax3) = new_figure(ncols=3, width=4.2, height=3.8)
    layers = list(range(d["depth"] + 1))
    for i, r in enumerate(d["noise_sweep"]):
        mean = [sum(c[j] for c in r["ncc"]) / len(r["ncc"]) for j in layers]
        ax.plot(layers, mean, "o-", ms=3, color=f"C{i}", label=f"noise {r['noise']:g}")
    ax.axhline(NCC_SEPARABLE, color="grey", ls=":", lw=0.8)
    ax.set_xticks(layers)
    ax.set_xticklabels(["in"] + [str(i) for i in layers[1:]])
    ax.set_xlabel("layer (0 = input)")
    ax.set_ylabel("NCC train accuracy (mean over inits)")
    ax.set_ylim(0, 1.03)
    ax.set_title(f"NCC by layer, L={d['depth']}")
    ax.legend(fontsize=7, loc="lower right")
    ylabel = f"L* (first layer with NCC >= {NCC_SEPARABLE})"
    series = [(ax2, d["noise_sweep"], "noise", "C3", "mean L*")] + [
        (ax3, c["sweep"], "depth", f"C{i}", f"noise {c['noise']:g}") for i, c in enumerate(d["controls"])
    ]
    for a, rows, key, color, label in series:
        for r in rows:
            pts = [v for v in r["L_star"] if v is not None]
            a.scatter([r[key]] * len(pts), pts, color=color, s=12, alpha=0.4)
        ok = [r for r in rows if r["L_star_mean"] is not None]
        a.plot([r[key] for r in ok], [r["L_star_mean"] for r in ok], "o-", color=color, label=label)
    for a, xlabel, title in (
        (ax2, "label-noise fraction", "effective depth vs task difficulty"),
        (ax3, "total depth L", "controls: effective depth vs total depth"),
    ):
        a.set_xlabel(xlabel)
        a.set_ylabel(ylabel)
        a.set_title(title, fontsize=9)
        a.legend(fontsize=7)
    return [save(fig, out_dir, "effective_depth")]
