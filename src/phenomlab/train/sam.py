"""Sharpness-aware minimisation (SAM) on SGD with momentum.

Foret, Kleiner, Mobahi, Neyshabur 2021, "Sharpness-Aware Minimization for Efficiently Improving Generalization"
(arXiv 2010.01412), Algorithm 1 with p = 2. With ``g = grad L_B(w)`` the minibatch gradient,

    e(w) = rho * g / ||g||_2          (the first-order solution of max_{||e|| <= rho} L_B(w + e))
    g_SAM = grad L_B(w) |_{w + e(w)}  (the gradient at the perturbed point, on the same minibatch)

and the base optimiser (here SGD with heavy-ball or Nesterov momentum and L2 weight decay, as in the paper's
experiments) takes its step from ``w`` with ``g_SAM`` in place of ``g``. ``||g||`` is the norm over all the
parameters of the optimiser together (the paper's single perturbation of the whole weight vector; no ``m``-sharpness
split of the batch). Two gradient evaluations per step (a model in train mode runs both forward passes in
train mode, so BatchNorm running statistics see two updates per step, as in the paper's implementation).

``direction="random"`` is the control of Foret et al.'s claim that the worst-case (ascent) direction is what
flattens: the same step, cost and radius, but ``e = rho u / ||u||_2`` with ``u ~ N(0, I)`` over the same parameters,
drawn afresh at every step from the optimiser's own seeded generator (on the CPU, so a run draws the same directions
on any device; its state is saved in the optimiser's state dict, so a resumed run draws what the uninterrupted one
would). The gradient at ``w`` is still taken (it is discarded), so the cost per step is SAM's.

``direction="descent"`` takes the opposite step, ``e = -rho g / ||g||`` (the first-order solution of
``min_{||e|| <= rho} L_B(w + e)``): the same radius and the same size of first-order effect as SAM, the other sign.
To first order SAM descends ``L + rho ||g||`` and this descends ``L - rho ||g||``, which favours sharp regions: the
control for the claim that the worst-case direction, not the perturbation's size, is what flattens.

Usage by hand (what :func:`phenomlab.train.train` does when ``TrainConfig.optimizer == "sam"``)::

    loss(model, xb, yb).backward()   # g at w
    opt.perturb()                    # w <- w + e(w), remembering w
    opt.zero_grad()
    loss(model, xb, yb).backward()   # g_SAM at w + e
    opt.restore()                    # w back exactly (a copy, not w + e - e)
    opt.step()                       # SGD(momentum) step from w with g_SAM
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

from ..errors import ConfigError, PhenomlabError

DIRECTIONS = ("ascent", "random", "descent")
_GENERATOR_KEY = "sam_random_direction_generator"


class SAM(torch.optim.SGD):
    """SGD (momentum, Nesterov, weight decay as :class:`torch.optim.SGD`) whose gradient is SAM's ``g_SAM``.

    ``rho`` is the radius of the perturbation (Foret et al. 2021 use 0.05 on CIFAR-10); ``rho = 0`` gives
    ``e = 0``, i.e. exactly SGD at twice the cost. ``direction`` is ``"ascent"`` (SAM: ``e = rho g/||g||``) or
    ``"random"`` (``e = rho u/||u||``, ``u ~ N(0, I)`` from a generator seeded with ``seed``) or ``"descent"``
    (``e = -rho g/||g||``): the controls.
    ``rho`` is a param-group entry, so it is saved in and restored from the optimiser's state dict like ``lr``
    (and the random generator's state with it). Between :meth:`perturb` and :meth:`restore` the parameters sit at
    ``w + e``; the saved copies of ``w`` live on the optimiser object, not in its state dict (a checkpoint is only
    written between steps, when there are none).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        rho: float = 0.05,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        direction: Literal["ascent", "random", "descent"] = "ascent",
        seed: int = 0,
    ) -> None:
        if not (rho >= 0 and rho < float("inf")):
            raise ConfigError(f"sam rho must be a finite number >= 0, got {rho}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"sam direction must be one of {DIRECTIONS}, got {direction!r}")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("rho", rho)
        self.direction = direction
        # only the random direction draws; the ascent path has no generator, so it is untouched by this option
        self._generator = torch.Generator().manual_seed(seed) if direction == "random" else None
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._generator is not None:
            state[_GENERATOR_KEY] = self._generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        gen_state = state_dict.pop(_GENERATOR_KEY, None)
        if (gen_state is None) != (self._generator is None):
            raise PhenomlabError(
                f"SAM state dict {'lacks' if gen_state is None else 'has'} a random-direction generator state, "
                f"but this optimiser's direction is {self.direction!r}"
            )
        super().load_state_dict(state_dict)
        if self._generator is not None and gen_state is not None:
            # a checkpoint may be loaded with map_location on an accelerator; a generator state is a CPU byte tensor
            self._generator.set_state(gen_state.cpu())

    @torch.no_grad()
    def perturb(self) -> float:
        """Move every parameter with a gradient to ``w + rho d / ||d||`` (``||d||`` over all of them), with
        ``d = g`` (ascent), ``d = -g`` (descent) or ``d = u ~ N(0, I)`` drawn now (random).

        Returns ``||g||``. Along the gradient a zero gradient leaves ``w`` where it is (``e = 0``: the direction is
        undefined); the random direction does not depend on ``g``.
        """
        if self._saved:
            raise PhenomlabError("SAM.perturb called twice without restore")
        with_grad = [(p, group) for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms = [torch.linalg.vector_norm(p.grad) for p, _ in with_grad]
        norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
        if self._generator is not None:
            return self._perturb_random(with_grad, norm)
        sign = -1.0 if self.direction == "descent" else 1.0
        for p, group in with_grad:
            self._saved.append((p, p.detach().clone()))
            if norm > 0 and group["rho"] > 0:
                p.add_(p.grad, alpha=sign * group["rho"] / norm)
        return norm

    def _perturb_random(self, with_grad: list[tuple[torch.Tensor, dict[str, Any]]], grad_norm: float) -> float:
        # drawn in float64 on the CPU: the same directions whatever the device or dtype of the parameters
        us = [torch.randn(p.shape, generator=self._generator, dtype=torch.float64) for p, _ in with_grad]
        u_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(u) for u in us]))) if us else 0.0
        for (p, group), u in zip(with_grad, us, strict=True):
            self._saved.append((p, p.detach().clone()))
            if u_norm > 0 and group["rho"] > 0:
                p.add_(u.to(device=p.device, dtype=p.dtype), alpha=group["rho"] / u_norm)
        return grad_norm

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the parameters :meth:`perturb` moved (exact copies of ``w``)."""
        for p, w in self._saved:
            p.copy_(w)
        self._saved = []


def sam_gradient(opt: SAM, loss_at: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Replace the gradients in ``opt``'s parameters (``g`` at ``w``, already computed) by ``g_SAM``.

    ``loss_at()`` must recompute the same minibatch loss with the current parameters; it is called once, at
    ``w + e(w)``. Afterwards the parameters are back at ``w`` and hold ``g_SAM`` in ``.grad``, ready for
    ``opt.step()``. Returns the loss at the perturbed point.
    """
    opt.perturb()
    try:
        opt.zero_grad(set_to_none=True)
        loss = loss_at()
        loss.backward()
    finally:
        opt.restore()
    return loss
