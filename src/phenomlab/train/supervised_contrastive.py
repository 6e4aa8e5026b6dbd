"""The supervised contrastive (SupCon) loss as a pure function, and a training objective built on it.

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan 2020, "Supervised Contrastive Learning"
(NeurIPS, arXiv 2004.11362), the ``L^sup_out`` form (their Eq. 2), as analysed by Graf, Hofer, Niethammer, Kwitt
2021, "Dissecting Supervised Contrastive Learning" (ICML, arXiv 2102.08817). For L2-normalised embeddings
``z_i = f(x_i) / ||f(x_i)||`` of a batch ``I``, ``A(i) = I \\ {i}`` and ``P(i) = {p in A(i): y_p = y_i}``:

    L = 1/|I'| sum_{i in I'} -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a in A(i)} exp(z_i.z_a / tau) )

where ``I'`` are the anchors with at least one positive (an anchor alone in its class has no term; Khosla et al.'s
batches always hold two views of each sample, so they never meet it). One view per sample is used here, the
setting of Graf et al.'s analysis: the positives of an anchor are the other samples of its class in the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .loop import Objective

__all__ = ["supcon_loss", "supcon_objective"]


def supcon_loss(
    z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, normalize: bool = True
) -> torch.Tensor:
    """SupCon ``L^sup_out`` (Khosla et al. 2020, arXiv 2004.11362, Eq. 2) of embeddings ``z [n, d]`` with ``labels
    [n]``, averaged over the anchors that have a positive (see the module docstring for the formula).

    ``normalize=True`` L2-normalises the rows of ``z`` first (the loss is defined on the unit sphere); pass
    ``False`` only for embeddings that are already normalised. Raises :class:`ConfigError` for bad shapes, a
    non-positive temperature or a batch in which no anchor has a positive.
    """
    if z.ndim != 2 or labels.ndim != 1 or z.shape[0] != labels.shape[0]:
        raise ConfigError(f"supcon_loss needs z [n, d] and labels [n], got {tuple(z.shape)} and {tuple(labels.shape)}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if normalize:
        z = F.normalize(z, dim=1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T) / temperature
    # the anchor itself is not in A(i): -inf drops it from the log-sum-exp
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        raise ConfigError("supcon_loss: no anchor has a positive (every label occurs once in the batch)")
    # where() rather than a product: log_prob is -inf on the diagonal and 0 * -inf would be nan
    pos_sum = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_sum[anchors] / n_pos[anchors]).mean()


def supcon_objective(temperature: float = 0.1) -> Objective:
    """The training loop's ``objective`` (see :func:`phenomlab.train.train`): :func:`supcon_loss` of the model's
    output on the minibatch and its labels. Deterministic, so it resumes exactly. A minibatch in which no anchor
    has a positive contributes a zero loss (no gradient) rather than an error."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")

    def objective(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, step: int) -> torch.Tensor:
        z = model(xb)
        if yb.numel() < 2 or bool((torch.bincount(yb) < 2).all()):
            return z.sum() * 0.0
        return supcon_loss(z, yb, temperature)

    return objective
