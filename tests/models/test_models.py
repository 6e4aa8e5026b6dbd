import pytest
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP, EmbedMLP, SmallCNN, Transformer1L


def test_mlp_names_and_shapes():
    m = MLP(40, 10, width=16, depth=3)
    names = dict(m.named_modules())
    for n in ("fc1", "act1", "fc3", "act3", "out"):
        assert n in names
    assert m.penultimate == "act3" and m.hidden_layers == ["fc1", "fc2", "fc3"]
    assert m(torch.randn(5, 40)).shape == (5, 10)
    assert m(torch.randn(5, 1, 40)).shape == (5, 10)  # inputs are flattened


def test_mlp_leaky_relu_is_torchs_slope_001():
    m = MLP(3, 2, width=4, depth=1, activation_name="leaky_relu")
    h = torch.tensor([[-2.0, 0.0, 1.5, -0.1]])
    assert torch.equal(m.act1(h), torch.where(h > 0, h, 0.01 * h))


def test_mlp_depth0_is_linear():
    m = MLP(4, 3, depth=0)
    assert m.penultimate == "out"
    x = torch.randn(2, 4)
    assert torch.allclose(m(x), x @ m.out.weight.T + m.out.bias)


@pytest.mark.parametrize("kw", [dict(width=0), dict(depth=-1), dict(activation_name="nope")])
def test_mlp_bad_input(kw):
    with pytest.raises(PhenomlabError):
        MLP(4, 3, **kw)


def test_cnn_1d_and_2d():
    assert SmallCNN(1, 10, dims=1)(torch.randn(3, 40)).shape == (3, 10)
    assert SmallCNN(1, 10, dims=2, channels=(8, 8), kernel_size=3)(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(PhenomlabError):
        SmallCNN(1, 10, dims=3)


def test_token_models():
    tok = torch.randint(0, 13, (6, 2))
    assert EmbedMLP(13, 13, embed_dim=8, width=16)(tok).shape == (6, 13)
    assert Transformer1L(13, 13, d_model=16, n_heads=4, d_mlp=32)(tok).shape == (6, 13)
    with pytest.raises(PhenomlabError):
        Transformer1L(13, 13, d_model=10, n_heads=4)


def test_mlp_he_init_keeps_signal_scale_with_depth():
    # He init preserves E[h^2] through ReLU layers; PyTorch's default shrinks it ~2x per layer (biases included)
    x = torch.randn(4096, 64)
    torch.manual_seed(0)
    he = MLP(64, 10, width=256, depth=10, init="he")
    torch.manual_seed(0)
    default = MLP(64, 10, width=256, depth=10)
    with torch.no_grad():
        h_he = he.fc1(x)
        h_def = default.fc1(x)
        for i in range(2, 11):
            h_he = getattr(he, f"fc{i}")(torch.relu(h_he))
            h_def = getattr(default, f"fc{i}")(torch.relu(h_def))
    # the pre-activation second moment at layer 1 is ~2 (gain 2, unit-variance inputs); it stays O(1) at layer 10
    assert 0.5 < float(h_he.pow(2).mean()) < 8
    assert float(h_def.pow(2).mean()) < 1e-2
    assert all(float(m.bias.abs().max()) == 0 for m in he.modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(PhenomlabError, match="unknown init"):
        MLP(4, 2, init="orthogonal")


@pytest.mark.parametrize(
    "build",
    [
        lambda: Transformer1L(7, 7, n_heads=0),
        lambda: Transformer1L(0, 7),
        lambda: Transformer1L(7, 7, d_mlp=-1),
        lambda: SmallCNN(1, 3, kernel_size=0),
        lambda: SmallCNN(1, 3, hidden=0),
    ],
)
def test_bad_sizes_are_one_line_errors(build):
    # n_heads=0 was a ZeroDivisionError, the others torch errors or a net that fails at its first forward
    with pytest.raises(PhenomlabError, match="positive"):
        build()
