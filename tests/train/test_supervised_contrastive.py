import math

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.models import MLP
from phenomlab.train import TrainConfig, train
from phenomlab.train.supervised_contrastive import supcon_loss, supcon_objective


def brute_force_supcon(z: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    """Khosla et al. 2020 Eq. 2 (L^sup_out) by explicit loops over anchors i, positives p and the denominator a."""
    z = [v / math.sqrt(sum(float(c) ** 2 for c in v)) for v in z.double()]
    n = len(z)

    def dot(a, b):
        return sum(float(u) * float(v) for u, v in zip(a, b, strict=True))

    terms = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and int(y[p]) == int(y[i])]
        if not positives:
            continue
        denom = sum(math.exp(dot(z[i], z[a]) / tau) for a in range(n) if a != i)
        s = sum(math.log(math.exp(dot(z[i], z[p]) / tau) / denom) for p in positives)
        terms.append(-s / len(positives))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_supcon_matches_brute_force(tau):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(13, 5, generator=g) * 3
    y = torch.tensor([0, 1, 0, 2, 1, 1, 3, 0, 2, 2, 4, 1, 0])  # class 3 and 4 have one sample: no term
    got = float(supcon_loss(z, y, tau))
    assert got == pytest.approx(brute_force_supcon(z, y, tau), rel=1e-5)


def test_supcon_simplex_is_lower_than_a_worse_configuration():
    # Graf et al. 2021: collapsed classes on a regular simplex minimise the loss; perturbing the vertices raises it
    c = 4
    simplex = torch.eye(c) - 1.0 / c  # the centred basis vectors: a regular simplex in the sum-zero plane
    y = torch.arange(c).repeat_interleave(3)
    z = simplex[y]
    base = float(supcon_loss(z, y, 0.1))
    g = torch.Generator().manual_seed(1)
    noisy = z + 0.2 * torch.randn(z.shape, generator=g)
    assert float(supcon_loss(noisy, y, 0.1)) > base
    skew = simplex.clone()
    skew[1] = skew[0] + 0.3 * skew[1]  # two vertices closer together
    assert float(supcon_loss(skew[y], y, 0.1)) > base


def test_supcon_gradient_flows_and_bad_input_rejected():
    z = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    supcon_loss(z, y).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        supcon_loss(z, torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ConfigError):
        supcon_loss(z, y, temperature=0.0)
    with pytest.raises(ConfigError):
        supcon_loss(z, y[:5])
    with pytest.raises(ConfigError):
        supcon_objective(-1.0)


def test_supcon_objective_trains_through_the_loop():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(20)
    x = torch.randn(60, 5, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 5).float()
    m = MLP(5, 8, width=32, depth=1)
    obj = supcon_objective(0.2)
    with torch.no_grad():
        first = float(obj(m, x, y, 0))
    h = train(m, (x, y), TrainConfig(steps=150, lr=1e-2, optimizer="adam", eval_every=50), objective=obj)
    assert h.last("train_objective") < 0.8 * first
    # a batch without positives gives a zero loss, not an error
    one_each = torch.tensor([0, 20, 40])
    assert float(obj(m, x[one_each], y[one_each], 0).detach()) == 0.0
