import numpy as np
import pytest
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.probes.attributes import best_correlations, correlation_matrix, mean_best_correlation


def test_mean_best_correlation_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(200, 4, generator=g) < 0.5).float()
    u = torch.randn(200, 7, generator=g)
    u[:, 3] = a[:, 1] + 0.3 * u[:, 3]
    u[:, 5] = -a[:, 2]
    want = []
    for i in range(4):
        want.append(max(abs(np.corrcoef(u[:, j].numpy(), a[:, i].numpy())[0, 1]) for j in range(7)))
    assert np.allclose(best_correlations(u, a).numpy(), want, atol=1e-10)
    assert abs(mean_best_correlation(u, a) - np.mean(want)) < 1e-10
    assert abs(float(best_correlations(u, a)[2]) - 1.0) < 1e-12  # a negated attribute is recovered


def test_constant_columns_have_zero_correlation():
    a = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    u = torch.tensor([[5.0, 0.0], [5.0, 1.0], [5.0, 0.0], [5.0, 1.0]])
    c = correlation_matrix(u, a)
    assert c[0].abs().max() == 0 and c[:, 1].abs().max() == 0 and abs(float(c[1, 0]) - 1.0) < 1e-12


def test_bad_shapes():
    with pytest.raises(PhenomlabError):
        correlation_matrix(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(PhenomlabError):
        correlation_matrix(torch.zeros(1, 2), torch.zeros(1, 2))
