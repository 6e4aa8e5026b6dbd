"""Dynamic sparse training: masks at ERK layer densities, updated during training by prune-and-regrow.

A sparse network trains with a fixed fraction ``d`` (the *density*) of its weights active; the rest are exactly zero.

* **ERK densities** (Erdős–Rényi-Kernel; Mocanu et al. 2018, arXiv 1707.04780 for the Erdős–Rényi scaling of
  fully connected layers, Evci et al. 2020, arXiv 1911.11134 for the kernel extension): layer ``l`` with weight
  shape ``(n_1, ..., n_k)`` gets density ``eps * sum(n_i) / prod(n_i)`` (for a linear layer
  ``eps (n_in + n_out) / (n_in n_out)``), ``eps`` chosen so that the active weights total ``d * N``; a layer
  whose density would exceed 1 is made dense and ``eps`` is solved again for the others (RigL's procedure).
* **Prune-and-regrow** every ``interval`` optimiser steps, separately in each layer (so each layer's density is
  unchanged): drop the ``k = round(f_t * n_active)`` active weights with the smallest ``|w|``, then activate ``k``
  inactive positions (the just-dropped ones included), at random (SET: Mocanu et al. 2018) or those with the
  largest ``|dL/dw|`` of the current minibatch's dense gradient (RigL: Evci et al. 2020). Regrown weights start at
  exactly zero and their optimiser state (momentum, Adam moments) is reset. The drop fraction is cosine-annealed,
  ``f_t = f_0 / 2 (1 + cos(pi t / T_end))``, and no update happens at or after ``T_end`` (RigL's schedule).
* **In-time over-parameterisation rate** (ITOP; Liu, Yin, Mocanu & Pechenizkiy, ICML 2021, arXiv 2102.02887):
  ``R_s = |union over training of the active sets| / N``, the fraction of the prunable weights ever active. A
  static mask has ``R_s = d``; ITOP's claim is that the accuracy of dynamic sparse training grows with ``R_s``.
* **No exploration** (``MaskSchedule(explore=False)``, ITOP's control): regrowth only into positions of the initial
  mask. Since the active count is fixed, the dropped weights are regrown in place (restarting at zero with zero
  optimiser state): the prune-and-regrow perturbation without new positions, so ``R_s`` stays exactly ``d``.

:class:`DynamicSparsity` keeps the masks applied while any optimiser-driven trainer runs (``phenomlab.train.train``
or ``train_ensemble``: pass the same optimiser with ``optimizer=``). It uses two optimiser hooks, so nothing in the
training loop changes: before each ``optimizer.step()`` it keeps a copy of the dense gradient when an update is due
(RigL needs it) and masks the gradient (``grad <- grad * m``: inactive weights and their optimiser state stay
zero); after it, it re-zeroes the inactive weights and, at an update step, prunes and regrows. (Masking in the
optimiser pre-hook rather than in a tensor hook as :func:`phenomlab.train.pruning.attach_masks` does is what leaves
the dense gradient readable; gradient clipping, which runs before the optimiser, therefore sees the dense norm.)
The masks, the union of active sets and the step counter are buffers of the model, so a checkpointed run resumes
with the masks it had; the random regrowth at step ``t`` is a pure function of ``(seed, t, layer)``.

With ``member_dim=True`` the first dimension of every masked parameter indexes independent networks (the members
of an :class:`phenomlab.models.MLPEnsemble`, weights ``[k, in, out]``): each member's slice is its own layer,
with its own density, schedule and ITOP rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, PhenomlabError
from ..seeding import derive_seed
from .pruning import Masks, apply_masks, prunable_parameters

METHODS = ("static", "set", "rigl")


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float, power: float = 1.0) -> dict[str, float]:
    """Per-layer densities of the ERK distribution at overall density ``density`` (see the module docstring).

    ``shapes`` maps a layer name to its weight shape. Layer ``l`` gets ``eps * (sum(shape) / prod(shape))**power``;
    ``eps`` makes ``sum_l d_l n_l = density * sum_l n_l``. Layers that would exceed density 1 are set dense
    (largest raw score first) and ``eps`` is re-solved, as in Evci et al. 2020 (arXiv 1911.11134).
    """
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {density}")
    if not shapes:
        raise ConfigError("erk_densities needs at least one layer shape")
    sizes = {n: math.prod(int(s) for s in shape) for n, shape in shapes.items()}
    if min(sizes.values()) <= 0:
        raise ConfigError(f"layer shapes must be non-empty, got {dict(shapes)}")
    raw = {n: (sum(int(s) for s in shapes[n]) / sizes[n]) ** power for n in shapes}
    dense: set[str] = set()
    while True:
        # the weights to place among the non-dense layers: the total budget minus what dense layers take
        rhs = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        if divisor == 0:  # every layer dense (density 1)
            return {n: 1.0 for n in shapes}
        eps = rhs / divisor
        worst = max(raw[n] for n in shapes if n not in dense)
        if eps * worst <= 1.0:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= {n for n in shapes if n not in dense and raw[n] == worst}


def random_mask(shape: Sequence[int], n_active: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A bool mask of ``shape`` with exactly ``n_active`` True entries at uniformly random positions."""
    numel = math.prod(int(s) for s in shape)
    if not 0 <= n_active <= numel:
        raise PhenomlabError(f"n_active must be in [0, {numel}], got {n_active}")
    m = torch.zeros(numel, dtype=torch.bool)
    m[torch.randperm(numel, generator=generator)[:n_active]] = True
    return m.view(*shape)


