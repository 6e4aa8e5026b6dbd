"""Many independent MLPs of one architecture family stored as stacked tensors (an *ensemble*).

Members are grouped into width buckets; a bucket of ``k`` members padded to width ``W`` holds one
``[k, d_in, d_out]`` weight per layer, and a mask after each activation keeps every member the exact
function of a standalone :class:`phenomlab.models.MLP`. How, why and how fast: docs/ENSEMBLE.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, PhenomlabError
from .mlp import ACTIVATIONS, MLP, activation
from .parametrisation import ParamRule

#: default cost, in padded hidden units, of one extra bucket (its fixed kernel-launch and optimiser
#: cost): measured on a CPU core at batch 64-128 one bucket costs about as much as 100-300 units.
BUCKET_OVERHEAD = 128.0


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


class _Bucket(nn.Module):
    """``k`` members padded to width ``W``: per layer a stacked weight ``[k, d_in, d_out]``."""

    def __init__(
        self, in_dim: int, out_dim: int, width: int, depth: int, k: int, bias: bool, member_widths: Sequence[int]
    ) -> None:
        super().__init__()
        self.width, self.depth = width, depth
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
    bias; any widths) stored as stacked tensors in width buckets (docs/ENSEMBLE.md).

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
        overheads = {"auto": bucket_overhead, "exact": 0.0, "single": math.inf}
        if isinstance(buckets, str):
            if buckets not in overheads:
                raise PhenomlabError(f"buckets must be 'auto', 'exact', 'single' or index groups, got {buckets!r}")
            groups = plan_buckets(widths, overheads[buckets])
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

    def __len__(self) -> int:
        return len(self.widths)

    @classmethod
    def from_models(cls, models: Sequence[MLP], **kwargs: Any) -> MLPEnsemble:
        """Stack existing :class:`MLP` s (same in/out dims, depth, activation, bias) into an ensemble, on the first
        model's device and in its dtype."""
        if not models:
            raise PhenomlabError("from_models needs at least one model")
        first = models[0]
        act_name = next(k for k, v in ACTIVATIONS.items() if isinstance(first.act1, v))
        bias = first.out.bias is not None
        dims = (first.fc1.in_features, first.out.out_features)
        ens = cls(*dims, [m.width for m in models], first.depth, act_name, bias, init=False, **kwargs)
        ens = ens.to(first.out.weight)  # the models' device and dtype before the copy: float64 weights stay exact
        for i, m in enumerate(models):
            ens.set_member(i, m)
        return ens

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
        """Member ``m`` as a standalone :class:`phenomlab.models.MLP` (a copy, on its device, in its dtype)."""
        b, j = self._where[m]
        bucket = self.buckets[b]
        like = bucket.weights[0]
        model = MLP(self.in_dim, self.out_dim, self.widths[m], self.depth, self.activation_name, self.bias).to(like)
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

    def bucket_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per bucket the outputs ``[k_b, B, out]`` (members in ``self.groups[b]`` order)."""
        x = x.flatten(1)
        return [bucket(x, self.act) for bucket in self.buckets]

    def gather(self, per_bucket: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate per-bucket tensors (leading dim = bucket members) into member order."""
        return torch.cat(list(per_bucket))[self._inverse]

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """The inverse of :meth:`gather`: per bucket the entries of an ``[M, ...]`` tensor of its members."""
        return [values[g] for g in self.groups]

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


def copies_param_groups(ens: MLPEnsemble, rules: Mapping[str, ParamRule], optimizer: str, lr: float) -> list[dict]:
    """Optimiser parameter groups for an ensemble of copies of one parametrised :class:`MLP` (one width, one
    bucket): each layer's stacked weight and bias at ``lr`` times that layer's learning-rate scale under
    ``rules`` (:func:`phenomlab.models.parametrisation.parametrise` with ``fold_for=optimizer``, so the stacked
    plain weights carry the scheme's multipliers). Per-member learning rates then go through
    ``train_ensemble(..., lr_scale=...)``: a width x learning-rate grid as one ensemble per width."""
    if len(ens.buckets) != 1:
        raise PhenomlabError(f"copies_param_groups needs the copies of one model (one bucket), got {len(ens.buckets)}")
    bucket = ens.buckets[0]
    names = [f"fc{i}" for i in range(1, ens.depth + 1)] + ["out"]
    groups = [
        {"params": [bucket.weights[i]], "lr": lr * rules[f"{n}.weight"].lr_scale(optimizer)}
        for i, n in enumerate(names)
    ]
    if bucket.biases is not None:
        groups += [
            {"params": [bucket.biases[i]], "lr": lr * rules[f"{n}.bias"].lr_scale(optimizer)}
            for i, n in enumerate(names)
        ]
    return groups


__all__ = ["BUCKET_OVERHEAD", "MLPEnsemble", "copies_param_groups", "per_member_loss", "plan_buckets"]
