"""Effective depth: SGD-trained deep nets become NCC-separable at an intermediate layer.

Galanti, Galanti, Ben-Shaul 2022, "On the implicit bias towards minimal depth of deep neural networks"
(arXiv 2202.09028).

For layer ``i`` (0 = the input, ``1..L`` the hidden activations, ``L = depth``), ``NCC_i`` = train accuracy of the
nearest-class-centre rule on its features (labels as trained); ``L* = min{i >= 1: NCC_i >= NCC_SEPARABLE}`` (0.99).
Checks, for the easy (clean labels) and the hard (``label_noise``) task each:
- the net fits its training labels: train accuracy >= ``FIT_ACC`` (0.99);
- rises with depth: ``Spearman(i, NCC_i)`` over ``i = 0..L`` >= ``RISE_SPEARMAN`` (0.8);
- ``L* < L``;
and ``L*_hard - L*_easy >= 1``.

Background, measurements and caveats: docs/phenomena/effective-depth.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import mnist1d, with_label_noise
from ..errors import ConfigError
from ..models import MLP
from ..train import TrainState
from ._stats import fmt, spearman
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "effective-depth"

NCC_SEPARABLE = 0.99  # NCC train accuracy that counts as separable (defines L*)
RISE_SPEARMAN = 0.8  # a-priori bar for "rises with depth"
FIT_ACC = 0.99  # the nets must fit their training labels
TASKS = ("easy", "hard")


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(lr=0.05, steps=3000, batch_size=128, weight_decay=5e-4, momentum=0.9, eval_every=500, schedule="cosine"),
):
    n_train: int = param(1000, "mnist1d training points", gt=0)
    n_test: int = param(500, "mnist1d test points (reported, not used by the signature)", gt=0)
    depth: int = param(10, "hidden layers L of the MLP", ge=2)
    width: int = param(128, "hidden width", gt=0)
    activation: str = param("relu", "hidden activation", choices=("relu", "tanh", "gelu"))
    label_noise: float = param(0.3, "fraction of training labels corrupted in the hard task", gt=0.0, lt=1.0)

    def validate(self) -> None:
        super().validate()
        if self.eval_every > self.steps:
            raise ConfigError(f"eval_every={self.eval_every} must be <= steps={self.steps}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(n_train=200, n_test=100, depth=3, width=32, steps=200, eval_every=100),
    "quick": {},
    # closer to the paper's MLP runs: more data, wider/deeper nets, longer SGD training
    "paper": {"n_train": 4000, "n_test": 1000, "depth": 12, "width": 512, "steps": 20000, "eval_every": 1000},
}


def _model(cfg: Config, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # He init: with PyTorch's default (variance 1/(3 fan_in)) a 10-layer ReLU net starts with
    # vanishing signals and SGD does not leave the plateau in the quick budget
    return MLP(40, 10, width=cfg.width, depth=cfg.depth, activation_name=cfg.activation, init="he")


def layer_ncc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, depth: int) -> list[float]:
    """NCC train accuracy of the input (index 0) and of each hidden layer's features ``act_1..act_L``."""
    from ..probes.activations import features
    from ..probes.collapse import ncc_accuracy

    feats = features(model, x, [f"act{i}" for i in range(1, depth + 1)])
    return [ncc_accuracy(x.flatten(1), y)] + [ncc_accuracy(feats[f"act{i}"], y) for i in range(1, depth + 1)]


