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
from typing import Any

import torch

from ..errors import ConfigError, PhenomlabError


class SAM(torch.optim.SGD):
    """SGD (momentum, Nesterov, weight decay as :class:`torch.optim.SGD`) whose gradient is SAM's ``g_SAM``.

    ``rho`` is the radius of the perturbation (Foret et al. 2021 use 0.05 on CIFAR-10); ``rho = 0`` gives
    ``e = 0``, i.e. exactly SGD at twice the cost. ``rho`` is a param-group entry, so it is saved in and restored
    from the optimiser's state dict like ``lr``. Between :meth:`perturb` and :meth:`restore` the parameters sit at
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
    ) -> None:
        if not (rho >= 0 and rho < float("inf")):
            raise ConfigError(f"sam rho must be a finite number >= 0, got {rho}")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        for group in self.param_groups:
            group.setdefault("rho", rho)
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def perturb(self) -> float:
        """Move every parameter with a gradient to ``w + rho g / ||g||`` (``||g||`` over all of them).

        Returns ``||g||``. A zero gradient leaves ``w`` where it is (``e = 0``: the ascent direction is undefined).
        """
        if self._saved:
            raise PhenomlabError("SAM.perturb called twice without restore")
        with_grad = [(p, group) for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms = [torch.linalg.vector_norm(p.grad) for p, _ in with_grad]
        norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
        for p, group in with_grad:
            self._saved.append((p, p.detach().clone()))
            if norm > 0 and group["rho"] > 0:
                p.add_(p.grad, alpha=group["rho"] / norm)
        return norm

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
