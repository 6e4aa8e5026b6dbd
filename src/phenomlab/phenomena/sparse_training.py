"""Dynamic sparse training: prune-and-regrow beats a static sparse mask, and accuracy grows with the ITOP rate.

Liu, Yin, Mocanu & Pechenizkiy, "Do we actually need dense over-parameterization? In-time over-parameterization in
sparse training", ICML 2021 (arXiv 2102.02887); SET: Mocanu et al. 2018 (arXiv 1707.04780); RigL: Evci et al. 2020
(arXiv 1911.11134). A sparse net at density ``d`` (ERK layer densities) trains either with its random initial mask
fixed (*static*) or with the mask updated every ``dT`` steps by dropping the smallest-magnitude active weights and
regrowing as many at random (SET) or by the largest dense-gradient magnitude (RigL); the drop fraction is
cosine-annealed to zero at 75% of training. The in-time over-parameterisation rate ``R_s`` is the fraction of the
weights that were ever active; ITOP's claim is that dynamic sparse training works because it explores many more
weights than it holds at once, so accuracy grows with ``R_s``, which grows as ``dT`` shrinks.

Protocol (quick preset): mnist1d (4,000 train / 4,000 test), MLP 40-256-256-10, every network from the same
initialisation, trained together as one ensemble (``phenomlab.train.ensemble``) with SGD momentum 0.9, lr 0.05 cosine,
weight decay 5e-4, batch 128, 3,000 steps; masks on all three weight matrices (biases dense). Members: dense, static
at ``d = 0.05`` (3 random masks), SET (3 masks each) and RigL (1 mask each) at ``dT`` in {25, 50, 100, 200, 400,
1000}, static, SET and RigL at ``dT = 100`` at ``d = 0.9``, and *SET without exploration*: SET at the smallest
``dT`` (25) whose regrowth may only go into positions of the initial mask (3 nets, each with the initial mask of
the SET ``dT = 25`` net of the same replicate); with the active count fixed this regrows the dropped weights in
place (restarting at zero), so it keeps SET's prune-and-regrow perturbation but never activates a new weight:
``R_s = d`` exactly (asserted, and stored). Accuracies are averaged over the masks of a condition.

Checks (thresholds fixed on seeds 0-2; mean +- seed std over seeds 0-2 in brackets; docs/phenomena/sparse-training.md):
- ``dynamic_minus_static_pts`` >= 2: mean test accuracy of all dynamic conditions (SET and RigL at every ``dT``,
  no selection of the best) minus the static mean, in points (design threshold, there for the best run)
  [7.54 +- 0.73; the best condition: 13.9 +- 0.7];
- ``set_itop_rate_span`` >= 0.1: the SET conditions' ``R_s`` range (max - min) spans at least 0.1, so the
  correlation below is over really different exploration (a precondition, not the claim) [0.502 +- 0.000];
- ``itop_spearman_set`` >= 0.8: Spearman(``R_s``, test accuracy) across the six SET ``dT`` conditions (runs, not
  checkpoints; issue threshold) [0.938 +- 0.009];
- ``control_no_exploration_gain`` <= 1.5: SET without exploration minus static, in points: ITOP's prediction is
  that dynamic sparse training without exploration gains nothing over a static mask [-2.39 +- 0.47: the in-place
  restarts even cost accuracy; untuned seeds 3 / 4: -0.93 / -2.25];
- ``exploration_gain`` >= 2: SET at the smallest ``dT`` minus SET without exploration (same initial masks, same
  drop schedule), in points: the gain comes from the weights explored [7.74 +- 1.24; seeds 3 / 4: 7.05 / 7.96].
  Because the twin falls below static, part of this is the restarts' cost; SET ``dT = 25`` minus static
  (``set_min_dt_minus_static_pts``, reported) is the conservative size of the exploration effect [5.36 +- 0.80];
- ``max_inactive_weight_abs`` <= 0 and ``max_density_change`` <= 0: inactive weights stayed exactly zero and every
  net kept its exact number of active weights (prune and regrow balance in every layer).

Both thresholds were fixed before any run with the no-exploration arm (an audit fix). Caveat of
``itop_spearman_set``: it correlates ``R_s`` with accuracy across ``dT`` only, so by itself it shows that more
frequent updates help; the two checks above are what separate exploration from updating.

Reported, not checked: ``control_high_density_gain_pts``, dynamic minus static at ``d = 0.9`` (the former control,
0.05 +- 0.79 pts): the static net at 0.9 already matches the dense one (capacity ceiling), so that difference is
about zero whatever dynamic training does. RigL's accuracy does not follow its (much smaller) ``R_s`` across
``dT`` (Spearman 0.30 +- 0.35): ``itop_spearman_rigl``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import Dataset, digits, mnist1d
from ..errors import ConfigError, PhenomlabError
from ..models import MLPEnsemble
from ..train import make_optimizer
from ..train.ensemble import train_ensemble
from ..train.sparse import DynamicSparsity, MaskSchedule, erk_masks
from ._stats import fmt, spearman
from .config import PhenomenonConfig, data, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "sparse-training"

#: dynamic minus static at density d, in points (design doc: >= 2 for the best run; here for the mean of all).
#: Seeds 0-2: 7.54 +- 0.73 pts.
MIN_DYNAMIC_GAIN_PTS = 2.0
#: the SET conditions must explore really different numbers of weights for the correlation to mean anything.
#: Seeds 0-2: 0.502 +- 0.000 (R_s from 0.065 at dT 1000 to 0.567 at dT 25).
MIN_ITOP_SPAN = 0.1
#: Spearman(R_s, test acc) across the SET update intervals (issue threshold). Seeds 0-2: 0.938 +- 0.009.
MIN_ITOP_SPEARMAN = 0.8
#: control: SET at the smallest dT that may regrow only inside its initial mask (no exploration, R_s = d) gains at
#: most 1.5 pts over the static mask (fixed before any run, audit fix). Seeds 0-2: -2.39 +- 0.47 pts (the in-place
#: restarts cost accuracy); untuned seeds 3 / 4: -0.93 / -2.25.
MAX_NO_EXPLORE_GAIN_PTS = 1.5
#: SET at the smallest dT minus the same run without exploration, >= 2 pts (fixed before any run, audit fix).
#: Seeds 0-2: 7.74 +- 1.24 pts (SET dT 25 minus static alone, reported: 5.36 +- 0.80); untuned seeds 3 / 4: 7.05 / 7.96.
MIN_EXPLORATION_GAIN_PTS = 2.0
#: SET at the smallest dT minus static, >= 2 pts (the design's 2 pts; a review, 2026-12-04, before any run scored
#: with it): the mean over SET and RigL can clear MIN_DYNAMIC_GAIN_PTS on RigL alone, and the no-exploration twin
#: sits below static, so without this SET itself could be level with static and the verdict pass.
#: Seeds 0-2: 5.36 +- 0.80 (reported before as set_min_dt_minus_static_pts); untuned seeds 3 / 4: 6.11 / 5.71.
MIN_SET_GAIN_PTS = 2.0
#: condition name of the no-exploration SET arm
NO_EXPLORE = "set_no_explore"


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    data(("mnist1d", "digits"), n_train=4000, n_test=4000),
    training(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        steps=3000,
        batch_size=128,
        schedule="cosine",
        eval_every=500,
    ),
):
    width: int = param(256, "MLP hidden width", gt=0)
    depth: int = param(2, "MLP hidden layers", ge=1)
    density: float = param(0.05, "fraction of the weights active in the sparse nets (ERK over layers)", gt=0.0, lt=1.0)
    intervals: tuple[int, ...] = param((25, 50, 100, 200, 400, 1000), "mask update intervals dT of SET and RigL", gt=0)
    replicates: int = param(3, "random initial masks of the static and each SET condition (averaged)", ge=1)
    rigl_replicates: int = param(1, "random initial masks of each RigL condition (averaged)", ge=1)
    drop_fraction: float = param(0.5, "initial fraction of active weights dropped per update (cosine)", gt=0.0, lt=1.0)
    end_fraction: float = param(0.75, "no mask update after this fraction of the steps (RigL's T_end)", gt=0.0, le=1.0)
    control_density: float = param(0.9, "density of the reported high-density comparison", gt=0.0, lt=1.0)
    control_interval: int = param(100, "update interval of the high-density SET and RigL nets", gt=0)

    def validate(self) -> None:
        super().validate()
        if len(set(self.intervals)) < 3:
            raise ConfigError(f"intervals needs at least 3 distinct update intervals, got {list(self.intervals)}")
        if self.control_density <= self.density:
            raise ConfigError(f"control_density={self.control_density} must exceed density={self.density}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        dataset="digits",
        width=32,
        density=0.3,
        steps=80,
        eval_every=40,
        intervals=(5, 10, 20),
        replicates=1,
        control_interval=10,
    ),
    "quick": {},
    # closer to the design notes: width 1024 (~1.1M weights per net), 5k steps, 3 masks per condition
    "paper": dict(
        width=1024, steps=5000, eval_every=1000, rigl_replicates=3, intervals=(50, 100, 200, 500, 1000, 2000)
    ),
}


def _dataset(cfg: Config, seed: int) -> Dataset:
    if cfg.dataset == "mnist1d":
        return mnist1d(cfg.n_train, cfg.n_test, seed=seed)
    return digits(seed=seed)


def members(cfg: Config) -> list[dict[str, Any]]:
    """The nets trained together: name, condition, method, update interval, target density, replicate index."""
    end = max(1, int(cfg.end_fraction * cfg.steps))
    out: list[dict[str, Any]] = [dict(condition="dense", method="static", interval=0, density=1.0, rep=0)]
    for r in range(cfg.replicates):
        out.append(dict(condition="static", method="static", interval=0, density=cfg.density, rep=r))
    for method, reps in (("set", cfg.replicates), ("rigl", cfg.rigl_replicates)):
        for dt in cfg.intervals:
            for r in range(reps):
                out.append(dict(condition=f"{method}_{dt}", method=method, interval=dt, density=cfg.density, rep=r))
    for method in ("static", "set", "rigl"):
        dt = 0 if method == "static" else cfg.control_interval
        out.append(dict(condition=f"control_{method}", method=method, interval=dt, density=cfg.control_density, rep=0))
    # appended last so that every other net keeps its mask draw and regrowth seeds (indexed by member)
    for r in range(cfg.replicates):
        out.append(dict(condition=NO_EXPLORE, method="set", interval=min(cfg.intervals), density=cfg.density, rep=r))
    for m in out:
        m["end_step"] = end
        m["explore"] = m["condition"] != NO_EXPLORE
    return out


def paired_member(spec: list[dict[str, Any]], j: int) -> int:
    """Index of the SET net (smallest ``dT``, same replicate) whose initial mask no-exploration member ``j`` shares."""
    m = spec[j]
    return next(i for i, o in enumerate(spec) if o["condition"] == f"set_{m['interval']}" and o["rep"] == m["rep"])


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    ds = _dataset(cfg, ctx.seed_for("data")).to(ctx.device)
    spec = members(cfg)
    # one initialisation for every net: static and dynamic differ only by their masks and how they change
    ens = MLPEnsemble(
        ds.input_dim, ds.n_classes, [cfg.width] * len(spec), cfg.depth, "relu", seeds=[ctx.seed_for("init")] * len(spec)
    ).to(ctx.device)
    params = {n: p for n, p in ens.named_parameters() if ".weights." in n}
    masks = erk_masks(params, [m["density"] for m in spec], ctx.generator("masks"), member_dim=True)
    for j, m in enumerate(spec):
        if not m["explore"]:  # the paired SET run's initial mask: the two differ only in where regrowth may go
            for t in masks.values():
                t[j] = t[paired_member(spec, j)]
    schedules = [
        MaskSchedule(
            m["method"],
            max(m["interval"], 1),
            cfg.drop_fraction if m["method"] != "static" else 0.0,
            m["end_step"],
            explore=m["explore"],
        )
        for m in spec
    ]
    tc = cfg.train_config()
    opt = make_optimizer(ens.parameters(), tc, fused=True)
    dyn = DynamicSparsity(ens, masks, opt, schedules, member_dim=True, seed=ctx.seed_for("regrow"))
    initial = [dyn.density(j) for j in range(len(spec))]
    try:
        hist = train_ensemble(
            ens,
            ds.train(),
            tc,
            eval_sets={"test": ds.test()},
            checkpoint=ctx.checkpoint_path("ensemble"),
            seed=ctx.seed_for("train", "ensemble"),
            optimizer=opt,
            progress="sparse nets" if ctx.progress else False,
        )
    finally:
        dyn.remove()
    test, train = hist.last("test_acc"), hist.last("train_acc")
    leak = 0.0
    for n, m in dyn.masks.items():
        leak = max(leak, float((params[n].detach() * (~m).to(params[n].dtype)).abs().max()))
    for j, m in enumerate(spec):
        if not m["explore"] and dyn.itop_rate(j) != initial[j]:
            raise PhenomlabError(f"no-exploration net {j} reached R_s={dyn.itop_rate(j)} > its density {initial[j]}")
    rows = []
    for j, m in enumerate(spec):
        rows.append(
            {
                **m,
                "test_acc": float(test[j]),
                "train_acc": float(train[j]),
                "itop_rate": dyn.itop_rate(j),
                "final_density": dyn.density(j),
                "density_change": abs(dyn.density(j) - initial[j]),
            }
        )
    steps, curves = hist.series("test_acc")
    return {
        "members": rows,
        "conditions": summarise(rows),
        "max_inactive_weight": leak,
        "max_density_change": max(r["density_change"] for r in rows),
        "curve_steps": steps,
        "test_acc_curves": [list(map(float, c)) for c in zip(*curves, strict=True)],
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per condition the means over its replicates: test/train accuracy, ITOP rate, density."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = out.setdefault(
            r["condition"], {"method": r["method"], "interval": r["interval"], "density": r["density"], "_rows": []}
        )
        c["_rows"].append(r)
    for c in out.values():
        rs = c.pop("_rows")
        c["explore"] = all(r.get("explore", True) for r in rs)
        for k in ("test_acc", "train_acc", "itop_rate"):
            c[k] = statistics.fmean(r[k] for r in rs)
        c["n"] = len(rs)
    return out


def _sparse(conds: dict[str, dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return sorted(
        (
            c
            for k, c in conds.items()
            if c["method"] == method and not k.startswith("control") and c.get("explore", True)
        ),
        key=lambda c: c["interval"],
    )


def numbers(d: dict[str, Any]) -> dict[str, float | None]:
    """The deciding numbers of the verdict, from the per-condition means."""
    conds = d["conditions"]
    dyn = _sparse(conds, "set") + _sparse(conds, "rigl")
    static = conds["static"]["test_acc"]
    sets = _sparse(conds, "set")
    rigls = _sparse(conds, "rigl")
    r_set = [c["itop_rate"] for c in sets]
    best = max(dyn, key=lambda c: c["test_acc"])
    top_r = max(dyn, key=lambda c: c["itop_rate"])
    ctrl_dyn = statistics.fmean([conds["control_set"]["test_acc"], conds["control_rigl"]["test_acc"]])
    nx = conds.get(NO_EXPLORE)  # absent from results stored before the no-exploration arm: its checks then fail
    paired = conds.get(f"set_{nx['interval']}") if nx else None
    return {
        "control_no_exploration_gain": 100 * (nx["test_acc"] - static) if nx else None,
        "exploration_gain": 100 * (paired["test_acc"] - nx["test_acc"]) if nx and paired else None,
        "no_explore_itop_rate": nx["itop_rate"] if nx else None,
        "no_explore_paired_itop_rate": paired["itop_rate"] if paired else None,
        "set_min_dt_minus_static_pts": 100 * (paired["test_acc"] - static) if paired else None,
        "dynamic_minus_static_pts": 100 * (statistics.fmean(c["test_acc"] for c in dyn) - static),
        "best_dynamic_minus_static_pts": 100 * (best["test_acc"] - static),
        "set_itop_rate_span": max(r_set) - min(r_set),
        "itop_spearman_set": spearman(r_set, [c["test_acc"] for c in sets]),
        "itop_spearman_rigl": spearman([c["itop_rate"] for c in rigls], [c["test_acc"] for c in rigls]),
        "itop_spearman_all": spearman([c["itop_rate"] for c in dyn], [c["test_acc"] for c in dyn]),
        "control_high_density_gain_pts": 100 * (ctrl_dyn - conds["control_static"]["test_acc"]),
        "dense_test_acc": conds["dense"]["test_acc"],
        "static_test_acc": static,
        "highest_itop_minus_dense_pts": 100 * (top_r["test_acc"] - conds["dense"]["test_acc"]),
    }


def signature(result: Result) -> Verdict:
    d = result.data
    v = numbers(d)
    checks = [
        check(
            "dynamic_minus_static_pts",
            v["dynamic_minus_static_pts"],
            ">=",
            MIN_DYNAMIC_GAIN_PTS,
            "mean test acc of every SET and RigL condition minus static, same density, in points",
        ),
        check(
            "set_itop_rate_span",
            v["set_itop_rate_span"],
            ">=",
            MIN_ITOP_SPAN,
            "max - min ITOP rate R_s over the SET update intervals",
        ),
        check(
            "itop_spearman_set",
            v["itop_spearman_set"],
            ">=",
            MIN_ITOP_SPEARMAN,
            "Spearman(R_s, test acc) across the SET update intervals",
        ),
        check(
            "control_no_exploration_gain",
            v["control_no_exploration_gain"],
            "<=",
            MAX_NO_EXPLORE_GAIN_PTS,
            "SET at the smallest dT regrowing only inside its initial mask (R_s = d) minus static, in points",
        ),
        check(
            "set_min_dt_minus_static_pts",
            v["set_min_dt_minus_static_pts"],
            ">=",
            MIN_SET_GAIN_PTS,
            "SET at the smallest dT (the most exploring) minus static, same density, in points",
        ),
        check(
            "exploration_gain",
            v["exploration_gain"],
            ">=",
            MIN_EXPLORATION_GAIN_PTS,
            "SET at the smallest dT minus the same run without exploration (same masks), in points",
        ),
        check(
            "max_inactive_weight_abs",
            d["max_inactive_weight"],
            "<=",
            0.0,
            "largest |w| of an inactive weight after training (masks held exactly)",
        ),
        check(
            "max_density_change",
            d["max_density_change"],
            "<=",
            0.0,
            "largest change of a net's density over training (prune and regrow balance)",
        ),
    ]
    summary = (
        f"dense {100 * v['dense_test_acc']:.1f}%, static {100 * v['static_test_acc']:.1f}%; dynamic - static "
        f"{fmt(v['dynamic_minus_static_pts'], '+.2f')} pts (best {fmt(v['best_dynamic_minus_static_pts'], '+.2f')});"
        f" Spearman(R_s, acc) SET {fmt(v['itop_spearman_set'], '.2f')}, RigL {fmt(v['itop_spearman_rigl'], '.2f')};"
        f" no-exploration SET - static {fmt(v['control_no_exploration_gain'], '+.2f')} pts, exploration gain"
        f" {fmt(v['exploration_gain'], '+.2f')} pts; density-{d['conditions']['control_static']['density']:g}"
        f" dynamic - static {fmt(v['control_high_density_gain_pts'], '+.2f')} pts (reported)"
    )
    return Verdict(checks, summary)


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    conds = d["conditions"]
    fig, ax = new_figure(width=6.0, height=4.0)
    for method, color, marker in (("set", "C0", "o"), ("rigl", "C3", "s")):
        cs = _sparse(conds, method)
        xs, ys = [c["itop_rate"] for c in cs], [100 * c["test_acc"] for c in cs]
        ax.plot(xs, ys, marker + "-", color=color, label=f"{method.upper()} (dT labelled)")
        for c, x, y in zip(cs, xs, ys, strict=True):
            ax.annotate(str(c["interval"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    st = conds["static"]
    ax.plot([st["itop_rate"]], [100 * st["test_acc"]], "k^", label="static")
    if NO_EXPLORE in conds:
        nx = conds[NO_EXPLORE]
        ax.plot([nx["itop_rate"]], [100 * nx["test_acc"]], "C2v", label=f"SET dT {nx['interval']}, no exploration")
    ax.axhline(100 * conds["dense"]["test_acc"], color="k", lw=1, ls="--", label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("ITOP rate R_s (fraction of weights ever active)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"sparse training at density {st['density']:.2f} ({result.config['dataset']})")
    ax.legend(fontsize=7, loc="lower right")
    paths = [save(fig, out_dir, "accuracy_vs_itop_rate")]
    fig, ax = new_figure(width=5.0, height=3.5)
    names = ["static", "set", "rigl"]
    ax.bar(names, [100 * conds[f"control_{n}"]["test_acc"] for n in names], color=["k", "C0", "C3"])
    lo = min(100 * conds[f"control_{n}"]["test_acc"] for n in names)
    ax.set_ylim(lo - 3, lo + 3)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"density {conds['control_static']['density']:.2f} (reported; static already at capacity)")
    paths.append(save(fig, out_dir, "control_high_density"))
    return paths
