"""Extreme simplicity bias: a net trained on inputs with a simple and a complex fully predictive block uses
only the simple one.

Shah, Tamuly, Raghunathan, Jain, Netrapalli 2020, "The Pitfalls of Simplicity Bias in Neural Networks"
(arXiv 2006.07710). On LMS-5 data (one linear coordinate plus 5-slab coordinates, each alone predicting the label
exactly) an MLP trained to 100% train accuracy relies on the linear coordinate only: shuffling it across test
examples (S-randomised) drops accuracy to ~50%, while shuffling all slab coordinates (S^c-randomised) leaves it
at ~100%. The same holds for MNIST-CIFAR dominoes (randomising the MNIST half drops accuracy to chance,
randomising the CIFAR half costs nothing).

Protocol (both settings, the same MLP, optimiser and steps):
- **LMS**: :func:`phenomlab.data.lms.lms` (column 0 linear, ``n_slabs`` 5-slab columns, margin 0.1).
- **Dominoes** (download-free analogue of MNIST-CIFAR, :func:`phenomlab.data.lms.dominoes`): an MNIST-1D signal
  concatenated with an 8x8 digit, binary as in the paper: label i pairs digit class ``digit_classes[i]`` (0/1, as
  the paper's MNIST 0/1) with MNIST-1D class ``signal_classes[i]`` (0/3: not linearly separable, linear probe
  ~0.7, but an MLP alone learns it to ~0.99, as the paper's ResNet learns CIFAR car/truck).
- Which block is *simple* is measured, not assumed: a logistic-regression probe (sklearn) on each block alone,
  train -> test; the block with the higher probe accuracy is S. The checks then use the measured S.
- A *randomised* test set shuffles one block's columns jointly across test rows (:func:`shuffle_columns`), mean
  over ``n_shuffles`` permutations.
- **Negative control** (per setting): the same net and training with S shuffled across the *training* rows, so only
  S^c carries the label. It must learn S^c (measured test accuracy on S^c, not chance by construction) and then
  lose that accuracy when S^c is randomised: the invariance to S^c seen in the main run is a choice of the
  trained net, not an inability to use S^c.
- **Negative control, equally simple blocks** (LMS): two linear coordinates of the same law and no simplicity gap
  between them: the net must use both (exclusivity follows the simplicity gap, not a habit of settling on one block).
- Reported, not checked (``ten_class``): the same dominoes over all ten classes (digit c with signal c).

Checks (thresholds from the design notes or fixed a priori; quick preset, seeds 0-2: mean ± seed std):
- ``lms_test_acc`` >= 0.95 [1.000 ± 0.000]; ``lms_probe_gap`` = probe(S) - probe(S^c) >= 0.2 [0.505 ± 0.007];
- ``lms_s_randomized_acc`` <= chance + 0.1 = 0.6 (design) [0.491 ± 0.014];
- ``lms_sc_randomized_acc`` >= 0.95 (design) [1.000 ± 0.000];
- ``dom_test_acc`` >= 0.95 [0.999 ± 0.002]; ``dom_probe_gap`` >= 0.2 [0.325 ± 0.009];
- ``dom_s_randomized_acc`` <= chance + 0.1 = 0.6 (design) [0.502 ± 0.005];
- ``dom_sc_randomized_cost`` = clean - S^c-randomised accuracy <= 0.05 (design) [-0.001 ± 0.001];
- ``control_lms_sc_learned`` and ``control_dom_sc_learned``: the control's test accuracy >= 0.9
  [LMS 1.000 ± 0.000; dominoes 0.986 ± 0.002];
- ``control_lms_sc_drop`` and ``control_dom_sc_drop``: the control's clean - S^c-randomised accuracy >= 0.35
  (70% of the way from 1 to chance 0.5) [LMS 0.501 ± 0.004; dominoes 0.491 ± 0.009];
- ``control_lms_equal_min_cost`` (pre-registered, threshold derived before any run): LMS with slab column 1
  replaced by a second linear coordinate of column 0's law (:func:`with_second_linear`): no simplicity gap, so
  exclusive reliance on one block must not appear. ``min_k`` (clean - accuracy with linear coordinate ``k``
  shuffled) >= 0.1 (equal use 0.25, a weight ratio of 1/2 about 0.10, one ignored 0)
  [0.242 ± 0.004; untuned seeds 3-6: 0.240-0.248].
Measured S (by the probes, every seed): the linear coordinate (probe 1.00 vs slabs 0.50) and the digit half
(1.00 vs MNIST-1D 0.67). Ten-class dominoes (reported): the net leans on the digit half (randomising it: 0.121
± 0.004, chance 0.1) but not only on it: randomising MNIST-1D costs 0.096 ± 0.010 of 0.976 clean accuracy.

Background, measurements and caveats: docs/phenomena/simplicity-bias.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import Dataset
from ..data.lms import dominoes, lms, shuffle_columns
from ..errors import ConfigError
from ..models import MLP
from ..train import History, evaluate
from ._stats import fmt
from .config import PhenomenonConfig, param, training
from .context import RunContext
from .verdict import Check, Result, Verdict, check

ID = "simplicity-bias"

#: the main nets must have learned the task (clean test accuracy)
MIN_TEST_ACC = 0.95
#: linear-probe accuracy of the simple block minus that of the complex one: the two differ clearly in simplicity
MIN_PROBE_GAP = 0.2
#: S-randomised accuracy at most chance + 0.1 (design notes: LMS <= 0.6, dominoes <= chance + 10 pts)
S_RAND_ABOVE_CHANCE = 0.1
#: LMS S^c-randomised accuracy at least this (design notes)
MIN_SC_RAND_ACC = 0.95
#: dominoes: randomising the complex half costs at most this much accuracy (design notes: 5 points)
MAX_SC_COST = 0.05
#: control: the net trained without an informative S learns S^c to at least this test accuracy
CONTROL_MIN_LEARNED = 0.9
#: control: randomising S^c then costs at least this (70% of the way from 1 to chance 0.5)
CONTROL_MIN_DROP = 0.35
#: pre-registered before any run (docs page): with two equally simple linear coordinates, shuffling either one costs
#: at least this. Derived, not measured: equal use costs 0.25, a weight ratio of 1/2 about 0.10, exclusive use 0.
#: Seeds 0-2: 0.242, seed std 0.004; untuned seeds 3-6: 0.240-0.248
EQUAL_MIN_COST = 0.1
SETTINGS = ("lms", "dom")


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    training(optimizer="adam", lr=3e-3, steps=2000, batch_size=256, eval_every=200),
):
    lms_n_train: int = param(50000, "LMS training points (the paper's 50k)", gt=0)
    lms_n_test: int = param(2000, "LMS test points", gt=0)
    n_slabs: int = param(49, "LMS slab coordinates (the paper's LMS-5 has 49, d = 50)", ge=1)
    slabs: int = param(5, "slabs per slab coordinate (odd)", ge=3)
    margin: float = param(0.1, "LMS margin: half the gap between the classes on each coordinate", gt=0.0, lt=1.0)
    dom_n_train: int = param(4000, "dominoes training rows", gt=0)
    dom_n_test: int = param(1000, "dominoes test rows", gt=0)
    digit_classes: tuple[int, ...] = param((0, 1), "digit class of each label (the paper's MNIST 0/1)", ge=0, le=9)
    signal_classes: tuple[int, ...] = param((0, 3), "MNIST-1D class of each label", ge=0, le=9)
    ten_class: bool = param(True, "also run the ten-class dominoes (reported, not checked)")
    width: int = param(200, "MLP hidden width", gt=0)
    depth: int = param(2, "MLP hidden layers", ge=1)
    n_shuffles: int = param(3, "random permutations averaged in each randomised test accuracy", ge=1)
    equal_control: bool = param(True, "also train LMS with a second linear coordinate in column 1 (the control)")

    def validate(self) -> None:
        super().validate()
        if self.slabs % 2 == 0:
            raise ConfigError(f"slabs must be odd, got {self.slabs}")
        if self.margin * (self.slabs - 1) >= 1.0:
            raise ConfigError(f"margin={self.margin} leaves no room for {self.slabs} slabs (need margin*(k-1) < 1)")
        dc, sc = self.digit_classes, self.signal_classes
        if len(dc) != len(sc) or len(dc) < 2:
            raise ConfigError(f"digit_classes {list(dc)} and signal_classes {list(sc)} must pair >= 2 classes")
        if len(set(dc)) != len(dc) or len(set(sc)) != len(sc):
            raise ConfigError(f"classes must be distinct, got {list(dc)} and {list(sc)}")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (data, probes, trainings, store, verdict, figures), not the phenomenon
    "smoke": dict(
        lms_n_train=600,
        lms_n_test=300,
        n_slabs=9,
        dom_n_train=300,
        dom_n_test=200,
        ten_class=False,
        width=64,
        steps=150,
        eval_every=50,
    ),
    "quick": {},
    # more test points and dominoes rows, a wider net and longer training
    "paper": dict(lms_n_test=10000, dom_n_train=8000, dom_n_test=2000, width=300, steps=6000),
}


def linear_probe_acc(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Test accuracy of an L2-regularised logistic regression (sklearn, C = 1) fitted on the training rows: the
    measure of how *simple* (linearly decodable) a block is."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000)
    clf.fit(x_train.double().numpy(), y_train.numpy())
    return float(clf.score(x_test.double().numpy(), y_test.numpy()))


def _blocks(ds: Dataset, setting: str) -> dict[str, list[int]]:
    if setting == "lms":
        return {"linear": [0, 1], "slabs": [1, ds.input_dim]}
    return {k: list(v) for k, v in ds.meta["blocks"].items()}


def _fit(
    cfg: Config, ctx: RunContext, ds: Dataset, name: str, init: tuple[Any, ...], x_tr: torch.Tensor, x_te: torch.Tensor
) -> tuple[History, Callable[[torch.Tensor], float]]:
    """Train the config's MLP (initialised from ``ctx.seed_for(*init)``) on ``(x_tr, ds.y_train)``, evaluated on
    ``(x_te, ds.y_test)``; return its history and the test accuracy of any version of the test inputs."""
    torch.manual_seed(ctx.seed_for(*init))
    net = MLP(ds.input_dim, ds.n_classes, width=cfg.width, depth=cfg.depth).to(ctx.device)
    y_te = ds.y_test.to(ctx.device)
    hist = ctx.train(
        name,
        net,
        (x_tr.to(ctx.device), ds.y_train.to(ctx.device)),
        cfg.train_config(),
        eval_sets={"test": (x_te.to(ctx.device), y_te)},
    )

    def acc(x: torch.Tensor) -> float:
        return float(evaluate(net, (x.to(ctx.device), y_te))["acc"])

    return hist, acc


def _arm(
    cfg: Config, ctx: RunContext, ds: Dataset, setting: str, arm: str, s_cols: slice, c_cols: slice
) -> dict[str, Any]:
    """Train one net (``arm`` "main", or "control" with S shuffled across the training rows) and measure its clean
    and randomised test accuracies."""
    x_tr, x_te = ds.x_train, ds.x_test
    if arm == "control":
        # S carries no label information in training (nor at test): only S^c can be learned
        x_tr = shuffle_columns(x_tr, s_cols, ctx.generator(setting, "control-train"))
        x_te = shuffle_columns(x_te, s_cols, ctx.generator(setting, "control-test"))
    hist, acc = _fit(cfg, ctx, ds, f"{setting}-{arm}", (setting, "init"), x_tr, x_te)

    def randomised(cols: slice, what: str) -> float:
        gens = [ctx.generator(setting, arm, what, i) for i in range(cfg.n_shuffles)]
        return sum(acc(shuffle_columns(x_te, cols, g)) for g in gens) / cfg.n_shuffles

    return {
        "steps": hist.column("step"),
        "train_acc": hist.column("train_acc"),
        "test_acc": hist.column("test_acc"),
        "clean": acc(x_te),
        "s_rand": randomised(s_cols, "s"),
        "sc_rand": randomised(c_cols, "sc"),
    }


def _experiment(cfg: Config, ctx: RunContext, ds: Dataset, setting: str) -> dict[str, Any]:
    """Probe both blocks, pick S by the probes, train the main net and the control, measure randomised accuracy."""
    blocks = _blocks(ds, setting)
    probe = {
        name: linear_probe_acc(ds.x_train[:, a:b], ds.y_train, ds.x_test[:, a:b], ds.y_test)
        for name, (a, b) in blocks.items()
    }
    simple = max(probe, key=lambda k: probe[k])
    complex_ = next(k for k in blocks if k != simple)
    s_cols, c_cols = slice(*blocks[simple]), slice(*blocks[complex_])
    out: dict[str, Any] = {
        "chance": 1.0 / ds.n_classes,
        "probe": probe,
        "simple": simple,
        "complex": complex_,
    }
    for arm in ("main", "control"):
        out[arm] = _arm(cfg, ctx, ds, setting, arm, s_cols, c_cols)
    return out


def with_second_linear(ds: Dataset, margin: float, g: torch.Generator) -> Dataset:
    """``ds`` (LMS) with column 1 replaced by a second linear coordinate of column 0's law, ``sign(y) (margin +
    (1 - margin) U)``, drawn independently of column 0 given the label: two equally simple, fully predictive
    coordinates."""
    y = torch.cat([ds.y_train, ds.y_test])
    lin = (2.0 * y.double() - 1.0) * (margin + (1.0 - margin) * torch.rand(len(y), generator=g, dtype=torch.float64))
    x = torch.cat([ds.x_train, ds.x_test])  # a new tensor: ds is not modified
    x[:, 1] = lin.to(x.dtype)
    n = len(ds.y_train)
    return dataclasses.replace(ds, x_train=x[:n], x_test=x[n:], name=f"{ds.name}-two-linear")


def _equal_arm(cfg: Config, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
    """The control with two equally simple blocks: train on :func:`with_second_linear` data, then shuffle each linear
    coordinate alone across the test rows."""
    ds = with_second_linear(ds, cfg.margin, ctx.generator("lms", "equal", "data"))
    hist, acc = _fit(cfg, ctx, ds, "lms-equal", ("lms", "init"), ds.x_train, ds.x_test)

    def randomised(col: int) -> float:
        gens = [ctx.generator("lms", "equal", col, i) for i in range(cfg.n_shuffles)]
        return sum(acc(shuffle_columns(ds.x_test, slice(col, col + 1), g)) for g in gens) / cfg.n_shuffles

    return {
        "steps": hist.column("step"),
        "test_acc": hist.column("test_acc"),
        "clean": acc(ds.x_test),
        "rand": [randomised(0), randomised(1)],
    }


def equal_min_cost(e: dict[str, Any] | None) -> float | None:
    """``min_k (clean - accuracy with linear coordinate k shuffled)`` of the equal arm; None when it is missing."""
    return None if not e else min(e["clean"] - r for r in e["rand"])


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    lms_ds = lms(
        cfg.lms_n_train, cfg.lms_n_test, n_slabs=cfg.n_slabs, k=cfg.slabs, margin=cfg.margin, seed=ctx.seed_for("lms")
    )
    dom_seed = ctx.seed_for("dominoes")
    dom_ds = dominoes(cfg.dom_n_train, cfg.dom_n_test, dom_seed, cfg.digit_classes, cfg.signal_classes)
    data: dict[str, Any] = {"lms": _experiment(cfg, ctx, lms_ds, "lms"), "dom": _experiment(cfg, ctx, dom_ds, "dom")}
    if cfg.ten_class:
        data["dom10"] = _experiment(cfg, ctx, dominoes(cfg.dom_n_train, cfg.dom_n_test, dom_seed), "dom10")
    # last, so every arm above (and its numbers) is that of a run without it
    if cfg.equal_control:
        data["lms_equal"] = _equal_arm(cfg, ctx, lms_ds)
    return data


def signature(result: Result) -> Verdict:
    d = result.data
    lm, dm = d["lms"], d["dom"]

    def main_checks(name: str, label: str, e: dict[str, Any], s_shuffled: str) -> list[Check]:
        m, gap = e["main"], e["probe"][e["simple"]] - e["probe"][e["complex"]]
        return [
            check(f"{name}_test_acc", m["clean"], ">=", MIN_TEST_ACC, f"{label}: clean test accuracy of the main net"),
            check(
                f"{name}_probe_gap", gap, ">=", MIN_PROBE_GAP, f"{label}: linear probe on S minus on S^c (S measured)"
            ),
            check(
                f"{name}_s_randomized_acc",
                m["s_rand"],
                "<=",
                e["chance"] + S_RAND_ABOVE_CHANCE,
                f"{label}: accuracy with {s_shuffled} (about chance)",
            ),
        ]

    checks = [
        *main_checks("lms", "LMS", lm, "the simple block shuffled across test rows"),
        check(
            "lms_sc_randomized_acc",
            lm["main"]["sc_rand"],
            ">=",
            MIN_SC_RAND_ACC,
            "LMS: accuracy with the complex block shuffled (unchanged)",
        ),
        *main_checks("dom", "dominoes", dm, "the simple half shuffled"),
        check(
            "dom_sc_randomized_cost",
            dm["main"]["clean"] - dm["main"]["sc_rand"],
            "<=",
            MAX_SC_COST,
            "dominoes: accuracy lost when the complex half is shuffled",
        ),
    ]
    for name, e in (("lms", lm), ("dom", dm)):
        c = e["control"]
        checks += [
            check(
                f"control_{name}_sc_learned",
                c["clean"],
                ">=",
                CONTROL_MIN_LEARNED,
                f"{name}: trained with S shuffled, the net learns S^c (test accuracy)",
            ),
            check(
                f"control_{name}_sc_drop",
                c["clean"] - c["sc_rand"],
                ">=",
                CONTROL_MIN_DROP,
                f"{name}: that net then loses its accuracy when S^c is shuffled",
            ),
        ]
    eq = d.get("lms_equal")
    checks.append(
        check(
            "control_lms_equal_min_cost",
            equal_min_cost(eq),
            ">=",
            EQUAL_MIN_COST,
            "LMS with two equally simple linear coordinates: accuracy lost when the less-used one is shuffled "
            "(0 = one ignored)",
        )
    )

    def line(label: str, e: dict[str, Any]) -> str:
        m, c = e["main"], e["control"]
        s, sc = e["simple"], e["complex"]
        return (
            f"{label}: S = {s} (linear probe {fmt(e['probe'][s])} vs {sc} {fmt(e['probe'][sc])}); "
            f"clean {fmt(m['clean'])}, S-rand "
            f"{fmt(m['s_rand'])}, S^c-rand {fmt(m['sc_rand'])}; control (S shuffled in training) "
            f"{fmt(c['clean'])} -> S^c-rand {fmt(c['sc_rand'])}"
        )

    parts = [line("LMS", lm), line("dominoes", dm)]
    if eq:
        parts.append(
            f"two equally simple linear coordinates: clean {fmt(eq['clean'])}, either shuffled "
            f"{fmt(eq['rand'][0])} / {fmt(eq['rand'][1])}"
        )
    if "dom10" in d:
        parts.append(line("ten-class dominoes (reported)", d["dom10"]))
    return Verdict(checks, "; ".join(parts))


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    names = [k for k in ("lms", "dom", "dom10") if k in d]
    titles = {"lms": "LMS-5", "dom": "dominoes (2 classes)", "dom10": "dominoes (10 classes)"}
    eq = d.get("lms_equal")
    fig, axes = new_figure(ncols=len(names) + bool(eq), width=4.2, height=3.8)
    axes = list(axes) if len(names) + bool(eq) > 1 else [axes]
    if eq:
        ax = axes.pop()
        ax.bar(range(3), [eq["clean"], *eq["rand"]], width=0.5, color="C2")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(3), ["clean", "linear 0 shuffled", "linear 1 shuffled"])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy")
        ax.set_title("control: two equally simple linear coordinates", fontsize=9)
    kinds = (("clean", "clean"), ("s_rand", "S shuffled"), ("sc_rand", "S^c shuffled"))
    for ax, name in zip(axes, names, strict=True):
        e = d[name]
        for i, arm in enumerate(("main", "control")):
            vals = [e[arm][k] for k, _ in kinds]
            xs = [j + (i - 0.5) * 0.38 for j in range(len(kinds))]
            ax.bar(xs, vals, width=0.38, label=f"{arm}" + (" (S shuffled in training)" if arm == "control" else ""))
        ax.axhline(e["chance"], color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(kinds)), [k for _, k in kinds])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{titles[name]}: S = {e['simple']}", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    return [save(fig, out_dir, "randomised_accuracy")]
