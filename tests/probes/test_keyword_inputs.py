"""Batches whose inputs are a mapping of tensors, passed as keyword arguments (Hugging Face style)."""

import pytest
import torch
from torch import nn

from phenomlab.probes.curvature import (
    flat_params,
    full_hessian,
    ggn_vp,
    hessian_eigenvalues,
    hessian_trace,
    model_hvp,
)
from phenomlab.probes.landscape import interpolation_curve, loss_slice_1d, loss_slice_2d
from phenomlab.probes.stability import sgd_lyapunov

CE = nn.CrossEntropyLoss()
N_IDS = 5


class KwargsNet(nn.Module):
    """``forward(*, input_ids, x)``: keyword-only tensors, as a Hugging Face model takes them."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(11, 4)
        self.fc1 = nn.Linear(4 + 3, 6)
        self.fc2 = nn.Linear(6, 3)
        self.double()

    def forward(self, *, input_ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.emb(input_ids).mean(1), x], dim=1)
        return self.fc2(torch.tanh(self.fc1(h)))


class Packed(nn.Module):
    """The same network (same parameters, same order) fed one tensor ``[ids as floats | x]``."""

    def __init__(self, net: KwargsNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=z[:, :N_IDS].long(), x=z[:, N_IDS:])


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 11, (32, N_IDS), generator=g)
    x = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    return {"input_ids": ids, "x": x}, torch.cat([ids.double(), x], dim=1), y


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-12, atol=1e-13)


def test_curvature_accepts_mapping_inputs(batch):
    kw, packed, y = batch
    net = KwargsNet()
    ref = Packed(net)
    assert torch.equal(flat_params(net), flat_params(ref))
    v = torch.randn(flat_params(net).numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for cache in (True, False):
        assert _close(model_hvp(net, CE, (kw, y), cache=cache)(v), model_hvp(ref, CE, (packed, y), cache=cache)(v))
        assert _close(ggn_vp(net, CE, (kw, y), cache=cache)(v), ggn_vp(ref, CE, (packed, y), cache=cache)(v))
    # several batches, sample-weighted as for tensor inputs
    halves = [({k: t[:12] for k, t in kw.items()}, y[:12]), ({k: t[12:] for k, t in kw.items()}, y[12:])]
    assert _close(model_hvp(net, CE, halves)(v), model_hvp(ref, CE, (packed, y))(v))
    H = full_hessian(net, CE, (kw, y))
    assert _close(H, full_hessian(ref, CE, (packed, y)))
    assert _close(model_hvp(net, CE, (kw, y))(v), H @ v)
    assert _close(hessian_eigenvalues(net, CE, (kw, y), k=2), hessian_eigenvalues(ref, CE, (packed, y), k=2))
    assert hessian_trace(net, CE, (kw, y), samples=5) == pytest.approx(hessian_trace(ref, CE, (packed, y), samples=5))


def test_landscape_accepts_mapping_inputs(batch):
    kw, packed, y = batch
    net, other = KwargsNet(0), KwargsNet(1)
    a1, l1 = loss_slice_1d(net, CE, (kw, y), seed=3)
    _, l1_ref = loss_slice_1d(Packed(net), CE, (packed, y), seed=3)
    assert _close(l1, l1_ref)
    with torch.no_grad():
        assert l1[len(a1) // 2] == pytest.approx(float(CE(net(**kw), y)), rel=1e-12)
    _, _, l2 = loss_slice_2d(net, CE, (kw, y), alphas=[-0.5, 0.0, 0.5], seed=3)
    _, _, l2_ref = loss_slice_2d(Packed(net), CE, (packed, y), alphas=[-0.5, 0.0, 0.5], seed=3)
    assert _close(l2, l2_ref)
    _, c = interpolation_curve(net, other, CE, (kw, y), n_points=5)
    _, c_ref = interpolation_curve(Packed(net), Packed(other), CE, (packed, y), n_points=5)
    assert _close(c, c_ref)


def test_sgd_lyapunov_accepts_mapping_inputs(batch):
    kw, packed, y = batch
    net = KwargsNet()
    got = sgd_lyapunov(net, CE, (kw, y), lr=0.5, batch_size=8, steps=6, seed=2)
    assert got == pytest.approx(sgd_lyapunov(Packed(net), CE, (packed, y), lr=0.5, batch_size=8, steps=6, seed=2))


def test_mapping_inputs_with_mismatched_rows_are_rejected(batch):
    kw, _, y = batch
    bad = {"input_ids": kw["input_ids"], "x": kw["x"][:10]}
    with pytest.raises(ValueError, match="different batch sizes"):
        model_hvp(KwargsNet(), CE, (bad, y))
