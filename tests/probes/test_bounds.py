import math

import pytest
import torch
from torch import nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes import bounds
from phenomlab.probes.bounds import (
    conv1d_output_length,
    conv1d_toeplitz,
    multiclass_margins,
    network_bounds,
    sparse_norm_bound,
    toeplitz_norm_bound,
)


def _brute_toeplitz(w: torch.Tensor, length: int, stride: int, padding: int) -> torch.Tensor:
    """Column j of T is the conv applied to the j-th basis input (a conv layer is linear)."""
    c_in = w.shape[1]
    cols = []
    for j in range(c_in * length):
        e = torch.zeros(c_in * length, dtype=w.dtype)
        e[j] = 1.0
        cols.append(torch.nn.functional.conv1d(e.view(1, c_in, length), w, stride=stride, padding=padding).flatten())
    return torch.stack(cols, 1)


@pytest.mark.parametrize(
    "c_in,c_out,k,length,stride,padding", [(1, 3, 5, 12, 1, 0), (2, 3, 3, 9, 2, 1), (3, 2, 5, 8, 2, 2)]
)
def test_toeplitz_matches_the_conv_layer(c_in, c_out, k, length, stride, padding):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(c_out, c_in, k, generator=g, dtype=torch.float64)
    t = conv1d_toeplitz(w, length, stride, padding)
    assert t.shape == (c_out * conv1d_output_length(length, k, stride, padding), c_in * length)
    assert torch.equal(t, _brute_toeplitz(w, length, stride, padding))
    x = torch.randn(4, c_in, length, generator=g, dtype=torch.float64)
    y = torch.nn.functional.conv1d(x, w, stride=stride, padding=padding)
    assert torch.allclose((t @ x.flatten(1).T).T, y.flatten(1))


def test_toeplitz_norm_by_hand():
    # valid conv: every output row holds the whole filter, so ||T||_F = sqrt(P_out) ||w||_F exactly
    w = torch.tensor([[[1.0, 2.0, 2.0]]])  # ||w|| = 3
    assert conv1d_toeplitz(w, 7).norm().item() == pytest.approx(math.sqrt(5) * 3)
    # 'same' padding (k=3, p=1) on length 3: the two edge rows lose one tap each: 9 + 8 + 5 = 22
    assert conv1d_toeplitz(w, 3, padding=1).norm().item() ** 2 == pytest.approx(22.0)


def test_sparse_bound_by_hand():
    # two layers, ||w|| = 2 and 3, degrees 4 and 1, margin 2: rho = 3
    n, k, delta = 100, 10, 1e-3
    got = sparse_norm_bound([2.0, 3.0], [4, 1], max_patch_sq_sum=25.0, n=n, n_classes=k, margin=2.0, delta=delta)
    log_term = 1 + math.sqrt(2 * (2 * math.log(8) + math.log(10)))
    want = 2**1.5 * 4 / 100 * log_term * 2 * 5 + 3 * math.sqrt(math.log(2 * 25 / delta) / 200)
    assert got == pytest.approx(want)


def test_toeplitz_bound_by_hand():
    got = toeplitz_norm_bound([4.0, 0.5], input_sq_sum=400.0, n=50, n_classes=3, margin=1.0)
    log_term = 1 + math.sqrt(2 * (2 * math.log(2) + math.log(3)))
    want = 2**1.5 * 3 / 50 * log_term * 20 + 3 * math.sqrt(math.log(2 * 16 / 1e-3) / 100)
    assert got == pytest.approx(want)


def test_dense_layer_gives_the_same_norms_in_both_bounds():
    # a kernel spanning the whole (unpadded) input is a dense layer: one position, T = the filter itself
    w = torch.randn(4, 1, 6, dtype=torch.float64)
    assert conv1d_toeplitz(w, 6).norm().item() == pytest.approx(w.norm().item())


