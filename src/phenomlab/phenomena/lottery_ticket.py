"""Lottery tickets: sparse subnetworks, found by iterative magnitude pruning, that train as well as the dense net.

Frankle & Carbin 2019, "The Lottery Ticket Hypothesis" (arXiv 1803.03635); rewinding to an early step:
Frankle, Dziugaite, Roy, Carbin 2020 (arXiv 1912.05671).

IMP: train, remove ``prune_fraction`` of the surviving weights with the smallest ``|w|``, rewind the survivors to
step ``rewind_step``, repeat (sparsity after ``r`` rounds ``1 - (1 - prune_fraction)^r``). Checks, on final test
accuracies in points:
- the ticket at the first round with sparsity >= ``MATCH_SPARSITY`` (0.8): ``100 (acc_ticket - acc_dense) >= -1``;
- ``max`` over rounds with sparsity >= ``WIN_SPARSITY`` (0.9) of ``100 (acc_ticket - acc_reinit) >= 2``, where
  *reinit* is the ticket's mask on a fresh random initialisation;
- pruned weights stay exactly zero through every training (largest pruned ``|w|`` <= 0).

Background, measurements and caveats: docs/phenomena/lottery-ticket.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset, digits, mnist1d
from ..errors import ConfigError
from ..models import MLP
from ..train import TrainConfig, make_optimizer
from ..train.pruning import (
    Masks,
    attach_masks,
    full_masks,
    layer_sparsity,
    magnitude_prune,
    random_masks,
    sparsity,
    state_copy,
)
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "lottery-ticket"

MATCH_SPARSITY = 0.8
MATCH_TOL_PTS = -1.0
WIN_SPARSITY = 0.9
WIN_MARGIN_PTS = 2.0


@dataclass(frozen=True)
class Config(
    PhenomenonConfig, training(optimizer="adam", lr=1e-3, steps=1000, batch_size=128, momentum=0.0, eval_every=250)
):
    dataset: str = param("mnist1d", "mnist1d (40-dim signals) or sklearn digits (8x8)", choices=("mnist1d", "digits"))
    n_train: int = param(4000, "mnist1d training examples", gt=0)
    n_test: int = param(4000, "mnist1d test examples (large: 1 pt must be above the noise)", gt=0)
    width: int = param(256, "MLP hidden width", gt=0)
    depth: int = param(2, "MLP hidden layers", ge=1)
    activation: str = param("relu", "hidden activation", choices=("relu", "tanh", "gelu", "silu"))
    rounds: int = param(11, "IMP rounds after the dense training (0.8^11 = 8.6% of weights remain)", ge=1)
    prune_fraction: float = param(0.2, "fraction of surviving weights removed per round", gt=0.0, lt=1.0)
    scope: str = param(
        "global", "rank weights across all layers (global) or within each layer", choices=("global", "layer")
    )
    output_fraction: float | None = param(
        None, "separate per-round rate of the output layer (None: like the rest)", ge=0.0, lt=1.0
    )
    rewind_step: int = param(0, "rewind survivors to the weights at this step (0 = initialisation)", ge=0)
    controls: bool = param(True, "train the random re-init and random-mask controls at every round")

    def validate(self) -> None:
        super().validate()
        if self.rewind_step >= self.steps:
            raise ConfigError(f"rewind_step={self.rewind_step} must be < steps={self.steps}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        dataset="digits",
        width=16,
        steps=60,
        eval_every=30,
        rounds=2,
        rewind_step=10,
        scope="layer",
        output_fraction=0.1,
    ),
    "quick": {},
    # Frankle & Carbin's LeNet-300-100 setup (Adam 1.2e-3, batch 60, 50k iterations, fc layers 20% and
    # output 10% per round, layer-wise), on mnist1d with equal hidden widths; late rewinding as in
    # Frankle et al. 2020 is available through rewind_step.
    "paper": {
        "width": 300,
        "depth": 2,
        "lr": 1.2e-3,
        "batch_size": 60,
        "steps": 10000,
        "eval_every": 1000,
        "rounds": 20,
        "scope": "layer",
        "output_fraction": 0.1,
        "n_train": 8000,
    },
}


def _dataset(cfg: Config, seed: int) -> Dataset:
    if cfg.dataset == "mnist1d":
        return mnist1d(cfg.n_train, cfg.n_test, seed=seed)
    return digits(seed=seed)


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _dataset(cfg, ctx.seed_for("data")).to(ctx.device)

    def new_model(seed: int | None = None) -> MLP:
        if seed is not None:
            torch.manual_seed(seed)
        return MLP(ds.input_dim, ds.n_classes, cfg.width, cfg.depth, cfg.activation).to(ctx.device)

    def tcfg(steps: int) -> TrainConfig:
        return cfg.train_config(steps=steps, eval_every=min(cfg.eval_every, steps))

    def fit(name: str, state: dict[str, torch.Tensor], masks: Masks, steps: int) -> tuple[MLP, dict[str, float]]:
        """Train from ``state`` with ``masks`` held applied; resumable under ``name``."""
        model = new_model()  # every weight is overwritten by the state
        model.load_state_dict(state)
        c = tcfg(steps)
        opt = make_optimizer(model.parameters(), c)
        handle = attach_masks(model, masks, opt)
        try:
            hist = ctx.train(name, model, ds.train(), c, eval_sets={"test": ds.test()}, optimizer=opt)
        finally:
            handle.remove()
        params = dict(model.named_parameters())
        leak = max(float((params[n].detach() * (~m).to(params[n].dtype)).abs().max()) for n, m in masks.items())
        return model, {"test_acc": hist.last("test_acc"), "train_acc": hist.last("train_acc"), "leak": leak}

    theta0 = state_copy(new_model(ctx.seed_for("init")))
    masks = full_masks(new_model())
    rewind_state = theta0
    if cfg.rewind_step > 0:
        warm, _ = fit("rewind_point", theta0, masks, cfg.rewind_step)
        rewind_state = state_copy(warm)
    layer_rates = None
    if cfg.output_fraction is not None:
        layer_rates = {"out.weight": cfg.output_fraction}

    round_steps = cfg.steps - cfg.rewind_step
    out: dict[str, list[Any]] = {
        k: []
        for k in (
            "round",
            "sparsity",
            "remaining",
            "ticket_test_acc",
            "ticket_train_acc",
            "reinit_test_acc",
            "random_mask_test_acc",
            "layer_sparsity",
        )
    }
    leak = 0.0
    model, res = fit("ticket_r00", rewind_state, masks, round_steps)
    dense_acc = res["test_acc"]
    for r in range(cfg.rounds + 1):
        if r > 0:
            masks = magnitude_prune(model, masks, cfg.prune_fraction, cfg.scope, layer_rates)
            model, res = fit(f"ticket_r{r:02d}", rewind_state, masks, round_steps)
        leak = max(leak, res["leak"])
        s = sparsity(masks)
        out["round"].append(r)
        out["sparsity"].append(s)
        out["remaining"].append(1.0 - s)
        out["ticket_test_acc"].append(res["test_acc"])
        out["ticket_train_acc"].append(res["train_acc"])
        out["layer_sparsity"].append(layer_sparsity(masks))
        reinit_acc = rand_acc = None
        if cfg.controls and r > 0:
            _, rr = fit(f"reinit_r{r:02d}", state_copy(new_model(ctx.seed_for("reinit", r))), masks, cfg.steps)
            rand = random_masks(masks, ctx.generator("random_mask", r))
            _, rm = fit(f"random_mask_r{r:02d}", theta0, rand, cfg.steps)
            reinit_acc, rand_acc = rr["test_acc"], rm["test_acc"]
            leak = max(leak, rr["leak"], rm["leak"])
        out["reinit_test_acc"].append(reinit_acc)
        out["random_mask_test_acc"].append(rand_acc)
        ctx.log(
            r,
            {
                "sparsity": s,
                "ticket_test_acc": res["test_acc"],
                **({"reinit_test_acc": reinit_acc, "random_mask_test_acc": rand_acc} if reinit_acc is not None else {}),
            },
            prefix="imp",
        )
    return {**out, "dense_test_acc": dense_acc, "max_masked_weight": leak, "rewind_step": cfg.rewind_step}


def _match_gap(d: dict[str, Any]) -> tuple[float | None, float | None]:
    """(sparsity, 100*(ticket - dense)) at the first round with sparsity >= 80%."""
    for s, a in zip(d["sparsity"], d["ticket_test_acc"], strict=True):
        if s >= MATCH_SPARSITY:
            return s, 100.0 * (a - d["dense_test_acc"])
    return None, None


def _win_margin(d: dict[str, Any]) -> tuple[float | None, float | None]:
    """(sparsity, margin) maximising 100*(ticket - reinit) over rounds with sparsity >= 90%."""
    best: tuple[float | None, float | None] = (None, None)
    for s, a, b in zip(d["sparsity"], d["ticket_test_acc"], d["reinit_test_acc"], strict=True):
        if s >= WIN_SPARSITY and b is not None:
            m = 100.0 * (a - b)
            if best[1] is None or m > best[1]:
                best = (s, m)
    return best


def signature(result: Result) -> Verdict:
    d = result.data
    s_match, gap = _match_gap(d)
    s_win, margin = _win_margin(d)
    checks = [
        check(
            "ticket_minus_dense_pts_at_80pct",
            gap,
            ">=",
            MATCH_TOL_PTS,
            "test acc of the ticket at the first IMP round with sparsity >= 80%, minus dense, in points",
        ),
        check(
            "ticket_minus_reinit_pts_at_90pct",
            margin,
            ">=",
            WIN_MARGIN_PTS,
            "largest margin of the ticket over random re-init of the same mask at sparsity >= 90%, in points",
        ),
        check(
            "max_pruned_weight_abs",
            d["max_masked_weight"],
            "<=",
            0.0,
            "pruned weights stayed exactly zero through every training (masks applied)",
        ),
    ]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    summary = (
        f"dense {100 * d['dense_test_acc']:.1f}%; ticket - dense at {pct(s_match)} sparsity = "
        f"{fmt(gap, '+.2f')} pts; ticket - reinit at {pct(s_win)} = {fmt(margin, '+.2f')} pts"
    )
    if s_match is None or (s_win is None and max(d["sparsity"]) < WIN_SPARSITY):
        summary += f" (IMP stopped at {pct(max(d['sparsity']))} sparsity: add rounds)"
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    fig, ax = new_figure(width=6.0, height=4.0)
    rem = [100 * r for r in d["remaining"]]
    ax.plot(rem, [100 * a for a in d["ticket_test_acc"]], "o-", color="C0", label="winning ticket (IMP + rewind)")
    for key, color, label in (
        ("reinit_test_acc", "C3", "random re-init, same mask"),
        ("random_mask_test_acc", "C2", "random mask, same sparsity"),
    ):
        pts = [(x, 100 * a) for x, a in zip(rem, d[key], strict=True) if a is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "s--", color=color, ms=4, label=label)
    dense = 100 * d["dense_test_acc"]
    ax.axhline(dense, color="k", lw=1, label=f"dense ({dense:.1f}%)")
    ax.axhline(dense + MATCH_TOL_PTS, color="k", lw=0.7, ls=":", label="dense - 1 pt")
    for s in (MATCH_SPARSITY, WIN_SPARSITY):
        ax.axvline(100 * (1 - s), color="grey", lw=0.7, ls=":")
        ax.text(
            100 * (1 - s),
            ax.get_ylim()[0],
            f" {100 * s:.0f}% sparse",
            rotation=90,
            va="bottom",
            fontsize=7,
            color="grey",
        )
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5) if min(rem) * 0.9 <= t <= 100]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    rw = d.get("rewind_step", 0)
    ax.set_title(f"lottery ticket: IMP on {result.config['dataset']} MLP, rewind to step {rw}")
    ax.legend(fontsize=7, loc="lower left")
    return [save(fig, out_dir, "accuracy_vs_sparsity")]
