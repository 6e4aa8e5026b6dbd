"""Train many small MLPs of one architecture family at once (an *ensemble* of independent models).

Sweeps such as model-wise double descent train dozens of small networks (widths x seeds) on the
same data. Trained one after the other, each optimiser step of each model pays a fixed Python and
kernel-launch cost (~0.3-0.6 ms on a CPU) that dwarfs the arithmetic of a narrow network. Here the
members' parameters are *stacked* and a whole group is trained with a handful of batched kernels.

How it works
------------
Members (width ``w_m``, seed ``s_m``) are sorted by width and grouped into *width buckets*. A bucket
of ``k`` members padded to its widest member ``W`` holds, for each layer, one stacked weight
``[k, d_in, d_out]`` and bias ``[k, 1, d_out]`` (``d = W`` for hidden layers). With a batch ``x``
shared by all members, a bucket's forward pass is::

    h_1 = mask * act(x @ W_1 + b_1)                  # matmul broadcasts x over the k members
    h_l = mask * act(baddbmm(b_l, h_{l-1}, W_l))     # one batched matmul per layer
    out = baddbmm(b_out, h_L, W_out)                 # [k, B, C]

``mask[m, 0, j] = 1[j < w_m]`` zeroes the padded units *after* the activation, so for any activation
(even sigmoid, act(0) != 0) the padded units contribute exactly 0 to the output and receive exactly
0 gradient: member ``m`` computes the function of a standalone ``MLP`` of width ``w_m`` and gets the
same gradients. Padded weights start at 0, get zero gradient and therefore never move under SGD,
Adam or AdamW (weight decay keeps 0 at 0), so :meth:`MLPEnsemble.member` can export a member as a
plain :class:`phenomlab.models.MLP` by slicing.

Independence. The training objective is ``sum_m L_m(theta_m)``, the SUM over members of each
member's own mean loss (not the mean over members, which would scale every gradient by 1/M). Since
``L_m`` depends only on ``theta_m``, ``d/d theta_m sum_k L_k = dL_m/d theta_m``: each member's slice
of the stacked gradient is exactly its standalone gradient, and the gradients of different members
never mix. SGD (momentum, Nesterov), Adam and AdamW are elementwise in the parameters, so one torch
optimiser over the stacked tensors keeps a per-member independent state for free. The two
non-elementwise pieces are done per member: gradient clipping uses each member's own norm, and NaN
detection reports the member index and step (a diverged member stays confined to its own slice).

Why it is faster. Per step the ensemble launches O(#buckets x #layers) kernels instead of
O(#members x #layers), and the optimiser updates O(#buckets x #layers) tensors instead of
O(#members x #layers). Bucketing bounds the padding waste: a single bucket padded to width 512
would spend most of its arithmetic on zeros for a log-spaced sweep 1..512, and one bucket per
member is the sequential loop again. :func:`plan_buckets` picks contiguous groups of the sorted
widths minimising ``sum_b (overhead + k_b * W_b)`` (a cost model in "hidden units"), by dynamic
programming. Measured on one CPU thread (``benchmarks/ensemble.py``): batched matmuls on stacked
weights beat ``torch.func.vmap(functional_call)`` of the same members (vmap adds per-call
transform overhead and does not share the first-layer input), so this module uses ``matmul``/
``baddbmm``. The gain is largest for narrow members and small batches; for wide members with large
batches both approaches are bound by the same arithmetic and memory traffic.

All members see the same minibatches (the order :func:`phenomlab.train.train` would draw with the
same ``seed``), so a member trained here matches the model trained alone by ``train``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, PhenomlabError, TrainingDiverged
from ..models import MLP
from ..models.mlp import ACTIVATIONS, activation
from .loop import TrainConfig, _batch_indices, _Progress, _save, lr_factor, make_optimizer

Batch = tuple[torch.Tensor, torch.Tensor]

#: default cost, in padded hidden units, of one extra bucket (its fixed kernel-launch and optimiser
#: cost): measured on a CPU core at batch 64-128 one bucket costs about as much as 100-300 units.
BUCKET_OVERHEAD = 128.0


class EnsembleDiverged(TrainingDiverged):
    """A member's loss became NaN/inf: carries the member index (``member``) and the ``step``."""

    def __init__(self, step: int, member: int, value: float | None = None, width: int | None = None) -> None:
        self.member = member
        what = f"loss of ensemble member {member}" + (f" (width {width})" if width is not None else "")
        super().__init__(step, what, value)