def n_active_for(numel: int, density: float) -> int:
    """Active weights of a layer of ``numel`` weights at ``density``: ``round(density * numel)``, at least 1."""
    return min(numel, max(1, int(round(density * numel))))


def drop_fraction(step: int, initial: float, end_step: int) -> float:
    """RigL's cosine-annealed drop fraction ``f_0 / 2 (1 + cos(pi t / T_end))`` for ``t < T_end``, else 0."""
    if step >= end_step:
        return 0.0
    return 0.5 * initial * (1.0 + math.cos(math.pi * step / end_step))


@torch.no_grad()
def prune_and_regrow(
    weight: torch.Tensor,
    mask: torch.Tensor,
    n_update: int,
    grow: str = "random",
    grad: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One prune-and-regrow update of one layer: ``(new mask, regrown)``, bool tensors (``mask`` is not modified).

    Drops the ``n_update`` active positions with the smallest ``|weight|`` (ties by position), then activates
    ``n_update`` positions among those inactive after the drop: uniformly at random (``grow="random"``, SET) or
    the ones with the largest ``|grad|`` (``grow="gradient"``, RigL; ties by position). The number of active
    weights is unchanged. ``n_update`` is capped at the number of active weights. ``regrown`` marks the positions
    chosen by the growth step (a just-dropped position may be among them): their weights restart at zero.
    ``allowed`` (bool, the weight's shape) restricts the growth to its True positions; fewer than ``n_update``
    allowed positions free after the drop is an error (the active count could not be kept).
    """
    if grow not in ("random", "gradient"):
        raise PhenomlabError(f"grow must be 'random' or 'gradient', got {grow!r}")
    if mask.shape != weight.shape:
        raise PhenomlabError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
    if grow == "gradient" and (grad is None or grad.shape != weight.shape):
        raise PhenomlabError("gradient regrowth needs the dense gradient, of the weight's shape")
    if allowed is not None and allowed.shape != weight.shape:
        raise PhenomlabError(f"allowed shape {tuple(allowed.shape)} != weight shape {tuple(weight.shape)}")
    flat = mask.reshape(-1).to(torch.bool)
    new = flat.clone()
    active = flat.nonzero().squeeze(1)
    k = min(int(n_update), len(active))
    grown = torch.zeros_like(new)
    if k <= 0:
        return new.view(mask.shape), grown.view(mask.shape)
    mag = weight.detach().reshape(-1)[active].abs().float().cpu()
    new[active[torch.argsort(mag, stable=True)[:k].to(active.device)]] = False
    free_mask = ~new if allowed is None else ~new & allowed.reshape(-1).to(device=new.device, dtype=torch.bool)
    free = free_mask.nonzero().squeeze(1)
    if len(free) < k:
        raise PhenomlabError(f"only {len(free)} allowed positions are free to regrow {k} weights")
    if grow == "random":
        pick = torch.randperm(len(free), generator=generator)[:k].to(free.device)
    else:
        score = grad.detach().reshape(-1)[free].abs().float().cpu()  # type: ignore[union-attr]
        pick = torch.argsort(score, descending=True, stable=True)[:k].to(free.device)
    new[free[pick]] = True
    grown[free[pick]] = True
    return new.view(mask.shape), grown.view(mask.shape)


@dataclass(frozen=True)
class MaskSchedule:
    """How one network's mask changes: ``method`` "static" (never), "set" (random regrowth) or "rigl" (gradient
    regrowth); an update every ``interval`` steps with drop fraction ``drop_fraction`` cosine-annealed to 0 at
    ``end_step`` (no update at or after it). ``explore=False`` regrows only into positions of the initial mask
    (ITOP's no-exploration control: the dropped weights restart in place, ``R_s`` stays at the density)."""

    method: str = "static"
    interval: int = 100
    drop_fraction: float = 0.3
    end_step: int = 1
    explore: bool = True

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"sparse method must be one of {METHODS}, got {self.method!r}")
        if self.interval <= 0:
            raise ConfigError(f"mask update interval must be positive, got {self.interval}")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ConfigError(f"drop fraction must be in [0, 1), got {self.drop_fraction}")
        if self.end_step < 0:
            raise ConfigError(f"end_step must be >= 0, got {self.end_step}")

    def due(self, step: int) -> bool:
        """Whether the optimiser step that brings the count to ``step`` is followed by an update."""
        return self.method != "static" and step % self.interval == 0 and 0 < step < self.end_step


def erk_masks(
    params: Mapping[str, torch.Tensor],
    density: float | Sequence[float],
    generator: torch.Generator | None = None,
    member_dim: bool = False,
) -> Masks:
    """Random masks at ERK layer densities for the tensors ``params`` (name -> weight).

    With ``member_dim`` the first dimension indexes members, each with its own ERK allocation over its slices
    (``density`` may then be one density per member). Each layer gets exactly ``n_active_for(numel, d_l)``
    active weights at random positions.
    """
    if not params:
        raise PhenomlabError("erk_masks needs at least one parameter")
    masks: Masks = {}
    if not member_dim:
        d = float(density) if not isinstance(density, Sequence) else None
        if d is None:
            raise ConfigError("one density per member needs member_dim=True")
        dens = erk_densities({n: tuple(p.shape) for n, p in params.items()}, d)
        for n, p in params.items():
            masks[n] = random_mask(p.shape, n_active_for(p.numel(), dens[n]), generator).to(p.device)
        return masks
    k = {int(p.shape[0]) for p in params.values()}
    if len(k) != 1:
        raise PhenomlabError(f"member_dim needs one leading size for every parameter, got {sorted(k)}")
    n_members = k.pop()
    per = list(density) if isinstance(density, Sequence) else [float(density)] * n_members
    if len(per) != n_members:
        raise ConfigError(f"{len(per)} densities for {n_members} members")
    for n, p in params.items():
        masks[n] = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
    for j, dj in enumerate(per):
        dens = erk_densities({n: tuple(p.shape[1:]) for n, p in params.items()}, float(dj))
        for n, p in params.items():
            masks[n][j] = random_mask(p.shape[1:], n_active_for(p[j].numel(), dens[n]), generator).to(p.device)
    return masks


def _buffer_name(kind: str, name: str) -> str:
    return f"sparse_{kind}__{name.replace('.', '__')}"


class DynamicSparsity:
    """Masks of ``model`` kept applied and updated by prune-and-regrow while an optimiser trains it.

    ``masks``: bool tensors keyed by parameter name (e.g. from :func:`erk_masks`); ``schedules``: one
    :class:`MaskSchedule`, or with ``member_dim=True`` one per member. ``seed`` fixes the random regrowth.
    Call :meth:`remove` when training is over (the hooks go; the masks stay readable here).
    """

    def __init__(
        self,
        model: nn.Module,
        masks: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        schedules: MaskSchedule | Sequence[MaskSchedule],
        *,
        member_dim: bool = False,
        seed: int = 0,
    ) -> None:
        params = prunable_parameters(model, list(masks))
        for n, m in masks.items():
            if m.shape != params[n].shape:
                raise PhenomlabError(f"mask {n!r} has shape {tuple(m.shape)}, parameter {tuple(params[n].shape)}")
        scheds = [schedules] if isinstance(schedules, MaskSchedule) else list(schedules)
        n_units = 1
        if member_dim:
            sizes = {int(p.shape[0]) for p in params.values()}
            if len(sizes) != 1:
                raise PhenomlabError(f"member_dim needs one leading size for every parameter, got {sorted(sizes)}")
            n_units = sizes.pop()
        if len(scheds) != n_units:
            raise ConfigError(f"{len(scheds)} mask schedules for {n_units} networks")
        for s in scheds:
            s.validate()
        self.model, self.optimizer, self.params = model, optimizer, params
        self.schedules, self.member_dim, self.seed = scheds, member_dim, int(seed)
        self.masks: Masks = {}
        self.ever: Masks = {}
        for n, m in masks.items():
            mb = m.detach().to(device=params[n].device, dtype=torch.bool).clone()
            model.register_buffer(_buffer_name("mask", n), mb)
            model.register_buffer(_buffer_name("ever", n), mb.clone())
            self.masks[n] = mb
            self.ever[n] = getattr(model, _buffer_name("ever", n))
        # the optimiser steps taken under these masks: a buffer, so a resumed run continues the schedule
        dev = next(iter(params.values())).device if params else None
        model.register_buffer("sparse_step", torch.zeros((), dtype=torch.long, device=dev))
        self._grads: dict[str, torch.Tensor] = {}
        self._float: Masks = {}
        self._refresh()
        self._handles = [
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._before_step()),
            optimizer.register_step_post_hook(lambda opt, args, kwargs: self._after_step()),
        ]

    # ----- views --------------------------------------------------------------------------------------------------
    def _units(self, n: str) -> list[tuple[int, Any]]:
        """(schedule index, index into the parameter) of each independent layer in parameter ``n``."""
        if not self.member_dim:
            return [(0, slice(None))]
        return [(j, j) for j in range(len(self.schedules))]

    @property
    def step(self) -> int:
        return int(self.model.sparse_step)

    def _count(self, masks: Masks, member: int | None) -> tuple[int, int]:
        on = tot = 0
        for m in masks.values():
            part = m if member is None or not self.member_dim else m[member]
            on += int(part.sum())
            tot += part.numel()
        return on, tot

    def density(self, member: int | None = None) -> float:
        """Fraction of the masked weights that are active now (of one member with ``member_dim``)."""
        on, tot = self._count(self.masks, member)
        return on / tot

    def itop_rate(self, member: int | None = None) -> float:
        """``R_s``: fraction of the masked weights that were ever active (Liu et al. 2021, arXiv 2102.02887)."""
        on, tot = self._count(self.ever, member)
        return on / tot

    # ----- hooks --------------------------------------------------------------------------------------------------
    def _due(self, step: int) -> list[int]:
        return [j for j, s in enumerate(self.schedules) if s.due(step)]

    @torch.no_grad()
    def _before_step(self) -> None:
        if self.step != self._seen:  # the buffers were loaded from a checkpoint: the cached float masks are stale
            self._refresh()
        upcoming = self.step + 1
        need_grad = any(self.schedules[j].method == "rigl" for j in self._due(upcoming))
        self._grads = {}
        for n, p in self.params.items():
            if p.grad is None:
                continue
            if need_grad:
                self._grads[n] = p.grad.detach().clone()
            p.grad.mul_(self._float[n])

    @torch.no_grad()
    def _after_step(self) -> None:
        self.model.sparse_step += 1
        t = self.step
        due = set(self._due(t))
        if due:
            self._update(t, due)
        for n, p in self.params.items():
            p.mul_(self._float[n])
        self._grads = {}
        self._seen = t

    @torch.no_grad()
    def _update(self, t: int, due: set[int]) -> None:
        for li, (n, p) in enumerate(self.params.items()):
            m = self.masks[n]
            for j, idx in self._units(n):
                if j not in due:
                    continue
                s = self.schedules[j]
                n_on = int(m[idx].sum())
                k = int(round(drop_fraction(t, s.drop_fraction, s.end_step) * n_on))
                if k == 0:
                    continue
                g = torch.Generator().manual_seed(derive_seed(self.seed, "regrow", t, li, j))
                grad = self._grads.get(n)
                # a non-exploring net never activates a position outside its initial mask, so its union of active
                # sets *is* that mask (by induction): the checkpointed buffer doubles as the allowed set
                new, grown = prune_and_regrow(
                    p[idx],
                    m[idx],
                    k,
                    grow="gradient" if s.method == "rigl" else "random",
                    grad=None if grad is None else grad[idx],
                    generator=g,
                    allowed=None if s.explore else self.ever[n][idx],
                )
                keep = (new & ~grown).to(p.dtype)  # pruned weights go to 0, regrown ones start at 0
                p[idx] = p[idx] * keep
                for v in self.optimizer.state.get(p, {}).values():
                    if isinstance(v, torch.Tensor) and v.shape == p.shape:
                        v[idx] = v[idx] * keep.to(v.dtype)
                m[idx] = new
                self.ever[n][idx] |= new
        self._refresh()

    @torch.no_grad()
    def _refresh(self) -> None:
        """Zero the inactive weights and their optimiser state (a regrown weight starts without momentum) and
        cache the masks in the parameters' dtype (they multiply every gradient)."""
        self._float = {n: m.to(self.params[n].dtype) for n, m in self.masks.items()}
        self._seen = self.step
        apply_masks(self.model, self.masks)
        for n, p in self.params.items():
            for v in self.optimizer.state.get(p, {}).values():
                if isinstance(v, torch.Tensor) and v.shape == p.shape:
                    v.mul_(self._float[n].to(v.dtype))

    def remove(self) -> None:
        """Detach the optimiser hooks (the masks stop applying); masks and ``itop_rate`` stay readable."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
