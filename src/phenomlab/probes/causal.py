"""Complexity of a univariate distribution as the reconstruction error of an autoencoder on its quantiles.

Galanti, Nabati & Wolf 2020, "A Critical View of the Structural Causal Model" (arXiv 2002.10007), Sec. 3:
the complexity ``C(X)`` of a univariate variable is the reconstruction error of an autoencoder trained on
fixed-size vectors of quantiles (sorted subsamples) of ``X``; comparing ``C(X)`` with ``C(Y)`` decides
the causal direction without looking at the joint distribution. Here many such autoencoders (one per
variable) are trained at once as one batched model (stacked weights, ``torch.baddbmm``), each member the
exact function of a standalone ``nn.Sequential`` (tested), and ``pca_residual`` is the closed-form
optimum of the linear autoencoder (Baldi & Hornik 1989), a reference for the learned scores.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["BatchedAutoencoder", "autoencoder_complexity", "pca_residual"]


class BatchedAutoencoder(nn.Module):
    """``P`` independent MLP autoencoders ``k -> h -> b -> h -> k`` (tanh between layers, linear output).

    ``forward(x)``: ``x`` is ``[P, R, k]``, member ``p`` maps ``x[p]``. Initialisation: weights
    ``N(0, 1/fan_in)``, zero biases.
    """

    def __init__(self, n_members: int, k: int, hidden: int, bottleneck: int, generator: torch.Generator) -> None:
        super().__init__()
        if min(n_members, k, hidden, bottleneck) < 1:
            raise ConfigError(f"autoencoder sizes must be >= 1, got P={n_members}, k={k}, h={hidden}, b={bottleneck}")
        self.dims = [k, hidden, bottleneck, hidden, k]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n_members, a, b, generator=generator) / a**0.5)
            for a, b in zip(self.dims[:-1], self.dims[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n_members, 1, b)) for b in self.dims[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.tanh(x)
        return x

    def member(self, p: int) -> nn.Sequential:
        """Member ``p`` as a standalone ``nn.Sequential`` (copies of its weights, on their device, in their dtype)."""
        layers: list[nn.Module] = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            lin = nn.Linear(w.shape[1], w.shape[2]).to(w)
            with torch.no_grad():
                lin.weight.copy_(w[p].T)
                lin.bias.copy_(b[p, 0])
            layers.append(lin)
            if i < last:
                layers.append(nn.Tanh())
        return nn.Sequential(*layers)


def autoencoder_complexity(
    train: torch.Tensor,
    test: torch.Tensor,
    hidden: int = 16,
    bottleneck: int = 2,
    steps: int = 500,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one autoencoder per variable and return its reconstruction errors ``(test, train)``, each ``[P]``.

    ``train``/``test``: ``[P, R, k]`` quantile vectors of ``P`` variables. Error = mean over vectors and
    coordinates of the squared reconstruction error. Each member minimises its own mean loss with Adam
    (full batch); members share no parameters, so summing their losses trains each independently.
    """
    if train.dim() != 3 or test.dim() != 3 or train.shape[0] != test.shape[0] or train.shape[2] != test.shape[2]:
        raise ConfigError(f"train/test must be [P, R, k] with equal P and k: {tuple(train.shape)}, {tuple(test.shape)}")
    g = torch.Generator().manual_seed(seed)
    # initialised from a CPU generator whatever the device, so a seed gives the same autoencoders everywhere
    ae = BatchedAutoencoder(train.shape[0], train.shape[2], hidden, bottleneck, g).to(train)
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        ((ae(train) - train) ** 2).mean((1, 2)).sum().backward()
        opt.step()
    with torch.no_grad():
        return ((ae(test) - test) ** 2).mean((1, 2)), ((ae(train) - train) ** 2).mean((1, 2))


def pca_residual(x: torch.Tensor, rank: int) -> torch.Tensor:
    """``[P]``: ``min`` over rank-``rank`` affine reconstructions of the mean squared error of ``x`` (``[P, R, k]``).

    Closed form (Eckart-Young): the sum of the squared singular values of the centred ``x[p]`` beyond the
    first ``rank``, divided by ``R k``; the optimum of a linear autoencoder with bottleneck ``rank``.
    """
    xc = x - x.mean(1, keepdim=True)
    s = torch.linalg.svdvals(xc)
    return (s[:, rank:] ** 2).sum(-1) / (x.shape[1] * x.shape[2])