# ---------------------------------------------------------------------------------------------
# bucketing
# ---------------------------------------------------------------------------------------------


def plan_buckets(
    widths: Sequence[int], overhead: float = BUCKET_OVERHEAD, max_units: int | None = None
) -> list[list[int]]:
    """Group member indices into width buckets, minimising ``sum_b (overhead + k_b * max_width_b)``.

    Members are sorted by width and each bucket is a contiguous run of the sorted list, so the
    optimum is found exactly by dynamic programming over split points (O(M^2)). ``overhead = 0``
    gives one bucket per distinct width (no padding); ``overhead = inf`` a single bucket.
    ``max_units`` caps ``k_b * max_width_b`` (keeps a bucket's activations cache-sized).
    """
    if not widths:
        return []
    order = sorted(range(len(widths)), key=lambda i: (widths[i], i))
    ws = [widths[i] for i in order]
    n = len(ws)
    if math.isinf(overhead):
        if max_units is None:
            return [order]
        overhead = float(n * ws[-1] + 1)  # larger than any saving from a split
    overhead = max(overhead, 1e-9)  # ties go to fewer buckets: equal widths are never split
    # best[j] = cheapest cost of the first j sorted members; cut[j] = start of the last bucket
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):
            units = (j - i) * ws[j - 1]
            if max_units is not None and units > max_units and j - i > 1:
                break
            c = best[i] + overhead + units
            if c < best[j]:
                best[j], cut[j] = c, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        groups.append(order[i:j])
        j = i
    return groups[::-1]


# ---------------------------------------------------------------------------------------------
# the stacked model
# ---------------------------------------------------------------------------------------------


class _Bucket(nn.Module):
    """``k`` members padded to width ``W``: per layer a stacked weight ``[k, d_in, d_out]``."""

    def __init__(
        self, in_dim: int, out_dim: int, width: int, depth: int, k: int, bias: bool, member_widths: Sequence[int]
    ) -> None:
        super().__init__()
        self.width = width
        self.depth = depth
        dims = [in_dim] + [width] * depth + [out_dim]
        self.weights = nn.ParameterList(nn.Parameter(torch.zeros(k, dims[i], dims[i + 1])) for i in range(depth + 1))
        self.biases = (
            nn.ParameterList(nn.Parameter(torch.zeros(k, 1, dims[i + 1])) for i in range(depth + 1)) if bias else None
        )
        w = torch.tensor(list(member_widths))
        self.register_buffer("mask", (torch.arange(width)[None, :] < w[:, None]).float()[:, None, :], persistent=False)
        self.padded = bool((w < width).any())

    def forward(self, x: torch.Tensor, act: nn.Module) -> torch.Tensor:
        h = x
        for i in range(self.depth + 1):
            wt = self.weights[i]
            b = self.biases[i] if self.biases is not None else None
            if h.dim() == 2:
                # the batch is shared: matmul broadcasts it over members without copying it k times
                h = torch.matmul(h, wt)
                if b is not None:
                    h = h + b
            elif b is not None:
                h = torch.baddbmm(b, h, wt)
            else:
                h = torch.bmm(h, wt)
            if i < self.depth:
                h = act(h)
                if self.padded:
                    h = h * self.mask
        return h


