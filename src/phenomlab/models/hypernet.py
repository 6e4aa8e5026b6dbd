"""A hypernetwork in NTK parametrisation: a meta-network ``f: z -> w`` emits the weights of a primary ``g: x -> y``.

Littwin, Galanti, Wolf & Yang (2020), "On Infinite-Width Hypernetworks", NeurIPS, arXiv 2003.12193.

The combined model is ``h(z, x) = g(x; f(z))``. Only the meta-network's parameters are trained; the primary
network's weights are the meta-network's outputs. With ``a = relu`` and standard normal parameters:

- meta-network (one hidden layer of width ``n_f``): ``f(z) = W2 a(W1 z / sqrt(d_z)) / sqrt(n_f)``, an output of
  ``n_g (d_x + 1)`` numbers split into ``U`` (``[n_g, d_x]``) and ``v`` (``[n_g]``);
- primary network (one hidden layer of width ``n_g``): ``g(x; U, v) = v . a(U x / sqrt(d_x)) / sqrt(n_g)``.

:class:`HyperNet` takes the concatenation ``[z, x]`` as its input, so the shared probes (``empirical_ntk``) and
the training engine see an ordinary ``nn.Module``. Closed forms used by the hypernet-ntk row:

- :meth:`HyperNet.meta_ntk_diag`: ``mean_k Theta^f_kk(z, z')``, the meta-network's NTK averaged over its outputs;
- :meth:`HyperNet.primary_weight_kernel`: ``K^g = sum_k dg(x; w(z))/dw_k dg(x'; w(z'))/dw_k``;
- :func:`hyperkernel_limit`: the dual-limit kernel ``Theta^f_inf(z, z') K^g_inf(x, x'; Sigma^f(z, z'))``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import PhenomlabError

__all__ = ["HyperNet", "hyperkernel_limit"]


class HyperNet(nn.Module):
    """``h([z, x]) = g(x; f(z))`` with meta width ``meta_width`` (n_f) and primary width ``primary_width`` (n_g).

    Parameters: ``meta_in`` (``W1``, ``[n_f, d_z]``) and ``meta_out`` (``W2``, ``[n_g (d_x + 1), n_f]``), both
    N(0, 1) (NTK parametrisation: the ``1/sqrt(fan_in)`` factors live in the forward pass). Output ``[N, 1]``.
    """

    def __init__(self, z_dim: int, x_dim: int, meta_width: int, primary_width: int) -> None:
        super().__init__()
        for name, v in (
            ("z_dim", z_dim),
            ("x_dim", x_dim),
            ("meta_width", meta_width),
            ("primary_width", primary_width),
        ):
            if v <= 0:
                raise PhenomlabError(f"HyperNet {name} must be positive, got {v}")
        self.z_dim, self.x_dim = z_dim, x_dim
        self.meta_width, self.primary_width = meta_width, primary_width
        self.n_primary = primary_width * (x_dim + 1)
        self.meta_in = nn.Parameter(torch.randn(meta_width, z_dim))
        self.meta_out = nn.Parameter(torch.randn(self.n_primary, meta_width))

    def split(self, inp: Tensor) -> tuple[Tensor, Tensor]:
        """``[N, d_z + d_x] -> (z [N, d_z], x [N, d_x])``."""
        if inp.ndim != 2 or inp.shape[1] != self.z_dim + self.x_dim:
            raise PhenomlabError(
                f"HyperNet input must be [N, z_dim + x_dim] = [N, {self.z_dim + self.x_dim}], got {tuple(inp.shape)}"
            )
        return inp[:, : self.z_dim], inp[:, self.z_dim :]

    def meta_hidden(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-activation ``W1 z / sqrt(d_z)`` and activation of the meta-network's hidden layer, ``[N, n_f]``."""
        pre = z @ self.meta_in.T / math.sqrt(self.z_dim)
        return pre, torch.relu(pre)

    def primary_weights(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``f(z)`` split into the primary network's ``U [N, n_g, d_x]`` and ``v [N, n_g]``."""
        _, act = self.meta_hidden(z)
        w = act @ self.meta_out.T / math.sqrt(self.meta_width)
        n = self.primary_width * self.x_dim
        return w[:, :n].reshape(-1, self.primary_width, self.x_dim), w[:, n:]

    def primary(self, x: Tensor, U: Tensor, v: Tensor) -> Tensor:
        """``g(x; U, v) = v . relu(U x / sqrt(d_x)) / sqrt(n_g)`` row by row, ``[N]``."""
        pre = torch.einsum("nkd,nd->nk", U, x) / math.sqrt(self.x_dim)
        return (v * torch.relu(pre)).sum(-1) / math.sqrt(self.primary_width)

    def forward(self, inp: Tensor) -> Tensor:
        z, x = self.split(inp)
        if z.shape[0] > 1:
            # many (z, x) pairs share a task z: run the (costly) meta-network once per distinct z
            zu, idx = torch.unique(z, dim=0, return_inverse=True)
            U, v = self.primary_weights(zu)
            return self.primary(x, U[idx], v[idx]).unsqueeze(-1)
        U, v = self.primary_weights(z)
        return self.primary(x, U, v).unsqueeze(-1)

    @torch.no_grad()
    def meta_ntk_diag(self, z1: Tensor, z2: Tensor) -> Tensor:
        """``mean_k Theta^f_kk(z, z')`` over the ``n_g (d_x + 1)`` outputs of ``f``, ``[N1, N2]``.

        ``Theta^f_kk' = d_kk' a(z).a(z')/n_f + sum_j W2_kj W2_k'j a'_j(z) a'_j(z') (z.z'/d_z) / n_f`` for
        ``a = relu(W1 z / sqrt(d_z))``; in the wide-meta limit the output block is ``Theta^f(z, z') I``, so this
        output-mean is the meta kernel of the limit.
        """
        p1, a1 = self.meta_hidden(z1)
        p2, a2 = self.meta_hidden(z2)
        d1, d2 = (p1 > 0).to(a1.dtype), (p2 > 0).to(a2.dtype)
        w2sq = (self.meta_out**2).mean(0)  # mean_k W2_kj^2, [n_f]
        zz = z1 @ z2.T / self.z_dim
        return (a1 @ a2.T + (d1 * w2sq) @ d2.T * zz) / self.meta_width

    @torch.no_grad()
    def primary_weight_kernel(self, inp1: Tensor, inp2: Tensor) -> Tensor:
        """``K^g[(z, x), (z', x')] = sum_k dg(x; w(z))/dw_k * dg(x'; w(z'))/dw_k`` (weights held at f's output).

        ``= (1/n_g) sum_j [relu(u_j) relu(u'_j) + v_j v'_j 1[u_j > 0] 1[u'_j > 0] x.x'/d_x]``,
        ``u = U(z) x / sqrt(d_x)``; ``[N1, N2]``.
        """
        z1, x1 = self.split(inp1)
        z2, x2 = self.split(inp2)
        U1, v1 = self.primary_weights(z1)
        U2, v2 = self.primary_weights(z2)
        u1 = torch.einsum("nkd,nd->nk", U1, x1) / math.sqrt(self.x_dim)
        u2 = torch.einsum("nkd,nd->nk", U2, x2) / math.sqrt(self.x_dim)
        xx = x1 @ x2.T / self.x_dim
        s1, s2 = (u1 > 0).to(u1.dtype), (u2 > 0).to(u2.dtype)
        return (torch.relu(u1) @ torch.relu(u2).T + ((v1 * s1) @ (v2 * s2).T) * xx) / self.primary_width


def _arccos(k11: Tensor, k22: Tensor, k12: Tensor) -> tuple[Tensor, Tensor]:
    """``E[relu(u) relu(u')]`` and ``E[1[u>0] 1[u'>0]]`` for centred Gaussians with covariance ``[[k11, k12],
    [k12, k22]]`` (Cho & Saul 2009): ``sqrt(k11 k22) (sin t + (pi - t) cos t) / (2 pi)`` and ``(pi - t) / (2 pi)``,
    ``cos t = k12 / sqrt(k11 k22)``."""
    norm = torch.sqrt(k11 * k22).clamp_min(1e-30)
    cos = (k12 / norm).clamp(-1.0, 1.0)
    t = torch.arccos(cos)
    return norm * (torch.sin(t) + (math.pi - t) * cos) / (2 * math.pi), (math.pi - t) / (2 * math.pi)


def hyperkernel_limit(z1: Tensor, x1: Tensor, z2: Tensor, x2: Tensor) -> Tensor:
    """The dual-limit (``n_f, n_g -> inf``) NTK of :class:`HyperNet`, ``[N1, N2]``:

    ``Theta^h = Theta^f(z, z') * K^g(x, x'; Sigma^f(z, z'))`` where, with ``q = z.z'/d_z``,
    ``Sigma^f(z, z') = E[relu(a) relu(a')]`` (the meta GP kernel, ``a ~ N(0, q)``),
    ``Theta^f = Sigma^f + E[1[a>0] 1[a'>0]] q`` (the meta NTK per output), and the primary factor is the primary
    network's NTK with weights drawn from the meta GP: ``u = U(z) x / sqrt(d_x)`` has covariance
    ``Sigma^f(z, z') x.x'/d_x``, so ``K^g = E[relu(u) relu(u')] + Sigma^f(z, z') E[1[u>0] 1[u'>0]] x.x'/d_x``.
    The primary factor depends on ``z, z'`` through ``Sigma^f``: the limit is a product of the meta NTK and a
    z-modulated primary kernel, not a plain Hadamard product of a kernel on ``z`` and a kernel on ``x``
    (derived from the chain rule, the form of the hyperkernel of Littwin et al. 2020, arXiv 2003.12193).
    """
    dz, dx = z1.shape[1], x1.shape[1]
    q12 = z1 @ z2.T / dz
    q11 = (z1 * z1).sum(1, keepdim=True) / dz
    q22 = ((z2 * z2).sum(1) / dz).unsqueeze(0)
    sig12, dot12 = _arccos(q11, q22, q12)
    sig11, _ = _arccos(q11, q11, q11)
    sig22, _ = _arccos(q22, q22, q22)
    theta_f = sig12 + dot12 * q12
    r12 = x1 @ x2.T / dx
    r11 = (x1 * x1).sum(1, keepdim=True) / dx
    r22 = ((x2 * x2).sum(1) / dx).unsqueeze(0)
    e_relu, e_step = _arccos(sig11 * r11, sig22 * r22, sig12 * r12)
    return theta_f * (e_relu + sig12 * e_step * r12)