def test_margins():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert multiclass_margins(logits, torch.tensor([0, 0])).tolist() == [1.0, -3.0]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(1, 2, 3, bias=False)
        self.c2 = nn.Conv1d(2, 2, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(2, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean(-1))


def test_network_bounds_on_a_tiny_net_by_hand():
    torch.manual_seed(0)
    net = _Net().double()
    x = torch.randn(20, 1, 9, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)  # labels the net fits: all margins >= 0
    b = network_bounds(net, x, y, margin_quantile=0.5)
    # lengths 9 -> 7 -> 4; the pooled linear layer has degree 4 and filter W/4
    w1, w2, w3 = net.c1.weight, net.c2.weight, net.fc.weight
    assert b.degrees == (3, 3, 4)
    assert b.filter_norms == pytest.approx((w1.norm().item(), w2.norm().item(), w3.norm().item() / 4))
    t2 = conv1d_toeplitz(w2.detach(), 7, 2, 1).norm().item()
    assert b.toeplitz_norms == pytest.approx((math.sqrt(7) * w1.norm().item(), t2, w3.norm().item() / 2))
    margins = multiclass_margins(net(x), y)
    gamma = torch.quantile(margins.detach(), 0.5).item()
    assert b.margin == pytest.approx(gamma)
    max_patch = (x[:, 0] ** 2).sum(0).max().item()
    want = sparse_norm_bound(list(b.filter_norms), [3, 3, 4], max_patch, 20, 3, gamma)
    assert b.sparse == pytest.approx(want)
    assert b.toeplitz == pytest.approx(toeplitz_norm_bound(list(b.toeplitz_norms), (x**2).sum().item(), 20, 3, gamma))
    assert b.ratio == pytest.approx(b.toeplitz / b.sparse)
    # the bound is invariant to rescaling a layer (ReLU nets are positively homogeneous; the margin rescales too)
    with torch.no_grad():
        net.c1.weight.mul_(3.0)
    assert network_bounds(net, x, y, margin_quantile=0.5).sparse == pytest.approx(b.sparse)


def test_bad_inputs():
    with pytest.raises(PhenomlabError):
        sparse_norm_bound([1.0], [1, 2], 1.0, 10, 2)
    with pytest.raises(PhenomlabError):
        toeplitz_norm_bound([1.0], 1.0, 0, 2)
    with pytest.raises(PhenomlabError):
        conv1d_toeplitz(torch.zeros(2, 2), 5)
    with pytest.raises(PhenomlabError):
        conv1d_output_length(3, 5)
    biased = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2, bias=False))
    with pytest.raises(PhenomlabError, match="bias"):
        network_bounds(biased, torch.zeros(4, 1, 3), torch.zeros(4, dtype=torch.long))


def test_exported():
    import phenomlab.probes as probes

    assert probes.sparse_norm_bound is sparse_norm_bound
    assert set(bounds.__all__) <= set(dir(probes))


def test_network_bounds_in_eval_mode_and_input_checks():
    class Dropped(_Net):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.fc(self.drop(x.mean(-1)))

    torch.manual_seed(0)
    net = Dropped().double()
    x = torch.randn(40, 1, 9, dtype=torch.float64)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    want = network_bounds(net, x, y, margin_quantile=0.5)
    net.train()  # an active Dropout would make the margins random
    assert network_bounds(net, x, y, margin_quantile=0.5) == want
    assert net.training
    with pytest.raises(PhenomlabError, match="x and y have different lengths"):
        network_bounds(net, x, y[:-1])
    with pytest.raises(PhenomlabError, match="x contains NaN"):
        network_bounds(net, x.clone().fill_(float("nan")), y)
    with pytest.raises(PhenomlabError, match="integer class labels"):
        multiclass_margins(torch.zeros(2, 3), torch.tensor([0.5, 1.0]))
    with pytest.raises(PhenomlabError, match="holds class 3 but the logits have 3 classes"):
        multiclass_margins(torch.zeros(2, 3), torch.tensor([0, 3]))


def _conv_head(act: nn.Module, pool: nn.Module | None, n_features: int) -> list[nn.Module]:
    head = [nn.Flatten()] if pool is None else [pool, nn.Flatten()]
    return [nn.Conv1d(1, 4, 3, bias=False), act, *head, nn.Linear(n_features, 3, bias=False)]


@pytest.mark.parametrize(
    "layers",
    [
        lambda: _conv_head(nn.ReLU(), None, 28),
        lambda: _conv_head(nn.ReLU(), nn.AdaptiveMaxPool1d(1), 4),
        lambda: _conv_head(nn.GELU(), nn.AdaptiveAvgPool1d(1), 4),
    ],
    ids=["flatten-not-pool", "max-pool", "gelu"],
)
def test_architectures_outside_the_bound_are_refused(layers):
    torch.manual_seed(0)
    net = nn.Sequential(*layers())
    x = torch.randn(30, 1, 9)
    with torch.no_grad():
        y = net(x).argmax(1)
    with pytest.raises(PhenomlabError, match="network_bounds covers"):
        network_bounds(net, x, y, margin_quantile=0.5)
    ok = nn.Sequential(*_conv_head(nn.ReLU(), nn.AdaptiveAvgPool1d(1), 4))
    with torch.no_grad():
        y = ok(x).argmax(1)
    assert network_bounds(ok, x, y, margin_quantile=0.5).sparse > 0
