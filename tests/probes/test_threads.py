"""No probe touches torch's process-wide thread count unless the caller opts in with ``probes.threads``."""

import numpy as np
import pytest
import torch
from torch import nn

import phenomlab.probes as probes
from phenomlab.errors import PhenomlabError

CE = nn.CrossEntropyLoss()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.arange(40) % 4
    return x, y


def _calls():
    x, y = _data()
    y3 = y % 3
    m = _mlp()
    w = torch.randn(30, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probs = torch.softmax(x[:, :3], 1)
    return {
        "singular_values": lambda: probes.singular_values(w),
        "power_law_alpha": lambda: probes.power_law_alpha(torch.rand(200, dtype=torch.float64) + 0.1),
        "layer_spectra": lambda: probes.layer_spectra(m),
        "linear_cka": lambda: probes.linear_cka(x, x[:, :3]),
        "rbf_cka": lambda: probes.rbf_cka(x, x[:, :3], unbiased=True),
        "hsic1": lambda: probes.hsic1(x, x[:, :3]),
        "minibatch_cka": lambda: probes.minibatch_cka(x, x[:, :3], batch_size=8),
        "cka_matrix": lambda: probes.cka_matrix({"a": x}, {"b": x[:, :3]}),
        "svcca": lambda: probes.svcca(x, x[:, :3]),
        "pwcca": lambda: probes.pwcca(x, x[:, :3]),
        "collapse_metrics": lambda: probes.collapse_metrics(x, y, logits=x[:, :4]),
        "nc1": lambda: probes.nc1(x, y),
        "cdnv": lambda: probes.cdnv(x, y),
        "ncc_accuracy": lambda: probes.ncc_accuracy(x, y),
        "few_shot_ncc_error": lambda: probes.few_shot_ncc_error(x, y, shots=2, episodes=3, ways=2),
        "neural_collapse": lambda: probes.neural_collapse(m, (x, y3), layer="1"),
        "binned_mutual_information": lambda: probes.binned_mutual_information(x, y, y),
        "fid": lambda: probes.fid(x[:, :3], x[:, 3:]),
        "conditional_scores": lambda: probes.conditional_scores(probs, y3),
        "empirical_ntk": lambda: probes.empirical_ntk(m, x[:5]),
        "empirical_ntk_full": lambda: probes.empirical_ntk(m, x[:3], mode="full"),
        "hessian_eigenvalues": lambda: probes.hessian_eigenvalues(m, CE, (x, y3), k=2),
        "hessian_trace": lambda: probes.hessian_trace(m, CE, (x, y3), samples=3),
        "hessian_spectral_density": lambda: probes.hessian_spectral_density(m, CE, (x, y3), iters=10),
        "gauss_newton_eigenvalues": lambda: probes.gauss_newton_eigenvalues(m, CE, (x, y3)),
        "full_hessian": lambda: probes.full_hessian(m, CE, (x, y3)),
        "sgd_lyapunov": lambda: probes.sgd_lyapunov(m, CE, (x, y3), lr=0.1, batch_size=8, steps=3),
        "loss_slice_1d": lambda: probes.loss_slice_1d(m, CE, (x, y3), alphas=[0.0, 1.0]),
        "features": lambda: probes.features(m, x, ["0"]),
    }


CALLS = _calls()


@pytest.fixture
def two_threads():
    # With a count of 1 a probe that "sets 1 thread" would look harmless: start from 2.
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def set_calls(monkeypatch, two_threads):
    calls: list[int] = []
    real = torch.set_num_threads

    def recording(n: int) -> None:
        calls.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", recording)
    return calls


@pytest.mark.parametrize("name", sorted(CALLS))
def test_probe_leaves_the_thread_count_alone(name, set_calls):
    before = torch.get_num_threads()
    CALLS[name]()
    assert set_calls == [], f"{name} called torch.set_num_threads{tuple(set_calls)}"
    assert torch.get_num_threads() == before


def test_threads_block_sets_and_restores(set_calls):
    seen: list[int] = []

    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3).double()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.fc(x)

    x, y = _data()
    with probes.threads(3, adaptive=False):
        assert torch.get_num_threads() == 3
        probes.hessian_trace(Spy(), CE, (x, y % 3), samples=2)
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2
    assert seen and set(seen) == {3}  # adaptive=False: the probe keeps the block's count
    with probes.threads():  # adaptive: small model passes run on one thread inside the probe
        probes.hessian_trace(Spy(), CE, (x, y % 3), samples=2)
        assert torch.get_num_threads() == 2
    assert seen[-1] == 1
    assert torch.get_num_threads() == 2 and set_calls  # the block did set threads, and restored them


def test_threads_block_gives_the_same_values(two_threads):
    for name in ("linear_cka", "svcca", "hessian_eigenvalues", "nc1", "cdnv", "empirical_ntk"):
        plain = CALLS[name]()
        with probes.threads(1):
            managed = CALLS[name]()
        np.testing.assert_allclose(np.asarray(plain, dtype=float), np.asarray(managed, dtype=float), rtol=1e-10)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_threads_rejects_bad_counts(bad):
    with pytest.raises(PhenomlabError, match="positive int"), probes.threads(bad):
        pass
