"""Coordinate check: sizes and one step against a hand computation; SP grows with width where muP does not."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP
from phenomlab.models.parametrisation import make_optimizer, parametrise
from phenomlab.probes import coord_check, coord_sizes, coord_slopes


def _linear(w: list[list[float]]) -> nn.Sequential:
    lin = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w, dtype=torch.float64))
    return nn.Sequential(lin)


def test_sizes_and_one_step_by_hand() -> None:
    w = [[1.0, -2.0], [0.5, 3.0]]
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    model = _linear(w)
    # h = W x: [[-3, 6.5], [-2, 1]] -> mean |h| = 12.5 / 4
    assert coord_sizes(model, x, ["0"]) == {"0": 12.5 / 4}

    def half_square(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return (out**2).sum() / 2

    rows = coord_check(
        {2: model}, (x, torch.zeros(2)), lambda m: torch.optim.SGD(m.parameters(), lr=0.1), ["0"], 1, half_square
    )
    # gradient of sum_i |W x_i|^2 / 2 is sum_i (W x_i) x_i^T, by explicit loops
    w1 = [row[:] for row in w]
    for i in range(2):
        xi = x[i].tolist()
        hi = [sum(w[r][c] * xi[c] for c in range(2)) for r in range(2)]
        for r in range(2):
            for c in range(2):
                w1[r][c] -= 0.1 * hi[r] * xi[c]
    h1 = [[sum(w1[r][c] * x[i, c].item() for c in range(2)) for r in range(2)] for i in range(2)]
    expected = sum(abs(v) for row in h1 for v in row) / 4
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[1]["l1"] == pytest.approx(expected, rel=1e-14)


def test_slopes_exact() -> None:
    rows = [{"width": n, "step": 0, "layer": "a", "l1": 3 * n**0.5} for n in (16, 64, 256)]
    rows += [{"width": n, "step": 0, "layer": "b", "l1": 2.0} for n in (16, 64, 256)]
    slopes = {r["layer"]: r["slope"] for r in coord_slopes(rows)}
    assert slopes["a"] == pytest.approx(0.5, abs=1e-12)
    assert slopes["b"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(PhenomlabError, match="two widths"):
        coord_slopes(rows[:1])
    with pytest.raises(PhenomlabError, match="positive"):
        coord_slopes([{"width": 1, "step": 0, "layer": "a", "l1": 0.0}])


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.01), ("sgd", 0.5)])
def test_mup_flat_sp_grows(optimizer: str, lr: float) -> None:
    """The coord check of Tensor Programs V: after a few steps activations grow with width under SP, not under muP."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    slopes = {}
    for scheme in ("sp", "mup"):
        models = {}
        for width in (64, 128, 256, 512):
            torch.manual_seed(1)
            models[width] = MLP(16, 4, width=width, depth=2)
            parametrise(models[width], scheme, base=MLP(16, 4, width=64, depth=2))
        rows = coord_check(models, (x, y), lambda m: make_optimizer(m, optimizer, lr), ["act1", "act2", "out"], 4)
        slopes[scheme] = {(r["layer"], r["step"]): r["slope"] for r in coord_slopes(rows)}
    # largest growth exponent over the layers after training starts (at init muP's readout shrinks as 1/sqrt(n))
    growth = {k: max(s for (_, step), s in v.items() if step >= 1) for k, v in slopes.items()}
    assert growth["sp"] > 0.5  # 0.57-1.86 over seeds 0-2 and both optimisers
    assert growth["mup"] < 0.3  # 0.03-0.22 over the same
    assert not math.isnan(slopes["sp"][("act2", 4)])
