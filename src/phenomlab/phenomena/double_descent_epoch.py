"""Epoch-wise double descent: test error falls, rises while the noisy labels are memorised, falls again.

Nakkiran, Kaplun, Bansal, Yang, Barak, Sutskever 2019, "Deep double descent: where bigger models and more data
hurt" (arXiv 1912.02292), Section 6.

On the test-error curve smoothed by a centred moving average over ``SMOOTH_WINDOW`` (5) evaluations, ``s(t)``,
with ``rise(t) = s(t) - min_{u <= t} s(u)``, ``fall(t) = s(t) - min_{u >= t} s(u)`` and the peak
``t* = argmax_t min(rise(t), fall(t))`` (the most prominent interior bump), checks:
- ``rise = s(t*) - min_{u <= t*} s(u) >= RISE_MIN`` (0.02, after the first minimum);
- ``fall = s(t*) - min_{u >= t*} s(u) >= FALL_MIN`` (0.02, down to the later minimum);
- recovery: ``fall >= RECOVERY_MIN * rise`` (0.5: the second descent undoes at least half the rise);
- memorisation: the fraction of wrongly labelled training points fitted at ``t*`` is in ``FITTED_AT_PEAK``
  (0.5-0.95: the peak comes while the noisy labels are being memorised, as in the paper's account);
- negative control, the same network, data and initialisation with clean labels: its largest rise over an
  earlier minimum (with or without a fall) is <= ``CONTROL_RATIO`` (1/3) of the noisy run's fall;
- contrast, the same noisy run with a narrower head (``small_width``, 256): its fall after its own peak is
  <= ``SMALL_HEAD_RATIO`` (0.5) of the wide head's (the paper: only large models descend again).

Background, measurements and caveats: docs/phenomena/double-descent-epoch.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset, digits, mnist1d, with_label_noise
from ..errors import ConfigError
from ..models import MLP, SmallCNN
from .config import PhenomenonConfig, data, param, training
from .context import RunContext
from .verdict import Result, Verdict, check

ID = "double-descent-epoch"

SMOOTH_WINDOW = 5  # evaluations in the centred moving average
# quick preset, seeds 0-2 (mean +- seed std) next to each threshold; all fixed before these runs
RISE_MIN = 0.02  # peak minus first minimum (test error, absolute); 0.071 +- 0.013
FALL_MIN = 0.02  # peak minus later minimum; 0.030 +- 0.005
#: recovery: the second descent undoes at least half the rise (issue 11); 0.43 +- 0.02 (fails)
RECOVERY_MIN = 0.5
#: the peak sits while the noisy labels are being memorised: fraction of them fitted at the peak in this range;
#: 0.83 +- 0.04
FITTED_AT_PEAK = (0.5, 0.95)
#: negative control (clean labels, same run): its largest rise over an earlier minimum <= this x the noisy fall;
#: 0.064 +- 0.031
CONTROL_RATIO = 1 / 3
#: contrast: the narrower head's fall after its peak is at most this fraction of the wide head's; 0.50 +- 0.12
SMALL_HEAD_RATIO = 0.5


@dataclass(frozen=True)
class Config(
    PhenomenonConfig,
    data(("mnist1d", "digits"), n_train=1000, n_test=2000),
    training(optimizer="sgd", lr=0.05, batch_size=64, weight_decay=0.0, momentum=0.9),
):
    label_noise: float = param(0.2, "fraction of training labels replaced by a wrong class", ge=0.0, lt=1.0)
    model: str = param("cnn", "MLP or SmallCNN", choices=("mlp", "cnn"))
    width: int = param(2048, "MLP hidden width / SmallCNN penultimate width", gt=0)
    small_width: int = param(256, "the narrower head of the smaller-model contrast run", gt=0)
    depth: int = param(2, "MLP hidden layers", ge=1)
    channels: tuple[int, ...] = param((64, 128), "SmallCNN conv channels", gt=0)
    epochs: int = param(200, "training epochs", gt=0)
    eval_epochs: int = param(5, "epochs between evaluations", gt=0)
    shift_augment: int = param(
        0, "train-time random shift of mnist1d signals by up to this many samples (0: off)", ge=0
    )

    def validate(self) -> None:
        super().validate()
        if self.small_width >= self.width:
            raise ConfigError(f"small_width={self.small_width} must be below width={self.width}")
        if self.epochs < SMOOTH_WINDOW * self.eval_epochs:
            raise ConfigError(
                f"epochs={self.epochs} gives fewer than {SMOOTH_WINDOW} evaluations (eval_epochs={self.eval_epochs})"
            )
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"momentum={self.momentum} applies to optimizer='sgd' only, got {self.optimizer!r}")
        if self.shift_augment and self.dataset != "mnist1d":
            raise ConfigError("shift_augment applies to 1-D mnist1d signals only")
        if self.shift_augment >= 40:
            raise ConfigError(f"shift_augment={self.shift_augment} must be below the signal length 40")


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: checks the pipeline (run, store, verdict, figures), not the phenomenon
    "smoke": dict(
        dataset="digits", model="mlp", width=32, small_width=8, depth=1, epochs=6, eval_epochs=1, batch_size=128
    ),
    # the defaults: wide-head SmallCNN, SGD + momentum, 200 epochs (see docs/phenomena/double-descent-epoch.md)
    "quick": {},
    # the earlier quick setting, Nakkiran et al.'s optimiser (Adam 1e-3) with a 256-unit head: on mnist1d it
    # gives a classical U (seed 0: first min 0.183 at epoch 120, peak 0.263, fall 0.007), not a second descent
    "adam": {"width": 256, "small_width": 64, "optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "epochs": 600},
    # the quick protocol on 4x the data (4,000 mnist1d training and test points): ~4x the quick preset's CPU time.
    # NOT RUN (issue 11 item 3 asked for a paper preset that was run; no time on this box): the earlier paper
    # preset (Adam lr 1e-4, width 256, 4,000 epochs) was not run either and its optimiser gives a classical U here
    "paper": {"n_train": 4000, "n_test": 4000},
}


def _dataset(cfg: Config, seed: int) -> Dataset:
    if cfg.dataset == "digits":
        ds = digits(seed=seed, flatten=cfg.model == "mlp")
    else:
        ds = mnist1d(n_train=cfg.n_train, n_test=cfg.n_test, seed=seed)
    return with_label_noise(ds, cfg.label_noise, seed=seed)


class ShiftAugment(nn.Module):
    """Data augmentation as a layer: in training mode each signal ``x[i]`` (``[N, L]``) is shifted by a
    uniform random offset in ``[-k, k]`` with zero padding; in eval mode it is the identity.

    Nakkiran et al. train their ResNets with random crops, the image analogue of this shift.
    """

    def __init__(self, net: nn.Module, max_shift: int) -> None:
        super().__init__()
        self.net = net
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.max_shift > 0:
            k, (n, length) = self.max_shift, x.shape
            padded = F.pad(x, (k, k))
            offset = torch.randint(0, 2 * k + 1, (n, 1), device=x.device)
            x = torch.gather(padded, 1, offset + torch.arange(length, device=x.device))
        return self.net(x)


def _model(cfg: Config, ds: Dataset, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if cfg.model == "mlp":
        net: nn.Module = MLP(ds.input_dim, ds.n_classes, width=cfg.width, depth=cfg.depth)
    else:
        net = SmallCNN(
            1, ds.n_classes, dims=2 if cfg.dataset == "digits" else 1, channels=cfg.channels, hidden=cfg.width
        )
    return ShiftAugment(net, cfg.shift_augment) if cfg.shift_augment else net


def train_curves(cfg: Config, ctx: RunContext, name: str) -> dict[str, Any]:
    """Train one network of ``cfg`` (run ``name`` in the store); its error curves per evaluation."""
    ds = _dataset(cfg, ctx.seed_for("data"))
    mask = ds.meta["noisy_mask"]
    ds = ds.to(ctx.device)
    mask = mask.to(ctx.device)
    x, y = ds.train()
    eval_sets = {"test": ds.test(), "clean": (x[~mask], y[~mask])}
    if bool(mask.any()):
        # accuracy w.r.t. the *noisy* labels on the corrupted points = fraction of them memorised
        eval_sets["noisy"] = (x[mask], y[mask])
    # the same initialisation in every condition (the heads of different width differ from their first layer on)
    model = _model(cfg, ds, ctx.seed_for("init")).to(ctx.device)
    steps_per_epoch = math.ceil(ds.n_train / (cfg.batch_size or ds.n_train))
    tcfg = cfg.train_config(steps=cfg.epochs * steps_per_epoch, eval_every=cfg.eval_epochs * steps_per_epoch)
    hist = ctx.train(name, model, ds.train(), tcfg, eval_sets=eval_sets)
    recs = hist.records
    return {
        "epochs": [r["step"] / steps_per_epoch for r in recs],
        "train_error": [1.0 - r["train_acc"] for r in recs],
        "test_error": [1.0 - r["test_acc"] for r in recs],
        "clean_train_error": [1.0 - r["clean_acc"] for r in recs],
        "noisy_fitted": [r["noisy_acc"] for r in recs] if "noisy" in eval_sets else None,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
        "label_noise": cfg.label_noise,
        "width": cfg.width,
    }


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    out = train_curves(cfg, ctx, "main")
    # negative control: the same network, data and initialisation with the true labels
    out["control_clean"] = train_curves(replace(cfg, label_noise=0.0), ctx, "clean")
    # contrast: the same noisy run with a narrower last hidden layer (a "medium" model in Nakkiran et al.'s sense)
    out["small_head"] = train_curves(replace(cfg, width=cfg.small_width), ctx, "small_head")
    return out


def smooth(values: list[float], window: int = SMOOTH_WINDOW) -> list[float]:
    """Centred moving average ``s_i = mean(e_j : |j - i| <= window // 2)``, truncated at the ends."""
    h = window // 2
    n = len(values)
    return [sum(values[max(0, i - h) : i + h + 1]) / len(values[max(0, i - h) : i + h + 1]) for i in range(n)]


def bump(curve: list[float]) -> dict[str, Any]:
    """The most prominent interior peak of ``curve``: ``t* = argmax_t min(rise(t), fall(t))`` with
    ``rise(t) = s_t - min_{u<=t} s_u`` and ``fall(t) = s_t - min_{u>=t} s_u``.

    Returns indices ``first_min``, ``peak``, ``later_min`` and the values ``rise``, ``fall``.
    """
    n = len(curve)
    run_min, arg_min = [0.0] * n, [0] * n
    best, best_i = math.inf, 0
    for i, v in enumerate(curve):
        if v < best:
            best, best_i = v, i
        run_min[i], arg_min[i] = best, best_i
    suf_min, suf_arg = [0.0] * n, [0] * n
    best, best_i = math.inf, n - 1
    for i in range(n - 1, -1, -1):
        if curve[i] <= best:
            best, best_i = curve[i], i
        suf_min[i], suf_arg[i] = best, best_i
    height = [min(curve[i] - run_min[i], curve[i] - suf_min[i]) for i in range(n)]
    # ties (e.g. no interior bump at all) go to the largest rise: a classical U then reports its overfitting
    p = max(range(n), key=lambda i: (height[i], curve[i] - run_min[i], -i))
    return {
        "first_min": arg_min[p],
        "peak": p,
        "later_min": suf_arg[p],
        "rise": curve[p] - run_min[p],
        "fall": curve[p] - suf_min[p],
    }


def largest_rise(curve: list[float]) -> float:
    """``max_t (s_t - min_{u <= t} s_u)`` of the smoothed ``curve``: any rise over an earlier minimum, with or
    without a fall after it (for a control this is the conservative measure of a bump)."""
    s = smooth(curve)
    return max(v - min(s[: i + 1]) for i, v in enumerate(s))


def measures(d: dict[str, Any]) -> dict[str, Any]:
    """The deciding numbers of a result's data ``d``: the noisy run's bump, the fraction of noisy labels fitted at
    its peak, the clean control's largest rise and the smaller head's bump (None where a run is missing)."""
    b = bump(smooth(d["test_error"]))
    nf = d.get("noisy_fitted")
    out: dict[str, Any] = {**b, "fitted_at_peak": None if nf is None else nf[b["peak"]]}
    out["recovery"] = b["fall"] / b["rise"] if b["rise"] > 0 else None
    out["clean_rise"] = largest_rise(d["control_clean"]["test_error"]) if "control_clean" in d else None
    out["clean_ratio"] = out["clean_rise"] / b["fall"] if out["clean_rise"] is not None and b["fall"] > 0 else None
    out["small"] = bump(smooth(d["small_head"]["test_error"])) if "small_head" in d else None
    out["small_ratio"] = (
        max(out["small"]["fall"], 0.0) / b["fall"] if out["small"] is not None and b["fall"] > 0 else None
    )
    return out


def signature(result: Result) -> Verdict:
    d = result.data
    s = smooth(d["test_error"])
    b = measures(d)
    ep = d["epochs"]
    i1, ip, i2 = b["first_min"], b["peak"], b["later_min"]
    lo, hi = FITTED_AT_PEAK
    checks = [
        check(
            "rise after first minimum",
            b["rise"],
            ">=",
            RISE_MIN,
            f"smoothed test error at the peak minus the first minimum (window {SMOOTH_WINDOW} evaluations)",
        ),
        check(
            "fall after the peak", b["fall"], ">=", FALL_MIN, "smoothed test error at the peak minus the later minimum"
        ),
        check("recovery fall/rise", b["recovery"], ">=", RECOVERY_MIN, "the second descent undoes >= half the rise"),
        check(
            "noisy fitted at the peak >= 0.5",
            b["fitted_at_peak"],
            ">=",
            lo,
            "the peak comes after half the wrongly labelled training points are fitted",
        ),
        check(
            "noisy fitted at the peak <= 0.95",
            b["fitted_at_peak"],
            "<=",
            hi,
            "the peak comes before 95% of the wrongly labelled training points are fitted",
        ),
        check(
            "control_clean_rise/noisy_fall",
            b["clean_ratio"],
            "<=",
            CONTROL_RATIO,
            "clean labels (same net, data, init): largest rise of test error <= 1/3 of the noisy run's fall",
        ),
        check(
            "small_head_fall/wide_head_fall",
            b["small_ratio"],
            "<=",
            SMALL_HEAD_RATIO,
            "a narrower head (small_width) on the same noisy data falls after its peak <= half as much",
        ),
    ]
    nf = d.get("noisy_fitted")
    fitted = (
        ""
        if nf is None
        else f"; noisy labels fitted {nf[i1]:.2f} / {nf[ip]:.2f} / {nf[i2]:.2f} (first min / peak / later min)"
    )
    largest = largest_rise(d["test_error"])
    summary = (
        f"smoothed test error: first min {s[i1]:.4f} at epoch {ep[i1]:g}, peak {s[ip]:.4f} at epoch "
        f"{ep[ip]:g}, later min {s[i2]:.4f} at epoch {ep[i2]:g}, end {s[-1]:.4f} "
        f"(largest rise over an earlier minimum, with or without a fall after it: {largest:.4f}); "
        f"final train error {d['train_error'][-1]:.4f}{fitted}; clean control largest rise "
        f"{_num(b['clean_rise'])}; small head (width {d.get('small_head', {}).get('width')}) rise / fall "
        f"{_num((b['small'] or {}).get('rise'))} / {_num((b['small'] or {}).get('fall'))}"
    )
    return Verdict(checks, summary)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def plot(result: Result, out_dir: Path) -> list[Path]:
    from ..report.figures import new_figure, save

    d = result.data
    ep = d["epochs"]
    s = smooth(d["test_error"])
    b = bump(s)
    fig, ax = new_figure(width=6.4, height=4.2)
    ax.plot(ep, d["test_error"], color="C1", alpha=0.35, lw=0.8)
    ax.plot(ep, s, color="C1", label=f"test error (smoothed, {SMOOTH_WINDOW} evals)")
    ax.plot(ep, d["train_error"], color="C0", label="train error (noisy labels)")
    if d.get("noisy_fitted") is not None:
        ax.plot(ep, d["noisy_fitted"], color="C2", ls="--", label="noisy labels fitted")
    if "control_clean" in d:
        cc = d["control_clean"]
        ax.plot(cc["epochs"], smooth(cc["test_error"]), color="C7", label="test error, clean labels (control)")
    if "small_head" in d:
        sh = d["small_head"]
        ax.plot(sh["epochs"], smooth(sh["test_error"]), color="C4", label=f"test error, head width {sh['width']}")
    for key, name, mk, dy in (
        ("first_min", "first min", "^", -22),
        ("peak", "peak", "v", 10),
        ("later_min", "later min", "^", -22),
    ):
        i = b[key]
        ax.plot(ep[i], s[i], mk, color="k", ms=6)
        ax.annotate(
            f"{name} {s[i]:.3f}\n(epoch {ep[i]:g})",
            (ep[i], s[i]),
            textcoords="offset points",
            xytext=(0, dy),
            ha="center",
            fontsize=7,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("error")
    ax.set_ylim(-0.02, 1.02)
    c = result.config
    ax.set_title(
        f"epoch-wise double descent: {c['model']} on {c['dataset']}, {c['label_noise']:.0%} label noise, "
        f"{c['optimizer']} lr={c['lr']}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return [save(fig, out_dir, "test_error_vs_epoch")]
