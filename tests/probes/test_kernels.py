import math

import pytest
import torch
from torch import nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes.kernels import empirical_ntk, kernel_alignment, kernel_change, kernel_distance


def _net(out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, out)).double()


def _explicit_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[N, O, P] built row by row with torch.autograd.grad (the reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(x)
    out = out.reshape(out.shape[0], -1)
    rows = []
    for i in range(out.shape[0]):
        per_out = []
        for o in range(out.shape[1]):
            g = torch.autograd.grad(out[i, o], params, retain_graph=True)
            per_out.append(torch.cat([t.reshape(-1) for t in g]))
        rows.append(torch.stack(per_out))
    return torch.stack(rows)


def test_ntk_matches_explicit_jacobians():
    model = _net()
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    J1, J2 = _explicit_jacobian(model, x1), _explicit_jacobian(model, x2)
    full_ref = torch.einsum("aip,bjp->abij", J1, J2)
    full = empirical_ntk(model, x1, x2, mode="full")
    assert full.shape == (6, 4, 3, 3)
    assert torch.allclose(full, full_ref, atol=1e-10, rtol=0)
    trace = empirical_ntk(model, x1, x2, mode="trace")
    assert torch.allclose(trace, J1.reshape(6, -1) @ J2.reshape(4, -1).T, atol=1e-10, rtol=0)
    diag = empirical_ntk(model, x1, x2, mode="diagonal")
    assert torch.allclose(diag, torch.diagonal(full_ref, dim1=2, dim2=3), atol=1e-10, rtol=0)
    # chunked computation gives the same numbers
    assert torch.allclose(empirical_ntk(model, x1, x2, mode="full", chunk_size=2), full, atol=1e-12, rtol=0)


def test_ntk_symmetric_psd_and_scalar_output():
    model = _net(out=1)
    x = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    K = empirical_ntk(model, x)
    assert K.shape == (8, 8)
    assert torch.allclose(K, K.T, atol=1e-12)
    assert float(torch.linalg.eigvalsh(K)[0]) > -1e-10
    J = _explicit_jacobian(model, x)[:, 0]
    assert torch.allclose(K, J @ J.T, atol=1e-10, rtol=0)
    assert torch.allclose(empirical_ntk(model, x, mode="full")[..., 0, 0], K, atol=1e-12)


def test_ntk_frozen_params_and_mode_restored():
    model = _net()
    model[0].weight.requires_grad_(False)
    model.train()
    x = torch.randn(5, 5, dtype=torch.float64)
    K = empirical_ntk(model, x)
    J = _explicit_jacobian(model, x)
    assert torch.allclose(K, J.reshape(5, -1) @ J.reshape(5, -1).T, atol=1e-10, rtol=0)
    assert model.training


def test_kernel_change_distance_alignment():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(10, 10, generator=g, dtype=torch.float64)
    K0 = A @ A.T
    assert kernel_change(K0, K0) == 0.0
    assert math.isclose(kernel_change(K0, 2 * K0), 1.0, rel_tol=1e-12)
    assert abs(kernel_distance(K0, 3 * K0)) < 1e-12
    E1, E2 = torch.zeros(4, 4), torch.zeros(4, 4)
    E1[0, 0], E2[1, 1] = 1.0, 1.0
    assert math.isclose(kernel_distance(E1, E2), 1.0)

    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    Y = torch.nn.functional.one_hot(y).double()
    ideal = Y @ Y.T
    assert math.isclose(kernel_alignment(ideal, y), 1.0, rel_tol=1e-12)
    assert math.isclose(kernel_alignment(K0, y), kernel_alignment(K0, Y), rel_tol=1e-12)
    ref = float((K0 * ideal).sum() / (K0.norm() * ideal.norm()))
    assert math.isclose(kernel_alignment(K0, y), ref, rel_tol=1e-12)
    v = torch.randn(10, generator=g, dtype=torch.float64)
    assert math.isclose(kernel_alignment(torch.outer(v, v), v), 1.0, rel_tol=1e-12)
    # centring removes a constant offset that inflates the uncentred alignment
    assert kernel_alignment(ideal + 5.0, y, center=True) > kernel_alignment(ideal + 5.0, y)
    assert math.isclose(kernel_alignment(ideal + 5.0, y, center=True), 1.0, rel_tol=1e-12)


def test_bad_inputs():
    model = _net()
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode"):
        empirical_ntk(model, x, mode="nope")
    with pytest.raises(ValueError, match="sample shapes"):
        empirical_ntk(model, x, torch.randn(4, 6, dtype=torch.float64))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        empirical_ntk(model, bad)
    K = torch.eye(4)
    with pytest.raises(ValueError, match="shapes"):
        kernel_change(K, torch.eye(5))
    with pytest.raises(ValueError, match="zero"):
        kernel_change(torch.zeros(3, 3), K[:3, :3])
    with pytest.raises(ValueError, match="NaN"):
        kernel_distance(K, torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="different lengths"):
        kernel_alignment(K, torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="square"):
        kernel_alignment(torch.ones(4, 3), torch.tensor([0, 1, 0, 1]))


class _ReusedWeight(nn.Module):
    """A linear layer whose weight is also used outside its forward (tied by hand): not ``delta a^T``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        return self.b(torch.tanh(nn.functional.linear(h, self.a.weight)))


class _CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))


class _Unfold(nn.Module):
    """[N * T, d] -> [N, T * d]: a per-sample model whose first layer sees a matrix, not a vector."""

    def __init__(self, t: int) -> None:
        super().__init__()
        self.t = t

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(-1, self.t * h.shape[-1])


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(3)
    shared = nn.Linear(5, 5)
    frozen_bias = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    frozen_bias[0].bias.requires_grad_(False)
    return {
        "mlp": _net(),
        "one linear layer": nn.Linear(5, 3),
        "norms, no last bias": nn.Sequential(
            nn.Linear(5, 8), nn.LayerNorm(8), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(8, 3, bias=False)
        ),
        "conv then linear": nn.Sequential(
            nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 3)
        ),
        "per-token linear": nn.Sequential(
            nn.Unflatten(1, (1, 5)), nn.Linear(5, 4), nn.Tanh(), nn.Flatten(), nn.Linear(4, 3)
        ),
        "tokens folded into the batch": nn.Sequential(
            nn.Unflatten(1, (1, 5)),
            nn.Unflatten(2, (5, 1)),
            nn.Flatten(0, 2),
            nn.Linear(1, 4),
            nn.Tanh(),
            _Unfold(5),
            nn.Linear(20, 3),
        ),
        "weight reused outside": _ReusedWeight(),
        "layer called twice": _CalledTwice(),
        "one module at two paths": nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(5, 3)),
        "frozen bias": frozen_bias,
    }


@pytest.mark.parametrize("name", list(_models()))
def test_ntk_by_layer_structure_equals_explicit_jacobians(name):
    """method="auto" takes nn.Linear layers by J_W = delta a^T; wherever that does not hold it must fall back."""
    model = _models()[name].double().eval()
    g = torch.Generator().manual_seed(4)
    x1 = torch.randn(5, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    J1, J2 = _explicit_jacobian(model, x1), _explicit_jacobian(model, x2)
    ref = torch.einsum("aip,bjp->abij", J1, J2)
    params = [p for p in model.parameters()]
    for method in ("auto", "jacobian"):
        full = empirical_ntk(model, x1, x2, mode="full", method=method)
        assert torch.allclose(full, ref, atol=1e-12, rtol=0), (method, float((full - ref).abs().max()))
        # in blocks of 2 samples (auto: the small non-linear rest by Jacobian GEMMs; jacobian: 2 columns at a time)
        chunked = empirical_ntk(model, x1, x2, mode="full", method=method, chunk_size=2)
        assert torch.allclose(chunked, ref, atol=1e-12, rtol=0)
        diag = empirical_ntk(model, x1, x2, mode="diagonal", method=method)
        assert torch.allclose(diag, torch.diagonal(ref, dim1=2, dim2=3), atol=1e-12, rtol=0)
        trace = empirical_ntk(model, x1, mode="trace", method=method)
        ref_trace = J1.reshape(5, -1) @ J1.reshape(5, -1).T
        assert torch.allclose(trace, ref_trace, atol=1e-12, rtol=0)
    # the model keeps its own Parameter objects (torch.func.functional_call alone does not when a module sits at
    # two paths: it leaves a plain tensor there)
    assert [p for p in model.parameters()] == params and all(isinstance(p, nn.Parameter) for p in params)
    refuses = name in (
        "per-token linear",
        "tokens folded into the batch",
        "weight reused outside",
        "layer called twice",
    )
    if refuses:
        with pytest.raises(PhenomlabError, match="method='structured'"):
            empirical_ntk(model, x1, method="structured")
    else:
        assert torch.allclose(empirical_ntk(model, x1, method="structured"), ref_trace, atol=1e-12, rtol=0)


def test_ntk_rejects_an_unknown_method():
    with pytest.raises(PhenomlabError, match="method must be one of"):
        empirical_ntk(_net(), torch.randn(2, 5, dtype=torch.float64), method="fast")


def test_model_probes_keep_the_parameters_of_a_module_at_two_paths():
    """torch.func.functional_call leaves a plain tensor in place of such a module's Parameter (torch 2.13)."""
    from phenomlab.probes import top_hessian_eigenvalue

    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 2, (8,))
    params = list(model.parameters())
    top_hessian_eigenvalue(model, nn.functional.cross_entropy, (x, y))
    empirical_ntk(model, x, method="jacobian")
    assert list(model.parameters()) == params and isinstance(shared.weight, nn.Parameter)


def test_structured_route_takes_integer_token_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2)).double()
    tokens = torch.randint(0, 10, (3, 2))
    want = empirical_ntk(net, tokens, method="jacobian")
    assert torch.allclose(empirical_ntk(net, tokens), want, rtol=1e-12, atol=1e-12)
