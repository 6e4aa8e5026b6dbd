import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from phenomlab.errors import PhenomlabError
from phenomlab.models.ntk_param import NTKMLP, NTKRNN, NTKAttention, NTKLinear
from phenomlab.probes.kernels import empirical_ntk


def explicit_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[N, P]``: one autograd.grad call per sample, the parameters flattened in a fixed order."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(())
        grads = torch.autograd.grad(out, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


class Linearised(nn.Module):
    """``f_lin(x; theta) = f(x; theta_0) + J(x; theta_0) (theta - theta_0)`` by ``torch.func.jvp``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}
        self.delta = nn.ParameterDict(
            {k.replace(".", "__"): nn.Parameter(torch.zeros_like(v)) for k, v in model.named_parameters()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        names = list(self.theta0)
        tangents = tuple(self.delta[k.replace(".", "__")] for k in names)

        def f(*ps: torch.Tensor) -> torch.Tensor:
            return functional_call(self.model, dict(zip(names, ps, strict=True)), (x,))

        out, dout = jvp(f, tuple(self.theta0[k] for k in names), tangents)
        return out + dout


def tiny_models():
    torch.manual_seed(0)
    return [
        (NTKMLP(6, 5, depth=2, activation="tanh"), torch.randn(4, 6)),
        (NTKMLP(6, 5, depth=1, readout="mup"), torch.randn(4, 6)),
        (NTKRNN(3, 4), torch.randn(4, 5, 3)),
        (NTKAttention(3, 4, max_len=5, activation="tanh"), torch.randn(4, 5, 3)),
    ]


@pytest.mark.parametrize("k", range(4))
def test_empirical_ntk_of_net_and_of_its_linearisation_equal_explicit_jacobian_product(k):
    model, x = tiny_models()[k]
    model = model.double()
    x = x.double()
    J = explicit_jacobian(model, x)
    JJt = J @ J.T
    assert torch.allclose(empirical_ntk(model, x), JJt, rtol=1e-10, atol=1e-12)
    lin = Linearised(model).double()
    assert torch.allclose(lin(x), model(x), rtol=0, atol=1e-12)  # at theta_0 the two agree
    assert torch.allclose(empirical_ntk(lin, x), JJt, rtol=1e-10, atol=1e-12)
    # move the parameters: the linearised model's kernel stays J(theta_0) J(theta_0)^T, the network's does not
    with torch.no_grad():
        for p in lin.delta.values():
            p.add_(0.5 * torch.randn_like(p))
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert torch.allclose(empirical_ntk(lin, x), JJt, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(empirical_ntk(model, x), JJt, rtol=1e-3, atol=1e-6)


def test_ntk_linear_forward_by_hand():
    torch.manual_seed(1)
    layer = NTKLinear(3, 2, bias=True, bias_scale=0.1)
    x = torch.randn(4, 3)
    expected = x @ layer.weight.T / math.sqrt(3) + 0.1 * layer.bias
    assert torch.allclose(layer(x), expected)
    assert NTKLinear(8, 1, scale=1 / 8).scale == pytest.approx(0.125)
    assert layer.weight.std() > 0.3  # N(0, 1) weights: the 1/sqrt(fan_in) lives in the forward pass


def test_mlp_and_readouts_by_hand():
    torch.manual_seed(2)
    for readout, s in (("ntk", 1 / math.sqrt(5)), ("mup", 1 / 5)):
        m = NTKMLP(3, 5, depth=2, readout=readout, activation="tanh")
        x = torch.randn(2, 3)
        h1 = torch.tanh(x @ m.hidden[0].weight.T / math.sqrt(3) + m.hidden[0].bias)
        h2 = torch.tanh(h1 @ m.hidden[1].weight.T / math.sqrt(5) + m.hidden[1].bias)
        assert torch.allclose(m(x), h2 @ m.readout.weight.T * s, atol=1e-6)


def test_rnn_by_hand():
    torch.manual_seed(3)
    m = NTKRNN(2, 4)
    x = torch.randn(3, 5, 2)
    h = torch.zeros(3, 4)
    for t in range(5):
        pre = h @ m.cell.rec.weight.T / 2 + x[:, t] @ m.cell.inp.weight.T / math.sqrt(2) + m.cell.inp.bias
        h = torch.tanh(pre)
    assert torch.allclose(m(x), h @ m.readout.weight.T / 2, atol=1e-6)


def test_attention_by_hand():
    torch.manual_seed(4)
    m = NTKAttention(2, 4, max_len=6)
    x = torch.randn(3, 5, 2)
    e = x @ m.embed.weight.T / math.sqrt(2) + m.position[:5]
    logits = torch.einsum("bti,bsi->bts", e, e) / 4  # 1/n key-query scaling
    a = torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)
    z = e + a @ (e @ m.value.weight.T / 2)
    f = (torch.relu(z @ m.ff.weight.T / 2) @ m.readout.weight.T / 2).mean(1)
    assert torch.allclose(m(x), f, atol=1e-5)
    assert torch.allclose(m.attention(x).sum(-1), torch.ones(3, 5))


def test_output_scale_at_init_does_not_grow_with_width():
    # NTK parametrisation: f(x) = O(1) at every width (without the 1/sqrt(n) factors the wide net's output would be
    # ~sqrt(4096 / 16) = 16x the narrow one's)
    x = torch.randn(64, 8, 5)
    stds = {}
    for n in (16, 4096):
        torch.manual_seed(5)
        with torch.no_grad():
            stds[n] = [float(NTKRNN(5, n)(x).std()), float(NTKAttention(5, n, 8, activation="tanh")(x).std())]
    for narrow, wide in zip(stds[16], stds[4096], strict=True):
        assert 0.2 < wide / narrow < 5


@pytest.mark.parametrize(
    "make",
    [
        lambda: NTKLinear(0, 3),
        lambda: NTKLinear(3, 2, scale=0.0),
        lambda: NTKMLP(3, 4, readout="sp"),
        lambda: NTKMLP(3, 4, activation="softsign"),
        lambda: NTKRNN(3, 0),
        lambda: NTKAttention(3, 4, max_len=0),
    ],
)
def test_bad_construction(make):
    with pytest.raises(PhenomlabError):
        make()


def test_bad_inputs():
    with pytest.raises(PhenomlabError):
        NTKLinear(3, 2)(torch.randn(4, 5))
    with pytest.raises(PhenomlabError):
        NTKRNN(3, 4)(torch.randn(4, 3))
    with pytest.raises(PhenomlabError):
        NTKAttention(3, 4, max_len=4)(torch.randn(2, 6, 3))
