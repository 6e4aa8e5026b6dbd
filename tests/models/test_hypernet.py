import math

import pytest
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.models import HyperNet, hyperkernel_limit
from phenomlab.models.hypernet import _arccos
from phenomlab.probes.kernels import empirical_ntk


def _inputs(dz=3, dx=2, nz=3, nx=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z, x = torch.randn(nz, dz, generator=g), torch.randn(nx, dx, generator=g)
    return torch.cat([z.repeat_interleave(nx, 0), x.repeat(nz, 1)], 1)


def _explicit(m: HyperNet, row: torch.Tensor) -> torch.Tensor:
    """h(z, x) by explicit loops over the meta and primary units."""
    W1, W2 = m.meta_in.detach(), m.meta_out.detach()
    z, x = row[: m.z_dim], row[m.z_dim :]
    hidden = [max(0.0, float(W1[j] @ z) / math.sqrt(m.z_dim)) for j in range(m.meta_width)]
    w = [sum(float(W2[k, j]) * hidden[j] for j in range(m.meta_width)) / math.sqrt(m.meta_width)
         for k in range(m.n_primary)]  # fmt: skip
    out = 0.0
    for i in range(m.primary_width):
        u = sum(w[i * m.x_dim + d] * float(x[d]) for d in range(m.x_dim)) / math.sqrt(m.x_dim)
        out += w[m.primary_width * m.x_dim + i] * max(0.0, u)
    return torch.tensor(out / math.sqrt(m.primary_width))


def test_forward_matches_explicit_loops_and_single_rows():
    torch.manual_seed(0)
    m = HyperNet(3, 2, meta_width=5, primary_width=4)
    inp = _inputs()
    out = m(inp)
    assert out.shape == (inp.shape[0], 1)
    for i in range(inp.shape[0]):
        assert torch.allclose(out[i, 0], _explicit(m, inp[i]), atol=1e-5)
        # one row at a time (no sharing of the meta pass across rows) gives the same numbers
        assert torch.allclose(m(inp[i : i + 1])[0, 0], out[i, 0], atol=1e-6)


def _jacobian(m: HyperNet, inp: torch.Tensor) -> torch.Tensor:
    rows = []
    for i in range(inp.shape[0]):
        grads = torch.autograd.grad(m(inp[i : i + 1]).sum(), list(m.parameters()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("mode", ["trace", "full"])
def test_probe_ntk_equals_brute_force_jacobian_product(mode):
    torch.manual_seed(1)
    m = HyperNet(3, 2, meta_width=6, primary_width=5)
    inp = _inputs(seed=1)
    J = _jacobian(m, inp)
    K = empirical_ntk(m, inp, mode=mode)
    K = K[:, :, 0, 0] if mode == "full" else K
    assert torch.allclose(K, J @ J.T, atol=1e-5, rtol=1e-5)


def test_meta_kernel_and_primary_kernel_match_autograd_and_chain_rule():
    torch.manual_seed(2)
    m = HyperNet(3, 2, meta_width=7, primary_width=3)
    inp = _inputs(nz=2, nx=3, seed=2)
    z, x = m.split(inp)
    params = list(m.parameters())
    # d f_k(z) / d theta for every output k of the meta-network
    Jf = []
    for i in range(inp.shape[0]):
        U, v = m.primary_weights(z[i : i + 1])
        w = torch.cat([U.reshape(-1), v.reshape(-1)])
        Jf.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(w[k], params, retain_graph=True)])
                               for k in range(m.n_primary)]))  # fmt: skip
    Jf = torch.stack(Jf)  # [N, K, P]
    theta_f = torch.einsum("akp,blp->abkl", Jf, Jf)  # [N, N, K, K]
    diag = torch.diagonal(theta_f, dim1=2, dim2=3).mean(-1)
    assert torch.allclose(m.meta_ntk_diag(z, z), diag, atol=1e-5)
    # d g(x; w) / d w at w = f(z), by autograd with w as a leaf
    Jg = []
    for i in range(inp.shape[0]):
        U, v = m.primary_weights(z[i : i + 1])
        w = torch.cat([U.reshape(-1), v.reshape(-1)]).detach().requires_grad_(True)
        n = m.primary_width * m.x_dim
        out = m.primary(x[i : i + 1], w[:n].reshape(1, m.primary_width, m.x_dim), w[n:].reshape(1, -1))
        Jg.append(torch.autograd.grad(out.sum(), w)[0])
    Jg = torch.stack(Jg)  # [N, K]
    assert torch.allclose(m.primary_weight_kernel(inp, inp), Jg @ Jg.T, atol=1e-5)
    # chain rule: Theta^h = sum_kk' dg/dw_k dg/dw_k' Theta^f_kk'
    chain = torch.einsum("ak,bl,abkl->ab", Jg, Jg, theta_f)
    assert torch.allclose(empirical_ntk(m, inp), chain, atol=1e-5)


def test_arccos_closed_forms_and_monte_carlo():
    one = torch.tensor(2.0)
    r, s = _arccos(one, one, one)  # u = u': E[relu(u)^2] = var / 2, E[1[u>0]] = 1/2
    assert torch.isclose(r, torch.tensor(1.0)) and torch.isclose(s, torch.tensor(0.5))
    r, s = _arccos(one, torch.tensor(0.5), torch.tensor(0.0))  # independent: E relu(u) E relu(u') = sqrt(k11 k22)/2pi
    assert torch.isclose(r, torch.tensor(1.0 / (2 * math.pi))) and torch.isclose(s, torch.tensor(0.25))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 400_000, generator=g, dtype=torch.float64)
    u, v = a, 0.6 * a + 0.8 * b  # unit variances, correlation 0.6
    r, s = _arccos(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.6))
    assert abs(float((torch.relu(u) * torch.relu(v)).mean()) - float(r)) < 3e-3
    assert abs(float(((u > 0) & (v > 0)).double().mean()) - float(s)) < 3e-3


def test_hyperkernel_limit_hand_value_and_wide_network():
    # |z|^2 = d_z and |x|^2 = d_x, on the diagonal: Sigma^f = 1/2, Theta^f = 1/2 + 1/2 = 1,
    # K^g = E[relu(u)^2] + Sigma^f E[1[u>0]] = 1/4 + 1/4, so Theta^h = 1/2
    z = torch.tensor([[1.0, -1.0, 1.0]])
    x = torch.tensor([[1.0, 1.0]])
    assert torch.isclose(hyperkernel_limit(z, x, z, x), torch.tensor([[0.5]]))
    # a wide network's product form sits close to the limit; a narrow one does not
    inp = _inputs(nz=3, nx=3, seed=3)
    lim = hyperkernel_limit(inp[:, :3], inp[:, 3:], inp[:, :3], inp[:, 3:])

    def dist(nf, ng):
        torch.manual_seed(0)
        m = HyperNet(3, 2, nf, ng)
        k = m.meta_ntk_diag(inp[:, :3], inp[:, :3]) * m.primary_weight_kernel(inp, inp)
        return float((k - lim).norm() / lim.norm())

    assert dist(2048, 1024) < 0.15 and dist(8, 4) > 0.5


@pytest.mark.parametrize("kw", [dict(z_dim=0), dict(x_dim=-1), dict(meta_width=0), dict(primary_width=0)])
def test_bad_sizes(kw):
    args = dict(z_dim=3, x_dim=2, meta_width=4, primary_width=4) | kw
    with pytest.raises(PhenomlabError):
        HyperNet(**args)


def test_bad_input_shape():
    with pytest.raises(PhenomlabError):
        HyperNet(3, 2, 4, 4)(torch.randn(5, 4))
