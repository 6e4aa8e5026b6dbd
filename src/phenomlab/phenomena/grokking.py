"""Grokking: generalisation long after memorisation on modular arithmetic.

Power, Burda, Edwards, Babuschkin, Misra 2022 (arXiv 2201.02177); Nanda et al. 2023 (arXiv 2301.05217).
AdamW with strong weight decay on a fraction of the table ``(a op b) mod p`` fits the training pairs at ``T_fit``
but generalises only at ``T_gen >> T_fit``; without weight decay the same net memorises and does not generalise.

Checks:
- train accuracy reaches ``FIT_ACC`` (0.99); ``T_fit`` = the first evaluated step where it does;
- test accuracy reaches ``GEN_ACC`` (0.95); ``T_gen`` = the first evaluated step where it does;
- ``T_gen / max(T_fit, 1) >= MIN_DELAY`` (5);
- plateau: the median test accuracy over evaluations in ``[T_fit, T_gen/2]`` is <= ``PLATEAU_MAX_ACC`` (0.3);
- jump: ``(T_gen - T_50) / (T_gen - T_fit) <= MAX_RISE_FRACTION`` (0.4; a linear climb gives 0.5), ``T_50`` the
  first evaluated step with test accuracy >= 0.5;
- the control run (weight decay ``control_weight_decay``, default 0) has test accuracy < ``CONTROL_MAX_ACC`` (0.5)
  at its last evaluation at or before ``T_gen``, and it did memorise: its train accuracy reached ``FIT_ACC`` by then
  (a control that never trains would not generalise either).

Background, measurements and caveats: docs/phenomena/grokking.md.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import modular_arithmetic
from ..errors import ConfigError
from ..models import EmbedMLP, Transformer1L
from ..train import TrainConfig, TrainState
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "grokking"

FIT_ACC = 0.99
GEN_ACC = 0.95
MIN_DELAY = 5.0
CONTROL_MAX_ACC = 0.5
#: the plateau: median test accuracy over evaluations in [T_fit, T_gen/2] stays at most this (issue threshold)
PLATEAU_MAX_ACC = 0.3
#: the jump: (T_gen - T_50) / (T_gen - T_fit) at most this, T_50 the first step with test accuracy >= 0.5
#: (fixed a priori: a linear climb from T_fit to T_gen gives 0.5)
MAX_RISE_FRACTION = 0.4


@dataclass(frozen=True)
class Config(PhenomenonConfig, training(lr=3e-3, steps=5000, weight_decay=1.0, eval_every=20)):
    p: int = param(97, "modulus (prime for op '/')", ge=2)
    op: str = param("+", "operation a op b mod p", choices=("+", "-", "*", "/"))
    train_fraction: float = param(0.5, "fraction of all (a, b) pairs used for training", gt=0.0, lt=1.0)
    model: str = param("mlp", "embedding+MLP or 1-layer transformer", choices=("mlp", "transformer"))
    embed_dim: int = param(64, "token embedding size (d_model for the transformer)", gt=0)
    width: int = param(256, "MLP hidden width (d_mlp for the transformer)", gt=0)
    n_heads: int = param(4, "attention heads (transformer)", gt=0)
    beta2: float = param(0.98, "AdamW beta2", gt=0.0, lt=1.0)
    control_weight_decay: float = param(0.0, "weight decay of the control run", ge=0.0)

    def validate(self) -> None:
        super().validate()
        if self.model == "transformer" and self.embed_dim % self.n_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} must be divisible by n_heads={self.n_heads}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(p=47, embed_dim=32, width=128, lr=1e-2, steps=3000),
    "quick": {},
    # Nanda et al. 2023: 1-layer transformer, p=113, 30% of pairs, full batch, lr 1e-3, wd 1
    "paper": {
        "p": 113,
        "train_fraction": 0.3,
        "model": "transformer",
        "embed_dim": 128,
        "width": 512,
        "lr": 1e-3,
        "steps": 40000,
        "eval_every": 100,
    },
}


def _model(cfg: Config, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if cfg.model == "mlp":
        return EmbedMLP(cfg.p, cfg.p, n_tokens=2, embed_dim=cfg.embed_dim, width=cfg.width, depth=1)
    return Transformer1L(cfg.p, cfg.p, seq_len=2, d_model=cfg.embed_dim, n_heads=cfg.n_heads, d_mlp=cfg.width)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = modular_arithmetic(cfg.p, cfg.op, cfg.train_fraction, seed=ctx.seed_for("data")).to(ctx.device)
    init_seed = ctx.seed_for("init")

    def stop_when_generalised(s: TrainState) -> None:
        # keep going 10% past T_gen so the curve shows test accuracy holding, then stop
        t_gen = s.history.first_step("test_acc", lambda a: a >= GEN_ACC)
        if t_gen is not None and s.step >= 1.1 * t_gen:
            s.stop = True

    def tcfg(weight_decay: float, steps: int) -> TrainConfig:
        return cfg.train_config(optimizer="adamw", weight_decay=weight_decay, steps=steps, betas=(0.9, cfg.beta2))

    main = ctx.train(
        "main",
        _model(cfg, init_seed).to(ctx.device),
        ds.train(),
        tcfg(cfg.weight_decay, cfg.steps),
        eval_sets={"test": ds.test()},
        callbacks=[stop_when_generalised],
    )
    t_gen = main.first_step("test_acc", lambda a: a >= GEN_ACC)
    # the control (same init, same data) runs as long as the main run needed to generalise
    control_steps = t_gen if t_gen is not None else cfg.steps
    control = ctx.train(
        "control",
        _model(cfg, init_seed).to(ctx.device),
        ds.train(),
        tcfg(cfg.control_weight_decay, control_steps),
        eval_sets={"test": ds.test()},
    )
    return {
        "steps": main.column("step"),
        "train_acc": main.column("train_acc"),
        "test_acc": main.column("test_acc"),
        "control_steps": control.column("step"),
        "control_train_acc": control.column("train_acc"),
        "control_test_acc": control.column("test_acc"),
        "t_fit": main.first_step("train_acc", lambda a: a >= FIT_ACC),
        "t_gen": t_gen,
        "max_steps": cfg.steps,
    }


def signature(result: Result) -> Verdict:
    d = result.data
    t_fit, t_gen = d["t_fit"], d["t_gen"]
    ctrl_at_tgen = ctrl_fit = None
    if t_gen is not None:
        # control test accuracy at the last evaluated step <= T_gen
        pairs = [(s, a) for s, a in zip(d["control_steps"], d["control_test_acc"], strict=True) if s <= t_gen]
        ctrl_at_tgen = pairs[-1][1] if pairs else None
        fits = [a for s, a in zip(d["control_steps"], d["control_train_acc"], strict=True) if s <= t_gen]
        ctrl_fit = max(fits) if fits else None
    ratio = t_gen / max(t_fit, 1) if (t_fit is not None and t_gen is not None) else None
    plateau = rise = None
    if t_fit is not None and t_gen is not None:
        window = [a for s, a in zip(d["steps"], d["test_acc"], strict=True) if t_fit <= s <= t_gen / 2]
        plateau = statistics.median(window) if window else None
        t_50 = next(s for s, a in zip(d["steps"], d["test_acc"], strict=True) if a >= 0.5)
        rise = (t_gen - t_50) / (t_gen - t_fit) if t_gen > t_fit else None
    checks = [
        check("train_acc_reached", max(d["train_acc"]), ">=", FIT_ACC, "train accuracy reaches 0.99 (at T_fit)"),
        check("test_acc_reached", max(d["test_acc"]), ">=", GEN_ACC, "test accuracy reaches 0.95 (at T_gen)"),
        check("T_gen/T_fit", ratio, ">=", MIN_DELAY, "generalisation is delayed at least 5x after fitting"),
        check("plateau_test_acc", plateau, "<=", PLATEAU_MAX_ACC, "median test accuracy in [T_fit, T_gen/2]"),
        check("rise_fraction", rise, "<=", MAX_RISE_FRACTION, "(T_gen - T_50)/(T_gen - T_fit): a jump, not a climb"),
        check(
            "control_test_acc_at_T_gen",
            ctrl_at_tgen,
            "<",
            CONTROL_MAX_ACC,
            "without weight decay the net has not generalised by T_gen",
        ),
        check(
            "control_train_acc_by_T_gen",
            ctrl_fit,
            ">=",
            FIT_ACC,
            "... though it memorised: the control's best train accuracy up to T_gen",
        ),
    ]
    summary = (
        f"T_fit={t_fit}, T_gen={t_gen}, plateau test acc {fmt(plateau)}, rise fraction {fmt(rise)}, "
        f"control test acc at T_gen={fmt(ctrl_at_tgen)} (train acc by then {fmt(ctrl_fit)})"
    )
    if t_gen is None:
        summary += f" (test accuracy never reached {GEN_ACC} in {d['max_steps']} steps)"
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, ax = new_figure(width=6.0, height=4.0)
    s = [max(x, 1) for x in d["steps"]]
    cs = [max(x, 1) for x in d["control_steps"]]
    ax.plot(s, d["train_acc"], color="C0", label=f"train (wd={result.config['weight_decay']})")
    ax.plot(s, d["test_acc"], color="C1", label=f"test (wd={result.config['weight_decay']})")
    ctrl = result.config["control_weight_decay"]
    ax.plot(cs, d["control_train_acc"], color="C0", ls="--", alpha=0.6, label=f"train (wd={ctrl})")
    ax.plot(cs, d["control_test_acc"], color="C1", ls="--", alpha=0.6, label=f"test (wd={ctrl})")
    for t, name in ((d["t_fit"], "T_fit"), (d["t_gen"], "T_gen")):
        if t:
            ax.axvline(t, color="grey", lw=0.8, ls=":")
            ax.text(t, 0.5, f" {name}={t}", rotation=90, va="center", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"grokking: (a {result.config['op']} b) mod {result.config['p']}")
    ax.legend(fontsize=8, loc="center left")
    return [save(fig, out_dir, "accuracy")]
