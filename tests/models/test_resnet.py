"""Exact tests of the depth-scaled residual net (phenomlab.models.resnet)."""

from __future__ import annotations

import math

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.models.resnet import (
    StackedResNet,
    depth_scale,
    init_weights,
    max_layer_norm,
    resnet_forward,
    rms_roughness,
    roughness,
    smooth_path,
)


def test_forward_by_hand() -> None:
    # L = 2, d = 2, one model, one input: h_{k+1} = h_k + delta tanh(A_k h_k + b_k) written out with floats
    A = [[[0.5, -1.0], [2.0, 0.3]], [[-0.7, 0.2], [0.1, 1.5]]]
    b = [[0.1, -0.2], [0.0, 0.4]]
    h = [0.3, -1.2]
    delta = 0.5
    for k in range(2):
        z = [sum(A[k][i][j] * h[j] for j in range(2)) + b[k][i] for i in range(2)]
        h = [h[i] + delta * math.tanh(z[i]) for i in range(2)]
    out = resnet_forward(torch.tensor([[[0.3, -1.2]]]), torch.tensor([A]), torch.tensor([b]), delta, "tanh")
    assert out[0, 0].tolist() == pytest.approx(h, abs=1e-6)


def test_stacked_models_are_independent() -> None:
    net = StackedResNet(3, 4, 5, n_models=3, init="smooth", generator=torch.Generator().manual_seed(0))
    x = torch.randn(7, 3)
    out = net(x)
    for m in range(3):
        h0 = (x @ net.C[m].T)[None]
        hL = resnet_forward(h0, net.A[m : m + 1], net.b[m : m + 1], 1 / 5, "tanh")
        assert torch.allclose(out[m], hL[0] @ net.w[m], atol=1e-6)
    # the loss of model 0 does not move the other models' gradients
    out[0].sum().backward()
    assert net.A.grad[1:].abs().max() == 0 and net.A.grad[0].abs().max() > 0


def test_depth_scale() -> None:
    assert depth_scale(16, "1/L") == 1 / 16
    assert depth_scale(16, "1/sqrt(L)") == 0.25
    with pytest.raises(ConfigError):
        depth_scale(16, "1/L^2")
    with pytest.raises(ConfigError):
        init_weights(1, 4, 2, "orthogonal", torch.Generator())


def _expected_sq_step(L: int, d: int, J: int) -> float:
    # E ||A(t + 1/L) - A(t)||_F^2 = d / (J+1) * sum_j 2 (1 - cos(pi j / L)) (cos, sin pairs of each mode)
    return d / (J + 1) * sum(2 * (1 - math.cos(math.pi * j / L)) for j in range(1, J + 1))


def test_smooth_init_steps_scale_as_one_over_L() -> None:
    d, J, M = 4, 3, 4000
    g = torch.Generator().manual_seed(0)
    for L in (8, 32):
        A = init_weights(M, L, d, "smooth", g, n_modes=J)
        sq = (A[:, 1:] - A[:, :-1]).pow(2).sum((2, 3)).mean()
        assert float(sq) == pytest.approx(_expected_sq_step(L, d, J), rel=0.05)
        # every layer has entry variance 1/d, like the i.i.d. init
        assert float(A.var(0).mean()) == pytest.approx(1 / d, rel=0.05)
    # the expectation itself is ~ (pi^2 sum j^2 d/(J+1)) / L^2: the root-mean-square step falls as 1/L
    r = math.sqrt(_expected_sq_step(64, d, J) / _expected_sq_step(256, d, J))
    assert r == pytest.approx(4.0, rel=1e-3)
    # i.i.d. layers: E ||A_{k+1} - A_k||^2 = 2 d at every depth
    A = init_weights(M, 8, d, "iid", g)
    assert float((A[:, 1:] - A[:, :-1]).pow(2).sum((2, 3)).mean()) == pytest.approx(2 * d, rel=0.05)


def test_smooth_path_of_fixed_coefficients_is_exactly_first_order() -> None:
    # same path sampled at L and 2L: L * max step converges (the path's max slope), to O(1/L)
    c = torch.randn(1, 7, 3, 3, generator=torch.Generator().manual_seed(1)) / math.sqrt(3)
    vals = []
    for L in (128, 256, 512):
        A = smooth_path(torch.arange(L, dtype=torch.float64) / L, c.double())
        vals.append(L * float(roughness(A)[0]))
    assert abs(vals[2] - vals[1]) < abs(vals[1] - vals[0]) + 1e-9
    assert vals[2] == pytest.approx(vals[1], rel=0.02)


def test_roughness_and_max_layer_norm_by_hand() -> None:
    A = torch.tensor([[[[1.0]], [[3.0]], [[2.5]]]])  # M=1, L=3, 1x1 layers
    assert roughness(A).tolist() == [2.0]
    assert max_layer_norm(A).tolist() == [3.0]


def test_rms_and_max_roughness_by_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    for m in range(2):
        steps = [
            math.sqrt(sum(float(A[m, k + 1, i, j] - A[m, k, i, j]) ** 2 for i in range(3) for j in range(4)))
            for k in range(4)
        ]
        assert float(roughness(A)[m]) == pytest.approx(max(steps), rel=1e-12)
        assert float(rms_roughness(A)[m]) == pytest.approx(math.sqrt(sum(s * s for s in steps) / 4), rel=1e-12)
    # one spike among smooth steps moves the max by its whole size, the root-mean-square by 1/sqrt(L-1) of it
    B = torch.zeros(1, 101, 1, 1, dtype=torch.float64)
    B[0, 51:] = 1.0
    assert float(roughness(B)[0]) == 1.0
    assert float(rms_roughness(B)[0]) == pytest.approx(0.1, rel=1e-12)
