import pytest
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP, MultiplicativeNet, StackedNets, match_width, param_count


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_forward_equals_a_per_sample_hand_computation():
    torch.manual_seed(0)
    net = MultiplicativeNet(3, 2, width=4, depth=2).double().requires_grad_(False)
    x = torch.randn(5, 3, dtype=torch.float64)
    got = net(x)
    for n in range(5):
        h = [float(v) for v in x[n]]
        for i in (1, 2):
            a, b = getattr(net, f"a{i}"), getattr(net, f"b{i}")
            new = []
            for j in range(4):
                za = float(a.bias[j]) + sum(float(a.weight[j, k]) * h[k] for k in range(len(h)))
                zb = float(b.bias[j]) + sum(float(b.weight[j, k]) * h[k] for k in range(len(h)))
                new.append(za * zb)
            h = new
        for o in range(2):
            y = float(net.out.bias[o]) + sum(float(net.out.weight[o, k]) * h[k] for k in range(4))
            assert got[n, o].item() == pytest.approx(y, rel=1e-12, abs=1e-12)


def test_one_layer_is_the_product_of_two_affine_maps_a_quadratic():
    # depth 1, width 1, in 1: y = w (a x + p)(b x + q) + c, a polynomial of degree 2 = 2**depth
    net = MultiplicativeNet(1, 1, width=1, depth=1).double()
    with torch.no_grad():
        net.a1.weight.fill_(2.0), net.a1.bias.fill_(1.0), net.b1.weight.fill_(-3.0), net.b1.bias.fill_(0.5)
        net.out.weight.fill_(0.5), net.out.bias.fill_(4.0)
    x = torch.tensor([[-1.0], [0.0], [2.0]], dtype=torch.float64)
    expected = 0.5 * (2 * x + 1) * (-3 * x + 0.5) + 4.0
    assert torch.equal(net(x), expected)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("width", [1, 7, 32])
def test_param_counts_are_exact(depth, width):
    assert param_count("relu", 5, 3, width, depth) == _n_params(MLP(5, 3, width=width, depth=depth))
    assert param_count("mult", 5, 3, width, depth) == _n_params(MultiplicativeNet(5, 3, width=width, depth=depth))


@pytest.mark.parametrize("family", ["relu", "mult"])
@pytest.mark.parametrize("target", [1, 50, 999, 3000, 10_000])
@pytest.mark.parametrize("depth", [1, 3])
def test_match_width_is_the_brute_force_closest(family, target, depth):
    counts = {w: param_count(family, 4, 1, w, depth) for w in range(1, 3000)}
    best = min(counts, key=lambda w: (abs(counts[w] - target), w))
    assert match_width(family, target, 4, 1, depth) == best


def test_stacked_members_are_exactly_the_standalone_nets():
    torch.manual_seed(1)
    x = torch.randn(9, 3)
    for family in ("relu", "mult"):
        stack = StackedNets(family, 4, 3, width=6, depth=3)
        out = stack(x)
        assert out.shape == (9, 4)
        for m in range(4):
            net = stack.member(m)
            assert type(net) is (MLP if family == "relu" else MultiplicativeNet)
            assert torch.allclose(out[:, m], net(x)[:, 0], atol=1e-6)
        assert _n_params(stack) == 4 * param_count(family, 3, 1, 6, 3)


def test_stacked_members_get_their_standalone_gradients():
    # the engine's MSE on [N, M] is the sum over members of each member's mean squared error
    torch.manual_seed(2)
    x, y = torch.randn(8, 2), torch.randn(8, 3)
    stack = StackedNets("mult", 3, 2, width=5, depth=2)
    nets = [stack.member(m) for m in range(3)]
    (((stack(x) - y) ** 2).mean() * 3).backward()
    for m, net in enumerate(nets):
        ((net(x)[:, 0] - y[:, m]) ** 2).mean().backward()
        assert torch.allclose(stack.v2.grad[m], net.b2.weight.grad.T, atol=1e-5)
        assert torch.allclose(stack.co.grad[m, 0], net.out.bias.grad, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiplicativeNet(0, 1),
        lambda: MultiplicativeNet(2, 1, depth=0),
        lambda: StackedNets("tanh", 2, 2, 4, 1),
        lambda: StackedNets("mult", 0, 2, 4, 1),
        lambda: match_width("mult", 0, 2, 1, 2),
        lambda: param_count("sigmoid", 2, 1, 4, 1),
        lambda: StackedNets("relu", 2, 2, 4, 1).member(2),
    ],
)
def test_bad_input(make):
    with pytest.raises(PhenomlabError):
        make()


def test_a_float64_stack_gives_float64_members():
    stack = StackedNets("mult", 2, 3, width=4, depth=2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    net = stack.member(1)
    assert next(net.parameters()).dtype == torch.float64  # members came back float32, rounded
    assert torch.allclose(net(x).squeeze(-1), stack(x)[:, 1], rtol=1e-12, atol=1e-14)