def effective_depth(ncc: list[float], threshold: float = NCC_SEPARABLE) -> int | None:
    """``L* = min{i >= 1 : NCC_i >= threshold}`` (``ncc[0]`` is the input), or None."""
    return next((i for i, a in enumerate(ncc) if i >= 1 and a >= threshold), None)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    base = mnist1d(n_train=cfg.n_train, n_test=cfg.n_test, seed=ctx.seed_for("data"))
    datasets = {"easy": base, "hard": with_label_noise(base, cfg.label_noise, seed=ctx.seed_for("noise"))}
    init_seed = ctx.seed_for("init")
    out: dict[str, Any] = {"depth": cfg.depth, "label_noise": cfg.label_noise}
    for task in TASKS:
        ds = datasets[task].to(ctx.device)
        x, y = ds.train()
        model = _model(cfg, init_seed).to(ctx.device)  # same init for both tasks

        def log_ncc(s: TrainState, x: torch.Tensor = x, y: torch.Tensor = y) -> dict[str, float]:
            return {f"ncc_{i}": a for i, a in enumerate(layer_ncc(s.model, x, y, cfg.depth))}

        tcfg = cfg.train_config(optimizer="sgd")
        hist = ctx.train(task, model, (x, y), tcfg, eval_sets={"test": ds.test()}, callbacks=[log_ncc])
        ncc = layer_ncc(model, x, y, cfg.depth)
        out[task] = {
            "ncc": ncc,
            "L_star": effective_depth(ncc),
            "spearman": spearman(range(len(ncc)), ncc),
            "train_acc": hist.last("train_acc"),
            "test_acc": hist.last("test_acc"),
            "steps": hist.column("step"),
            "ncc_history": [[r.get(f"ncc_{i}") for i in range(cfg.depth + 1)] for r in hist.records],
        }
    return out


def signature(result: Result) -> Verdict:
    d = result.data
    L = d["depth"]
    e, h = d["easy"], d["hard"]
    gap = h["L_star"] - e["L_star"] if (e["L_star"] is not None and h["L_star"] is not None) else None
    checks = []
    for task, r in (("easy", e), ("hard", h)):
        checks += [
            check(f"{task}_train_acc", r["train_acc"], ">=", FIT_ACC, f"the {task}-task net fits its training labels"),
            check(
                f"{task}_spearman(layer, NCC)",
                r["spearman"],
                ">=",
                RISE_SPEARMAN,
                f"{task} task: NCC train accuracy rises with depth (rank correlation over layers 0..L)",
            ),
            check(
                f"{task}_L*",
                r["L_star"],
                "<",
                L,
                f"{task} task: NCC train accuracy reaches {NCC_SEPARABLE} at a layer L* below the last (L={L})",
            ),
        ]
    checks.append(check("L*_hard - L*_easy", gap, ">=", 1, "the harder (label-noise) task needs more layers"))
    summary = (
        f"L={L}: L*_easy={e['L_star']}, L*_hard={h['L_star']} (label noise {d['label_noise']}); "
        f"Spearman easy={fmt(e['spearman'])}, hard={fmt(h['spearman'])}"
    )
    for task, r in (("easy", e), ("hard", h)):
        if r["L_star"] is None:
            summary += f"; {task}: NCC never reached {NCC_SEPARABLE} (max {max(r['ncc'][1:]):.3f})"
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, ax = new_figure(width=6.0, height=4.0)
    layers = list(range(d["depth"] + 1))
    for task, color, label in (("easy", "C0", "clean labels"), ("hard", "C3", f"{d['label_noise']:.0%} label noise")):
        r = d[task]
        ax.plot(layers, r["ncc"], "o-", color=color, label=f"{task}: {label}")
        if r["L_star"] is not None:
            ax.axvline(r["L_star"], color=color, ls="--", lw=1)
            ax.text(r["L_star"], 0.05 if task == "easy" else 0.15, f" L*={r['L_star']}", color=color, fontsize=9)
    ax.axhline(NCC_SEPARABLE, color="grey", ls=":", lw=0.8)
    ax.set_xticks(layers)
    ax.set_xticklabels(["in"] + [str(i) for i in layers[1:]])
    ax.set_xlabel("layer (0 = input, L = penultimate)")
    ax.set_ylabel("NCC train accuracy")
    ax.set_ylim(0, 1.03)
    ax.set_title(f"effective depth: MLP with L={d['depth']} hidden layers")
    ax.legend(fontsize=8, loc="lower right")
    return [save(fig, out_dir, "ncc_vs_layer")]
