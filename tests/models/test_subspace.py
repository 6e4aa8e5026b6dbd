import pytest
import torch
from torch import nn

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP
from phenomlab.models.subspace import (
    DenseProjection,
    FastfoodProjection,
    SubspaceModel,
    dense_projection,
    hadamard_transform,
    make_projection,
)
from phenomlab.train import TrainConfig, train


def sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def test_hadamard_transform_matches_the_sylvester_matrix():
    x = torch.randn(3, 16, dtype=torch.float64)
    assert torch.allclose(hadamard_transform(x), x @ sylvester(16))
    # H H = n I: applying it twice returns n x
    assert torch.allclose(hadamard_transform(hadamard_transform(x)), 16 * x)
    with pytest.raises(PhenomlabError, match="power-of-two"):
        hadamard_transform(torch.zeros(12))


def test_dense_projection_has_unit_columns():
    p = dense_projection(500, 7, torch.Generator().manual_seed(0))
    assert p.shape == (500, 7)
    assert torch.allclose(p.norm(dim=0), torch.ones(7), atol=1e-6)


def test_fastfood_equals_its_explicit_matrix():
    # D = 20 pads to L = 32: P = (H G Pi H B)[:D, :d] / (||G|| sqrt(D)) built entry by entry from its factors
    D, d = 20, 5
    ff = FastfoodProjection(D, d, seed=3)
    L = ff.L
    assert L == 32
    H = sylvester(L)
    B = torch.diag(ff.B.double())
    G = torch.diag(ff.G.double())
    Pi = torch.zeros(L, L, dtype=torch.float64)
    Pi[torch.arange(L), ff.perm] = 1.0  # (Pi v)_i = v[perm[i]]
    full = H @ G @ Pi @ H @ B / (ff.G.double().norm() * D**0.5)
    expected = full[:D, :d]
    assert torch.allclose(ff.matrix().double(), expected, atol=1e-5)
    z = torch.randn(d)
    assert torch.allclose(ff(z).double(), expected @ z.double(), atol=1e-5)


def test_fastfood_columns_have_unit_norm_when_D_is_a_power_of_two():
    ff = FastfoodProjection(64, 10, seed=1)
    assert torch.allclose(ff.matrix().norm(dim=0), torch.ones(10), atol=1e-5)
    # truncated to D < L rows, the squared column norms average ~1 (exactly 1 in expectation over the rows kept)
    trunc = FastfoodProjection(1000, 50, seed=1).matrix().norm(dim=0) ** 2
    assert abs(float(trunc.mean()) - 1.0) < 0.1


def test_auto_projection_switches_to_fastfood_for_large_products():
    assert isinstance(make_projection(100, 10), DenseProjection)
    assert isinstance(make_projection(100_000, 200), FastfoodProjection)
    with pytest.raises(PhenomlabError, match="exceeds"):
        make_projection(10, 11)
    with pytest.raises(PhenomlabError, match="unknown projection"):
        make_projection(10, 2, "sparse")


@pytest.mark.parametrize("kind", ["dense", "fastfood"])
def test_gradient_wrt_z_is_P_transpose_gradient_wrt_theta(kind):
    torch.manual_seed(0)
    base = MLP(6, 3, width=5, depth=2)
    sub = SubspaceModel(base, d=4, projection=kind, seed=7)
    assert [n for n, _ in sub.named_parameters()] == ["z"]
    assert sub.kind == kind
    with torch.no_grad():
        sub.z.normal_()
    x, y = torch.randn(11, 6), torch.randint(0, 3, (11,))
    nn.functional.cross_entropy(sub(x), y).backward()
    # the same loss as a function of the full parameter vector theta, at theta0 + P z
    theta = sub.theta().detach().requires_grad_(True)
    out = torch.func.functional_call(base, sub.parameters_dict(theta), (x,))
    (g_theta,) = torch.autograd.grad(nn.functional.cross_entropy(out, y), theta)
    P = sub.projection.matrix()
    assert torch.allclose(sub.z.grad, P.T @ g_theta, atol=1e-6)


def test_z_zero_reproduces_the_base_network_and_base_stays_untouched():
    torch.manual_seed(0)
    base = MLP(6, 3, width=5, depth=1)
    before = [p.detach().clone() for p in base.parameters()]
    sub = SubspaceModel(base, d=3)
    x = torch.randn(4, 6)
    assert torch.allclose(sub(x), base(x))
    x_tr, y_tr = torch.randn(40, 6), torch.randint(0, 3, (40,))
    h = train(sub, (x_tr, y_tr), TrainConfig(steps=30, lr=0.1, optimizer="adam", eval_every=30))
    assert h.last("train_loss") < h.records[0]["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(before, base.parameters(), strict=True))
    assert sub.z.abs().sum() > 0
    # only z and theta0 are saved: P is a function of the seed
    assert set(sub.state_dict()) == {"z", "theta0"}


def test_a_module_at_two_paths_keeps_its_parameters():
    # torch 2.13's functional_call left a plain tensor (holding z's graph) where such a module's weight was
    torch.manual_seed(0)
    shared = nn.Linear(3, 3)
    base = nn.Sequential(shared, nn.Tanh(), shared)
    weight = shared.weight
    sub = SubspaceModel(base, d=2, projection="dense")
    x = torch.randn(4, 3)
    sub(x).sum().backward()
    assert shared.weight is weight and all(isinstance(p, nn.Parameter) for p in base.parameters())
    assert torch.allclose(sub(x), base(x))  # z is still zero


def test_refuses_modules_with_buffers():
    with pytest.raises(PhenomlabError, match="buffers"):
        SubspaceModel(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), d=2)


@pytest.mark.parametrize("projection", ["dense", "fastfood"])
def test_a_float64_model_gets_a_float64_subspace(projection):
    base = MLP(4, 3, width=8, depth=2).double()
    sub = SubspaceModel(base, d=5, projection=projection)
    x = torch.randn(6, 4, dtype=torch.float64)
    assert sub(x).dtype == torch.float64  # it raised "expected Double, got Float" in addmv
    assert torch.allclose(sub(x), base(x), rtol=0, atol=1e-12)  # z = 0 is the base itself
