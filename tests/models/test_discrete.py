import itertools

import pytest
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.models.discrete import (
    DiscreteAttributeNet,
    SoftStumpTree,
    binarize_st,
    randomized_sparsity,
    soft_tree_leaf_probs,
)


def test_binarize_forward_is_the_step_and_backward_the_sigmoid_derivative():
    z = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0], requires_grad=True)
    b = binarize_st(z)
    assert b.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (b * w).sum().backward()
    s = torch.sigmoid(z.detach())
    assert torch.allclose(z.grad, w * s * (1 - s))


def _leaf_probs_loop(p_right: torch.Tensor) -> torch.Tensor:
    """Explicit root-to-leaf walk: for each leaf, multiply the branch probabilities along its path."""
    n_internal = p_right.shape[-1]
    depth = (n_internal + 1).bit_length() - 1
    out = torch.zeros(p_right.shape[0], 2**depth)
    for row in range(p_right.shape[0]):
        for leaf, bits in enumerate(itertools.product((0, 1), repeat=depth)):  # left-to-right leaf order
            node, prob = 0, 1.0
            for go_right in bits:
                p = float(p_right[row, node])
                prob *= p if go_right else 1 - p
                node = 2 * node + 1 + go_right
            out[row, leaf] = prob
    return out


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_soft_tree_leaf_probs_equal_the_explicit_path_products(depth):
    g = torch.Generator().manual_seed(depth)
    p = torch.rand(5, 2**depth - 1, generator=g)
    got = soft_tree_leaf_probs(p)
    assert torch.allclose(got, _leaf_probs_loop(p), atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(5), atol=1e-6)


def test_soft_tree_rejects_incomplete_trees():
    with pytest.raises(PhenomlabError):
        soft_tree_leaf_probs(torch.rand(2, 4))


def test_soft_stump_tree_output_equals_an_explicit_loop():
    torch.manual_seed(0)
    tree = SoftStumpTree(n_units=5, n_classes=3, depth=3, temperature=0.5)
    with torch.no_grad():
        tree.select.normal_()
        tree.leaf.normal_()
    b = (torch.rand(7, 5) < 0.5).float()
    got = tree(b).exp().detach()
    sel = torch.softmax(tree.select.detach() / 0.5, -1)
    leaf_dist = torch.softmax(tree.leaf.detach() / 0.5, -1)
    for n in range(7):
        p_right = torch.stack([sum(sel[i, j] * b[n, j] for j in range(5)) for i in range(7)])[None]
        want = _leaf_probs_loop(p_right)[0] @ leaf_dist
        assert torch.allclose(got[n], want, atol=1e-5)


def test_one_hot_selection_is_an_exact_stump_tree():
    # node 0 tests unit 2, node 1 unit 0, node 2 unit 1: the leaf reached is (b2, b_{0 or 1}) read as bits
    tree = SoftStumpTree(n_units=3, n_classes=4, depth=2, temperature=1.0)
    with torch.no_grad():
        tree.select.copy_(torch.full((3, 3), -1e4))
        for node, unit in ((0, 2), (1, 0), (2, 1)):
            tree.select[node, unit] = 0.0
        tree.leaf.copy_(torch.eye(4) * 1e4)  # leaf l predicts class l
    for b in itertools.product((0.0, 1.0), repeat=3):
        bt = torch.tensor([b])
        second = b[1] if b[2] else b[0]
        assert int(tree(bt).argmax()) == int(2 * b[2] + second)


def test_randomized_sparsity_is_the_mean_activity_of_the_masked_units():
    z = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])
    mask = torch.tensor([1.0, 0.0, 1.0])
    s = torch.sigmoid(z)
    want = ((s[0, 0] + s[0, 2]) + (s[1, 0] + s[1, 2])) / (2 * 2)
    assert torch.allclose(randomized_sparsity(z, mask), want)
    assert float(randomized_sparsity(z, torch.zeros(3))) == 0.0
    with pytest.raises(PhenomlabError):
        randomized_sparsity(z, torch.ones(4))


def test_discrete_net_parts_and_loss():
    torch.manual_seed(0)
    net = DiscreteAttributeNet(10, 4, n_units=6, width=8, head_width=8, tree_depth=2)
    x, y = torch.randn(9, 10), torch.randint(4, (9,))
    p = net.parts(x)
    assert set(p) == {"logits", "units", "mlp", "tree"}
    assert set(p["units"].unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(p["tree"].exp().sum(-1), torch.ones(9), atol=1e-5)
    assert torch.equal(net(x), p["mlp"])
    total, parts = net.loss(x, y, sparsity=0.5, mask=torch.ones(6))
    want = parts["ce_mlp"] + parts["nll_tree"] + 0.5 * parts["sparsity"]
    assert abs(float(total.detach()) - want) < 1e-5
    total.backward()
    assert net.encoder[0].weight.grad.abs().sum() > 0  # gradients reach the encoder through the binary units
    plain = DiscreteAttributeNet(10, 4, n_units=6, discrete=False)
    u = plain.parts(x)["units"]
    assert "tree" not in plain.parts(x) and ((u > 0) & (u < 1)).all()
    with pytest.raises(PhenomlabError):
        DiscreteAttributeNet(10, 1, n_units=6)
