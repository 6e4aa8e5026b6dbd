import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.probes.causal import BatchedAutoencoder, autoencoder_complexity, pca_residual


def test_batched_members_equal_standalone_networks():
    ae = BatchedAutoencoder(3, 7, 5, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for b in ae.biases:
            b.normal_()
    x = torch.randn(3, 11, 7)
    out = ae(x)
    for p in range(3):
        assert torch.allclose(out[p], ae.member(p)(x[p]), atol=1e-6)


def test_pca_residual_against_explicit_projection():
    x = torch.randn(4, 30, 6, dtype=torch.float64)
    got = pca_residual(x, 2)
    for p in range(4):
        xc = x[p] - x[p].mean(0)
        u, s, vh = torch.linalg.svd(xc, full_matrices=False)
        proj = xc @ vh[:2].T @ vh[:2]
        assert got[p].item() == pytest.approx(((xc - proj) ** 2).mean().item(), rel=1e-10)
    assert torch.allclose(pca_residual(x, 0), x.var(1, unbiased=False).mean(-1))


def test_autoencoder_codes_a_low_dimensional_set_and_members_are_independent():
    g = torch.Generator().manual_seed(0)
    # member 0: vectors on a 1-d curve (codable through the bottleneck); member 1: isotropic noise (not codable)
    t = torch.rand(1, 200, 1, generator=g) * 2 - 1
    curve = torch.cat([t, t**2, -t, 0.5 * t], -1)
    noise = torch.randn(1, 200, 4, generator=g) * curve.std()
    x = torch.cat([curve, noise])
    te, tr = autoencoder_complexity(x[:, :150], x[:, 150:], hidden=16, bottleneck=1, steps=800, lr=1e-2)
    var = x[:, 150:].var(1, unbiased=False).mean(-1)
    assert te[0] < 0.05 * var[0]  # reconstructed almost exactly
    assert te[1] > 0.5 * var[1]  # most of the noise is lost through a 1-unit bottleneck
    assert tr.shape == te.shape == (2,)


def test_bad_shapes():
    with pytest.raises(ConfigError):
        autoencoder_complexity(torch.zeros(2, 5, 3), torch.zeros(3, 5, 3))
    with pytest.raises(ConfigError):
        BatchedAutoencoder(0, 3, 2, 1, torch.Generator())
