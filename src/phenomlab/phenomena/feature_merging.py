"""Merging functionally equivalent neurons: Iterative Feature Merging prunes a trained MLP without data.

Chen, Zhou & Yan 2023, "Going beyond neural network feature similarity: the network feature complexity and its
interpretation using category theory" (arXiv 2310.06756).

Claim. Trained networks learn *functionally equivalent* features (units equal up to a transformation; for ReLU a
positive rescaling), and Iterative Feature Merging (IFM, :func:`phenomlab.probes.merging.merge_equivalent_units`)
merges them layer by layer without data: units whose normalised incoming vectors ``[w_i, b_i] / ||[w_i, b_i]||``
are closer than ``beta`` are merged by adding the rescaled outgoing weights of one to the other. The paper prunes
nets this way "without affecting the performance". The issue's test: >= 30% of hidden units removed with < 1 pt
test-accuracy loss, where magnitude pruning of the same number of units loses clearly more.

Protocol (one seed = one run). digits (or mnist1d), ReLU MLP ``depth`` x ``width``, SGD. The *main* net starts
from PyTorch's default init with every weight and bias scaled by ``init_scale`` (0.1): in this small-init regime
the hidden units condense onto a few directions during training (Maennel, Bousquet & Gelly 2018, arXiv
1803.08367), so functionally equivalent units exist to be merged; at the default scale (the *reference* net,
same training, reported only) IFM finds almost none at the same ``beta`` (docs/phenomena/feature-merging.md). After
training: IFM at ``beta``; magnitude pruning (:func:`phenomlab.probes.merging.prune_units_by_magnitude`, smallest
``||v_i|| ||W_next[:, i]||``, no compensation) of exactly the per-layer counts IFM removed; IFM at ``beta`` on the
main net's *initial* weights. A ``beta`` sweep of all three is recorded for the figure.

Checks (threshold; quick preset, mean +- seed std over seeds 0-2 in brackets):
- ``base_test_acc`` >= 0.95: the main net is trained [0.973 +- 0.012];
- ``ifm_removed_fraction`` >= 0.30 (issue): IFM at ``beta`` removes at least 30% of the hidden units
  [0.411 +- 0.029];
- ``ifm_test_loss_pts`` < 1.0 (issue): with a test-accuracy loss under 1 pt (449 test points: 1 point = 0.22 pt)
  [0.97 +- 0.72];
- ``control_magnitude_excess_loss_pts`` >= 1.0: magnitude pruning of the same per-layer counts loses at least 1 pt
  more than IFM ("clearly more", the issue's control; paired on the same test points) [-0.59 +- 0.34; at no beta of
  the sweep on any seed 0-4 does magnitude pruning lose 1 pt more, and from beta 0.6 on it loses less on every seed];
- ``control_init_removed_fraction`` <= 0.05: at the same ``beta`` IFM merges almost nothing on the untrained net,
  so the equivalent units are learned, not produced by a loose threshold [0.000 +- 0.000].

Outcome at quick scale: NOT REPRODUCED (0 of 5 seeds). IFM does remove ~40% of the units of the small-init net
for about 1 pt, but magnitude pruning of the same units costs less (0.37 +- 0.46 pt), so the data-free merge is
not better than the plain baseline; on the default-init reference net IFM finds no equivalent units at ``beta``.

Background, measurements and caveats: docs/phenomena/feature-merging.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import Dataset, digits, mnist1d
from ..errors import ConfigError
from ..models import MLP
from ..probes.merging import (
    affine_relu_forward,
    merge_equivalent_units,
    mlp_affine_layers,
    prune_units_by_magnitude,
)
from ._stats import fmt
from .config import PhenomenonConfig, data, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "feature-merging"

#: the main net must be trained for pruning losses to mean anything (digits MLPs reach 0.97-0.98)
BASE_ACC_MIN = 0.95
#: the issue: at least 30% of the hidden units removed ...
REMOVED_MIN = 0.30
#: ... with a test-accuracy loss under 1 pt
LOSS_MAX_PTS = 1.0
#: "magnitude pruning loses clearly more": at least 1 pt more on the same test points (4.5 digits test points)
EXCESS_MIN_PTS = 1.0
#: on the untrained net IFM at the same beta must merge almost nothing (random directions in 65 dims are far apart)
INIT_REMOVED_MAX = 0.05


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    data(("digits", "mnist1d"), n_train=4000, n_test=4000),
    training(optimizer="sgd", lr=0.5, steps=3000, batch_size=128, eval_every=1000),
):
    width: int = param(256, "MLP hidden width (every hidden layer)", gt=1)
    depth: int = param(2, "MLP hidden layers", ge=1)
    init_scale: float = param(0.1, "main net: every default-init weight and bias multiplied by this", gt=0.0)
    reference_init_scale: float = param(1.0, "reference net (reported only): the same, at this scale", gt=0.0)
    beta: float = param(0.5, "IFM threshold on the distance of normalised incoming vectors", gt=0.0, le=2.0)
    beta_grid: tuple[float, ...] = param(
        (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), "betas of the sweep drawn in the figure", gt=0.0, le=2.0
    )

    def validate(self) -> None:
        super().validate()
        g = list(self.beta_grid)
        if len(g) < 2 or g != sorted(set(g)):
            raise ConfigError(f"beta_grid must be >= 2 increasing betas, got {g}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(width=32, steps=60, eval_every=30, beta_grid=(0.3, 0.6)),
    "quick": {},
    # the paper merges much larger nets (VGG/ResNet on CIFAR); here: wider, deeper, longer, on mnist1d
    "paper": {"dataset": "mnist1d", "width": 1024, "depth": 3, "steps": 20000, "n_train": 8000},
}


def _dataset(cfg: Config, seed: int) -> Dataset:
    if cfg.dataset == "mnist1d":
        return mnist1d(cfg.n_train, cfg.n_test, seed=seed)
    return digits(seed=seed)


def _acc(layers: list[tuple[Tensor, Tensor]], test: tuple[Tensor, Tensor]) -> float:
    x, y = test
    with torch.no_grad():
        return float((affine_relu_forward(layers, x).argmax(-1) == y).float().mean())


def _width(layers: list[tuple[Tensor, Tensor]]) -> list[int]:
    return [int(w.shape[0]) for w, _ in layers[:-1]]


def _prune_pair(layers: list[tuple[Tensor, Tensor]], beta: float, test: tuple[Tensor, Tensor]) -> dict[str, Any]:
    """IFM at ``beta`` and magnitude pruning of the same per-layer counts: units removed and test accuracies."""
    merged = merge_equivalent_units(layers, beta)
    removed = [a - b for a, b in zip(_width(layers), _width(merged), strict=True)]
    pruned = prune_units_by_magnitude(layers, removed)
    return {"removed": removed, "ifm_acc": _acc(merged, test), "magnitude_acc": _acc(pruned, test)}


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _dataset(cfg, ctx.seed_for("data")).to(ctx.device)
    test = ds.test()
    test = (test[0].cpu(), test[1].cpu())
    out: dict[str, Any] = {"beta": cfg.beta, "beta_grid": list(cfg.beta_grid), "n_units": cfg.width * cfg.depth}
    for name, scale in (("main", cfg.init_scale), ("reference", cfg.reference_init_scale)):
        torch.manual_seed(ctx.seed_for("init", name))
        net = MLP(ds.input_dim, ds.n_classes, cfg.width, cfg.depth).to(ctx.device)
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(scale)
        init_layers = [(w.cpu(), b.cpu()) for w, b in mlp_affine_layers(net)]
        ctx.train(name, net, ds.train(), cfg.train_config())
        layers = [(w.cpu(), b.cpu()) for w, b in mlp_affine_layers(net)]
        out[name] = {
            "base_acc": _acc(layers, test),
            "at_beta": _prune_pair(layers, cfg.beta, test),
            "init_removed": sum(_width(init_layers)) - sum(_width(merge_equivalent_units(init_layers, cfg.beta))),
            "sweep": [_prune_pair(layers, b, test) for b in cfg.beta_grid],
            "init_sweep_removed": [
                sum(_width(init_layers)) - sum(_width(merge_equivalent_units(init_layers, b))) for b in cfg.beta_grid
            ],
        }
    return out


def numbers(d: dict[str, Any]) -> dict[str, Any]:
    """The deciding numbers of a result's data (also what the results table reports)."""
    n_units = d["n_units"]
    res: dict[str, Any] = {}
    for name in ("main", "reference"):
        m = d[name]
        at = m["at_beta"]
        ifm_loss = 100.0 * (m["base_acc"] - at["ifm_acc"])
        mag_loss = 100.0 * (m["base_acc"] - at["magnitude_acc"])
        res[name] = {
            "base_test_acc": m["base_acc"],
            "ifm_removed_fraction": sum(at["removed"]) / n_units,
            "ifm_test_loss_pts": ifm_loss,
            "magnitude_test_loss_pts": mag_loss,
            "magnitude_excess_loss_pts": mag_loss - ifm_loss,
            "init_removed_fraction": m["init_removed"] / n_units,
        }
    return res


