"""Unstructured magnitude pruning: masks, keeping them applied during training, and rewinding.

A *mask* is a dict ``{parameter name: bool tensor of the parameter's shape}``; ``True`` keeps a
weight. Only the parameters named in the mask are pruned (by default every weight matrix / conv
kernel, i.e. parameters with ``ndim >= 2``; biases stay dense, as in Frankle & Carbin 2019,
arXiv 1803.03635).

Iterative magnitude pruning (IMP) removes a fraction ``p`` of the weights that are still alive,
chosen by smallest ``|w|`` (globally across layers, or separately per layer), so after ``r``
rounds a fraction ``(1 - p)^r`` remains. Rewinding (Frankle, Dziugaite, Roy, Carbin 2020,
arXiv 1912.05671) resets the surviving weights to their values at initialisation or at an early
training step ``k`` before the next round.

Keeping a mask applied: :func:`attach_masks` masks every gradient (``grad <- grad * m``) through a
tensor hook, so optimiser state (momentum, Adam moments) of pruned weights stays zero, and zeroes
the pruned weights after every optimiser step, so weight decay or any other update cannot revive
them. Either alone would leave a loophole (decoupled weight decay and Adam's epsilon never move a
zero weight, but a nonzero weight that was masked without zeroing would keep drifting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import PhenomlabError

Masks = dict[str, torch.Tensor]


def prunable_parameters(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, nn.Parameter]:
    """The parameters IMP prunes: ``names`` if given, else every parameter with ``ndim >= 2``."""
    params = dict(model.named_parameters())
    if names is None:
        return {n: p for n, p in params.items() if p.ndim >= 2}
    missing = [n for n in names if n not in params]
    if missing:
        raise PhenomlabError(f"no parameters named {missing} in the model; it has {sorted(params)}")
    return {n: params[n] for n in names}


def full_masks(model: nn.Module, names: Iterable[str] | None = None) -> Masks:
    """All-ones masks (the dense network) for the prunable parameters."""
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model, names).items()}


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise PhenomlabError(f"pruning fraction must be in [0, 1), got {fraction}")


def _n_prune(alive: int, fraction: float) -> int:
    # round, not floor: 20% of 10 alive weights prunes 2, and a layer with 1 weight left keeps it
    return min(int(round(fraction * alive)), max(alive - 1, 0))


@torch.no_grad()
def magnitude_prune(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    fraction: float = 0.2,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
) -> Masks:
    """New masks that additionally remove ``fraction`` of the still-alive weights with smallest ``|w|``.

    ``scope="global"`` ranks all alive weights of all masked parameters together (one threshold);
    ``scope="layer"`` prunes ``fraction`` of each parameter's alive weights separately.
    ``layer_fractions[name]`` prunes that parameter separately at its own rate in either scope
    (Frankle & Carbin prune the output layer of their MLPs at half the rate). The magnitudes are
    read from ``model`` (the trained weights); ties are broken by position, so the result is
    deterministic.
    """
    _check_fraction(fraction)
    if scope not in ("global", "layer"):
        raise PhenomlabError(f"scope must be 'global' or 'layer', got {scope!r}")
    params = dict(model.named_parameters())
    for n in masks:
        if n not in params:
            raise PhenomlabError(f"mask names parameter {n!r}, which the model does not have")
        if masks[n].shape != params[n].shape:
            raise PhenomlabError(f"mask {n!r} has shape {tuple(masks[n].shape)}, parameter {tuple(params[n].shape)}")
    new = {n: m.clone().bool() for n, m in masks.items()}
    rates = dict(layer_fractions or {})
    for n in rates:
        if n not in new:
            raise PhenomlabError(f"layer_fractions names {n!r}, which is not masked; masked: {sorted(new)}")
    separate = list(new) if scope == "layer" else list(rates)
    for n in separate:
        f = rates.get(n, fraction)
        _check_fraction(f)
        m = new[n]
        alive = m.flatten().nonzero().squeeze(1)
        k = _n_prune(len(alive), f)
        if k == 0:
            continue
        mag = params[n].detach().abs().flatten()[alive]
        drop = alive[torch.argsort(mag, stable=True)[:k]]
        m.view(-1)[drop] = False
    pooled = [n for n in new if n not in separate]
    if not pooled:
        return new
    mags, owners, positions = [], [], []
    for i, n in enumerate(pooled):
        alive = new[n].flatten().nonzero().squeeze(1)
        mags.append(params[n].detach().abs().flatten()[alive].float().cpu())
        owners.append(torch.full((len(alive),), i, dtype=torch.long))
        positions.append(alive.cpu())
    mag, owner, pos = torch.cat(mags), torch.cat(owners), torch.cat(positions)
    k = _n_prune(len(mag), fraction)
    order = torch.argsort(mag, stable=True)[:k]
    for i, n in enumerate(pooled):
        sel = pos[order[owner[order] == i]]
        new[n].view(-1)[sel.to(new[n].device)] = False
    return new


def random_masks(masks: Mapping[str, torch.Tensor], generator: torch.Generator | None = None) -> Masks:
    """Masks with the same number of kept weights per parameter as ``masks``, at random positions.

    The control "random pruning at the same (layer-wise) sparsity".
    """
    out: Masks = {}
    for n, m in masks.items():
        k = int(m.sum())
        perm = torch.randperm(m.numel(), generator=generator)[:k]
        r = torch.zeros(m.numel(), dtype=torch.bool)
        r[perm] = True
        out[n] = r.view(m.shape).to(m.device)
    return out


def sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked (pruned) weights among all prunable weights: ``1 - sum(m) / numel``."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        return 0.0
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def layer_sparsity(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {n: 1.0 - float(m.float().mean()) for n, m in masks.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights of ``model`` in place (``w <- w * m``)."""
    params = dict(model.named_parameters())
    for n, m in masks.items():
        params[n].mul_(m.to(params[n].dtype))


@torch.no_grad()
def rewind(model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Reset ``model`` to the saved ``state`` (init or step ``k``) and apply ``masks``."""
    model.load_state_dict(dict(state))
    apply_masks(model, masks)


@dataclass
class MaskHandle:
    """What :func:`attach_masks` registered; ``remove()`` detaches the hooks (the mask stops applying)."""

    handles: list[Any] = field(default_factory=list)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def attach_masks(
    model: nn.Module, masks: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None
) -> MaskHandle:
    """Keep ``masks`` applied while ``model`` trains.

    Zeroes the pruned weights now, registers a gradient hook per masked parameter
    (``grad <- grad * m``) and, with ``optimizer``, a step post-hook that re-zeroes the pruned
    weights after every ``optimizer.step()``. Pass the optimiser to :func:`phenomlab.train.train`
    via ``optimizer=`` so the loop uses the hooked one.
    """
    params = dict(model.named_parameters())
    for n in masks:
        if n not in params:
            raise PhenomlabError(f"mask names parameter {n!r}, which the model does not have")
    apply_masks(model, masks)
    handle = MaskHandle()
    dev_masks = {n: m.to(device=params[n].device, dtype=params[n].dtype) for n, m in masks.items()}
    for n, m in dev_masks.items():
        handle.handles.append(params[n].register_hook(lambda g, m=m: g * m))
    if optimizer is not None:

        def rezero(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            with torch.no_grad():
                for n, m in dev_masks.items():
                    params[n].mul_(m)

        handle.handles.append(optimizer.register_step_post_hook(rezero))
    return handle


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model.state_dict()`` (a rewind point)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