class MLPEnsemble(nn.Module):
    """``M`` independent :class:`phenomlab.models.MLP` members (same in/out dims, depth, activation,
    bias; any widths) stored as stacked tensors in width buckets (see the module docstring).

    ``forward(x)`` with ``x`` of shape ``[B, ...]`` (flattened like ``MLP``) returns ``[M, B, out]``
    in member order. Member ``m`` is initialised exactly like ``torch.manual_seed(seeds[m]);
    MLP(in_dim, out_dim, widths[m], depth, activation_name, bias)`` (the global RNG is restored).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        widths: Sequence[int],
        depth: int = 1,
        activation_name: str = "relu",
        bias: bool = True,
        seeds: Sequence[int] | None = None,
        buckets: str | Sequence[Sequence[int]] = "auto",
        bucket_overhead: float = BUCKET_OVERHEAD,
        init: bool = True,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths:
            raise PhenomlabError("an ensemble needs at least one member")
        if min(widths) <= 0 or in_dim <= 0 or out_dim <= 0:
            raise PhenomlabError(f"ensemble sizes must be positive: in={in_dim}, out={out_dim}, widths={widths}")
        if depth < 1:
            raise PhenomlabError(f"ensemble depth must be >= 1, got {depth}")
        activation(activation_name)  # validates the name
        seeds = list(range(len(widths))) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(widths):
            raise PhenomlabError(f"{len(seeds)} seeds for {len(widths)} widths")
        self.in_dim, self.out_dim, self.depth = in_dim, out_dim, depth
        self.activation_name, self.bias = activation_name, bias
        self.widths, self.seeds = widths, seeds
        self.act = activation(activation_name)
        if buckets == "auto":
            groups = plan_buckets(widths, bucket_overhead)
        elif buckets == "exact":
            groups = plan_buckets(widths, 0.0)
        elif buckets == "single":
            groups = plan_buckets(widths, math.inf)
        elif isinstance(buckets, str):
            raise PhenomlabError(f"buckets must be 'auto', 'exact', 'single' or index groups, got {buckets!r}")
        else:
            groups = [[int(i) for i in g] for g in buckets]
            flat = sorted(i for g in groups for i in g)
            if flat != list(range(len(widths))) or any(not g for g in groups):
                raise PhenomlabError("bucket groups must partition the member indices 0..M-1")
        self.groups = groups
        self.buckets = nn.ModuleList(
            _Bucket(in_dim, out_dim, max(widths[i] for i in g), depth, len(g), bias, [widths[i] for i in g])
            for g in groups
        )
        order = [i for g in groups for i in g]
        # position of member m in the concatenation of bucket outputs
        self.register_buffer("_inverse", torch.argsort(torch.tensor(order)), persistent=False)
        self._where = {m: (b, j) for b, g in enumerate(groups) for j, m in enumerate(g)}
        if init:
            for m, s in enumerate(seeds):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(s)
                    ref = MLP(in_dim, out_dim, widths[m], depth, activation_name, bias)
                self.set_member(m, ref)

    # -- members -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.widths)

    @classmethod
    def from_models(cls, models: Sequence[MLP], **kwargs: Any) -> MLPEnsemble:
        """Stack existing :class:`MLP` s (same in/out dims, depth, activation, bias) into an ensemble."""
        if not models:
            raise PhenomlabError("from_models needs at least one model")
        first = models[0]
        act_name = next(k for k, v in ACTIVATIONS.items() if isinstance(first.act1, v))
        bias = first.out.bias is not None
        ens = cls(
            first.fc1.in_features,
            first.out.out_features,
            [m.width for m in models],
            first.depth,
            act_name,
            bias,
            init=False,
            **kwargs,
        )
        for i, m in enumerate(models):
            ens.set_member(i, m)
        return ens.to(first.out.weight.device)

    def _layers(self, model: MLP) -> list[nn.Linear]:
        return [getattr(model, f"fc{i}") for i in range(1, self.depth + 1)] + [model.out]

    @torch.no_grad()
    def set_member(self, m: int, model: MLP) -> None:
        """Copy a plain MLP's parameters into member ``m`` (padding set to 0)."""
        if model.depth != self.depth or model.width != self.widths[m]:
            raise PhenomlabError(
                f"member {m} is width {self.widths[m]} depth {self.depth}; got width {model.width} depth {model.depth}"
            )
        b, j = self._where[m]
        bucket = self.buckets[b]
        for i, lin in enumerate(self._layers(model)):
            w = bucket.weights[i]
            w[j].zero_()
            w[j, : lin.in_features, : lin.out_features] = lin.weight.detach().t().to(w)
            if bucket.biases is not None:
                bb = bucket.biases[i]
                bb[j].zero_()
                bb[j, 0, : lin.out_features] = lin.bias.detach().to(bb)

    @torch.no_grad()
    def member(self, m: int) -> MLP:
        """Member ``m`` as a standalone :class:`phenomlab.models.MLP` (a copy, on the same device)."""
        b, j = self._where[m]
        bucket = self.buckets[b]
        dev = bucket.weights[0].device
        model = MLP(self.in_dim, self.out_dim, self.widths[m], self.depth, self.activation_name, self.bias).to(dev)
        for i, lin in enumerate(self._layers(model)):
            lin.weight.copy_(bucket.weights[i][j, : lin.in_features, : lin.out_features].t())
            if bucket.biases is not None:
                lin.bias.copy_(bucket.biases[i][j, 0, : lin.out_features])
        return model

    def to_models(self) -> list[MLP]:
        """Every member as a standalone MLP, in member order."""
        return [self.member(m) for m in range(len(self))]

    def member_grad(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s slice of the stacked gradients, keyed like ``MLP.named_parameters()``."""
        b, j = self._where[m]
        bucket = self.buckets[b]
        names = [f"fc{i}" for i in range(1, self.depth + 1)] + ["out"]
        dims = [self.in_dim] + [self.widths[m]] * self.depth + [self.out_dim]
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(names):
            g = bucket.weights[i].grad
            out[f"{name}.weight"] = g[j, : dims[i], : dims[i + 1]].t() if g is not None else None  # type: ignore
            if bucket.biases is not None:
                gb = bucket.biases[i].grad
                out[f"{name}.bias"] = gb[j, 0, : dims[i + 1]] if gb is not None else None  # type: ignore
        return out

    # -- forward -------------------------------------------------------------------------------

    def bucket_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per bucket the outputs ``[k_b, B, out]`` (members in ``self.groups[b]`` order)."""
        x = x.flatten(1)
        return [bucket(x, self.act) for bucket in self.buckets]

    def gather(self, per_bucket: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-bucket tensors (leading dim = bucket members) into member order."""
        return torch.cat(list(per_bucket))[self._inverse]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gather(self.bucket_outputs(x))

    def member_losses(self, x: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy") -> torch.Tensor:
        """``[M]`` vector of each member's mean loss on ``(x, y)``."""
        return self.gather([per_member_loss(o, y, loss) for o in self.bucket_outputs(x)])


def per_member_loss(
    out: torch.Tensor, y: torch.Tensor, loss: str = "cross_entropy", reduction: str = "mean"
) -> torch.Tensor:
    """Loss of each member: ``out`` is ``[k, B, C]``, ``y`` is ``[B]`` (shared by all members).

    cross entropy: ``L_m = mean_i (logsumexp_c out[m,i,c] - out[m,i,y_i])``;
    mse (as :func:`phenomlab.train.loss_fn`): ``L_m = mean_i sum_c (out[m,i,c] - onehot(y_i)_c)^2``.
    ``reduction='sum'`` sums over the batch instead (for chunked evaluation).
    """
    k, b, c = out.shape
    if loss == "cross_entropy":
        if y.dtype != torch.long:
            raise PhenomlabError("cross_entropy needs integer class labels")
        tgt = out.gather(2, y.view(1, b, 1).expand(k, b, 1)).squeeze(2)
        per = torch.logsumexp(out, 2) - tgt
    elif loss == "mse":
        target = F.one_hot(y, c).to(out.dtype) if y.dtype == torch.long else y.view(b, c).to(out.dtype)
        per = (out - target).pow(2).sum(2)
    else:
        raise ConfigError(f"loss must be cross_entropy or mse, got {loss!r}")
    return per.mean(1) if reduction == "mean" else per.sum(1)


# ---------------------------------------------------------------------------------------------
# history and evaluation
# ---------------------------------------------------------------------------------------------


@dataclass
class EnsembleHistory:
    """Evaluation records: ``{"step": s, "train_loss": [M values], "test_err": [M values], ...}``.

    ``diverged`` maps a member index to the step where its loss became NaN/inf.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    stopped_early: bool = False
    wall_time: float = 0.0
    diverged: dict[int, int] = field(default_factory=dict)

    def series(self, name: str) -> tuple[list[int], list[list[float]]]:
        """Steps and, per step, the M member values of ``name``."""
        steps, values = [], []
        for r in self.records:
            if name in r:
                steps.append(int(r["step"]))
                values.append(list(r[name]))
        return steps, values

    def last(self, name: str) -> list[float]:
        for r in reversed(self.records):
            if name in r:
                return list(r[name])
        raise KeyError(name)

    def member(self, m: int) -> dict[str, list[float]]:
        """Member ``m``'s curves: ``{"step": [...], "test_err": [...], ...}``."""
        out: dict[str, list[float]] = {}
        for r in self.records:
            for k, v in r.items():
                out.setdefault(k, []).append(float(v) if k == "step" else float(v[m]))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["diverged"] = {str(k): v for k, v in self.diverged.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnsembleHistory:
        return cls(
            records=list(d["records"]),
            finished=bool(d["finished"]),
            stopped_early=bool(d.get("stopped_early", False)),
            wall_time=float(d.get("wall_time", 0.0)),
            diverged={int(k): int(v) for k, v in d.get("diverged", {}).items()},
        )


@torch.no_grad()
def evaluate_ensemble(
    ens: MLPEnsemble, data: Batch, loss: str = "cross_entropy", batch_size: int = 8192
) -> dict[str, list[float]]:
    """Per-member mean ``loss`` and, for class labels, ``acc`` and ``err = 1 - acc`` on ``data``."""
    was_training = ens.training
    ens.eval()
    x, y = data
    n = len(y)
    classes = y.dtype == torch.long
    tot = [torch.zeros(len(b.mask), device=x.device) for b in ens.buckets]
    cor = [torch.zeros(len(b.mask), dtype=torch.long, device=x.device) for b in ens.buckets]
    for i in range(0, n, batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        for b, out in enumerate(ens.bucket_outputs(xb)):
            tot[b] += per_member_loss(out, yb, loss, reduction="sum")
            if classes:
                cor[b] += (out.argmax(2) == yb).sum(1)
    ens.train(was_training)
    res = {"loss": (ens.gather(tot) / max(n, 1)).tolist()}
    if classes:
        acc = [c / max(n, 1) for c in ens.gather(cor).tolist()]  # exact counts, as evaluate()
        res["acc"] = acc
        res["err"] = [1.0 - a for a in acc]
    return res


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


@dataclass
class EnsembleState:
    """What an ensemble callback sees at an evaluation step. Set ``stop = True`` to end training."""

    step: int
    ensemble: MLPEnsemble
    optimizer: torch.optim.Optimizer
    metrics: dict[str, list[float]]
    history: EnsembleHistory
    config: TrainConfig
    stop: bool = False


EnsembleCallback = Callable[[EnsembleState], Mapping[str, Sequence[float]] | None]
Logger = Callable[[int, Mapping[str, float]], None]


@torch.no_grad()
def clip_member_grads_(ens: MLPEnsemble, max_norm: float) -> torch.Tensor:
    """Clip each member's gradient to norm ``max_norm`` on its own (as ``clip_grad_norm_`` would on
    the standalone model: ``g *= min(1, max_norm / (||g_m|| + 1e-6))``); returns the ``[M]`` norms."""
    norms = []
    for bucket in ens.buckets:
        params = [p for p in bucket.parameters() if p.grad is not None]
        sq = sum(p.grad.pow(2).flatten(1).sum(1) for p in params)
        norm = torch.as_tensor(sq).sqrt()
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(coef.view(-1, *([1] * (p.grad.dim() - 1))))
        norms.append(norm)
    return ens.gather(norms)


def train_ensemble(
    ens: MLPEnsemble,
    train_data: Batch,
    cfg: TrainConfig,
    *,
    eval_sets: Mapping[str, Batch] | None = None,
    callbacks: Iterable[EnsembleCallback] = (),
    logger: Logger | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress: bool | str = False,
    on_nan: str = "raise",
    optimizer: torch.optim.Optimizer | None = None,
) -> EnsembleHistory:
    """Train every member of ``ens`` in place on ``train_data = (x, y)``; see the module docstring.

    ``cfg`` is the :class:`TrainConfig` of :func:`phenomlab.train.train` with the same meaning
    (optimiser, lr, schedule, weight decay, momentum, batch size, loss, ``grad_clip`` per member,
    ``eval_every``) and ``seed`` draws the same minibatch order, so each member follows the
    trajectory its standalone training would (up to float summation order).

    At step 0, every ``eval_every`` steps and at the end each member is evaluated on the training
    set and each of ``eval_sets``: record keys ``train_loss``, ``train_acc``, ``train_err``,
    ``{name}_loss``, ... each a list of M values. ``logger(step, metrics)`` gets them flattened as
    ``"{metric}/{member}"``.

    ``on_nan='raise'`` raises :class:`EnsembleDiverged` (member index and step) when a member's
    loss becomes NaN/inf; ``'continue'`` records ``history.diverged[member] = step`` and trains the
    others on (a diverged member cannot contaminate the others: see "Independence").
    ``checkpoint``: resumable like :func:`phenomlab.train.train`.
    """
    cfg.validate()
    if on_nan not in ("raise", "continue"):
        raise ConfigError(f"on_nan must be 'raise' or 'continue', got {on_nan!r}")
    x, y = train_data
    n = len(y)
    if n == 0:
        raise ConfigError("training set is empty")
    device = next(ens.parameters()).device
    # stacked tensors are few and large: the fused Adam kernel saves ~20% of a double-descent sweep's step
    opt = optimizer or make_optimizer(ens.parameters(), cfg, fused=True)
    base_lrs = [g["lr"] for g in opt.param_groups]
    eval_sets = dict(eval_sets or {})
    callbacks = list(callbacks)
    full_batch = cfg.batch_size is None or cfg.batch_size >= n
    # objective = SUM over members of each member's mean loss: member m's gradient is then exactly
    # dL_m/dtheta_m (no 1/M factor, no mixing), so the elementwise optimisers act per member.
    lf = cfg.loss

    history = EnsembleHistory()
    start = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        ens.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = EnsembleHistory.from_dict(state["history"])
        start = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        if history.finished:
            return history

    def save(step: int) -> None:
        if ckpt_path is not None:
            _save(
                ckpt_path,
                {
                    "model": ens.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "history": history.to_dict(),
                    "torch_rng": torch.get_rng_state(),
                },
            )

    def do_eval(step: int) -> bool:
        metrics: dict[str, list[float]] = {}
        for k, v in evaluate_ensemble(ens, (x, y), cfg.loss, cfg.eval_batch_size).items():
            metrics[f"train_{k}"] = v
        for name, data in eval_sets.items():
            for k, v in evaluate_ensemble(ens, data, cfg.loss, cfg.eval_batch_size).items():
                metrics[f"{name}_{k}"] = v
        for m, v in enumerate(metrics["train_loss"]):
            if not math.isfinite(v) and m not in history.diverged:
                if on_nan == "raise":
                    raise EnsembleDiverged(step, m, v, ens.widths[m])
                history.diverged[m] = step
        ts = EnsembleState(step, ens, opt, metrics, history, cfg)
        for cb in callbacks:
            extra = cb(ts)
            if extra:
                metrics.update({k: [float(a) for a in v] for k, v in extra.items()})
        record: dict[str, Any] = {"step": step, **metrics}
        if history.records and history.records[-1]["step"] == step:
            history.records[-1] = record
        else:
            history.records.append(record)
        if logger is not None:
            logger(step, {f"{k}/{m}": val for k, vs in metrics.items() for m, val in enumerate(vs)})
        return ts.stop

    bar = _Progress(progress, cfg.steps, start)
    t0 = time.perf_counter() - history.wall_time
    last_save = time.perf_counter()
    stopped = False
    ens.train()
    try:
        if start == 0 or not history.records or history.records[-1]["step"] != start:
            stopped = do_eval(start)
        step = start
        while step < cfg.steps and not stopped:
            f = lr_factor(step, cfg)
            for g, base in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = base * f
            if full_batch:
                xb, yb = x, y
            else:
                idx = _batch_indices(n, cfg.batch_size, step, seed, x.device)  # type: ignore[arg-type]
                xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            xb = xb.flatten(1)
            losses = [per_member_loss(out, yb, lf) for out in ens.bucket_outputs(xb)]
            total = torch.cat(losses)
            finite = torch.isfinite(total)
            if not bool(finite.all()):
                bad = ens.gather([finite]).logical_not().nonzero().flatten().tolist()
                new = [m for m in bad if m not in history.diverged]
                if new and on_nan == "raise":
                    m = new[0]
                    raise EnsembleDiverged(step, m, float(ens.gather(losses)[m]), ens.widths[m])
                for m in new:
                    history.diverged[m] = step
            total.sum().backward()
            if cfg.grad_clip is not None:
                clip_member_grads_(ens, cfg.grad_clip)
            opt.step()
            step += 1
            if step % cfg.eval_every == 0 or step == cfg.steps:
                stopped = do_eval(step)
                bar.update(step, {k: sum(v) / len(v) for k, v in history.records[-1].items() if k != "step"})
                if time.perf_counter() - last_save > cfg.checkpoint_seconds:
                    history.wall_time = time.perf_counter() - t0
                    save(step)
                    last_save = time.perf_counter()
    finally:
        bar.close()
    history.finished = True
    history.stopped_early = stopped
    history.wall_time = time.perf_counter() - t0
    save(step if not stopped else history.records[-1]["step"])
    return history


__all__ = [
    "BUCKET_OVERHEAD",
    "EnsembleDiverged",
    "EnsembleHistory",
    "EnsembleState",
    "MLPEnsemble",
    "clip_member_grads_",
    "evaluate_ensemble",
    "per_member_loss",
    "plan_buckets",
    "train_ensemble",
]