def signature(result: Result) -> Verdict:
    n = numbers(result.data)
    m, r = n["main"], n["reference"]
    beta = result.data["beta"]
    checks = [
        check("base_test_acc", m["base_test_acc"], ">=", BASE_ACC_MIN, "test accuracy of the trained main net"),
        check(
            "ifm_removed_fraction",
            m["ifm_removed_fraction"],
            ">=",
            REMOVED_MIN,
            f"fraction of hidden units IFM removes at beta={beta}",
        ),
        check(
            "ifm_test_loss_pts", m["ifm_test_loss_pts"], "<", LOSS_MAX_PTS, "test-accuracy loss (pts) of the IFM net"
        ),
        check(
            "control_magnitude_excess_loss_pts",
            m["magnitude_excess_loss_pts"],
            ">=",
            EXCESS_MIN_PTS,
            "magnitude pruning of the same per-layer counts: its loss minus IFM's (pts)",
        ),
        check(
            "control_init_removed_fraction",
            m["init_removed_fraction"],
            "<=",
            INIT_REMOVED_MAX,
            f"fraction IFM removes at beta={beta} from the untrained net",
        ),
    ]
    summary = (
        f"beta={beta}: IFM removes {m['ifm_removed_fraction']:.1%} of the hidden units with a "
        f"{m['ifm_test_loss_pts']:.2f} pt test loss; magnitude pruning of the same counts loses "
        f"{m['magnitude_test_loss_pts']:.2f} pt (excess {fmt(m['magnitude_excess_loss_pts'], '.2f')}); untrained net: "
        f"{m['init_removed_fraction']:.1%} merged. Reference net (init scale {result.config['reference_init_scale']}): "
        f"IFM removes {r['ifm_removed_fraction']:.1%} (loss {r['ifm_test_loss_pts']:.2f} pt)"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, axes = new_figure(ncols=2, width=4.5, height=3.8)
    for ax, name in zip(axes, ("main", "reference"), strict=True):
        m = d[name]
        frac = [sum(s["removed"]) / d["n_units"] for s in m["sweep"]]
        ax.plot(frac, [100 * (m["base_acc"] - s["ifm_acc"]) for s in m["sweep"]], "o-", label="IFM (merge)")
        ax.plot(
            frac, [100 * (m["base_acc"] - s["magnitude_acc"]) for s in m["sweep"]], "s--", label="magnitude (control)"
        )
        ax.axhline(LOSS_MAX_PTS, color="grey", ls=":", lw=0.8)
        ax.axvline(REMOVED_MIN, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("fraction of hidden units removed (beta sweep)")
        ax.set_ylabel("test-accuracy loss (pts)")
        scale = result.config["init_scale" if name == "main" else "reference_init_scale"]
        ax.set_title(f"{name} net (init scale {scale})")
        ax.legend(fontsize=7)
    return [save(fig, out_dir, "feature_merging")]
