import pytest
import torch
from torch import nn

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP
from phenomlab.probes.merging import (
    affine_relu_forward,
    merge_equivalent_units,
    mlp_affine_layers,
    nearest_unit_distances,
    prune_units_by_magnitude,
)


def random_layers(sizes, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(o, i, generator=g, dtype=dtype), torch.randn(o, generator=g, dtype=dtype))
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def plant_duplicates(layers, n_dup, seed=1):
    """Append ``n_dup[l]`` units to hidden layer ``l``, each a positive multiple of an existing unit, with its own
    random outgoing column, plus one all-zero unit per layer. Returns the bigger net."""
    g = torch.Generator().manual_seed(seed)
    out = [(w.clone(), b.clone()) for w, b in layers]
    for k, n in enumerate(n_dup):
        w, b = out[k]
        src = torch.randint(0, w.shape[0], (n,), generator=g)
        c = 0.2 + 3.0 * torch.rand(n, generator=g, dtype=w.dtype)
        w_new = torch.cat([w, c[:, None] * w[src], torch.zeros(1, w.shape[1], dtype=w.dtype)])
        b_new = torch.cat([b, c * b[src], torch.zeros(1, dtype=b.dtype)])
        w_next, b_next = out[k + 1]
        extra = torch.randn(w_next.shape[0], n + 1, generator=g, dtype=w.dtype)
        out[k] = (w_new, b_new)
        out[k + 1] = (torch.cat([w_next, extra], dim=1), b_next)
    return out


def test_merging_planted_scaled_duplicates_is_exact_in_float64():
    base = random_layers([7, 12, 9, 4])
    big = plant_duplicates(base, [5, 4])
    assert [w.shape[0] for w, _ in big[:-1]] == [18, 14]
    x = torch.randn(200, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    merged = merge_equivalent_units(big, beta=1e-9)
    # every duplicate and every zero unit is gone; random units (far apart) all survive
    assert [w.shape[0] for w, _ in merged[:-1]] == [12, 9]
    assert torch.allclose(affine_relu_forward(merged, x), affine_relu_forward(big, x), rtol=0, atol=1e-12)


def test_merging_keeps_the_larger_unit_and_adds_the_scaled_outgoing_column():
    # hand computation: unit 1 = 2 x unit 0, so it survives and takes 0.5 x unit 0's outgoing column
    w1 = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, -1.0]], dtype=torch.float64)
    b1 = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    w2 = torch.tensor([[1.0, 10.0, 100.0]], dtype=torch.float64)
    b2 = torch.tensor([0.0], dtype=torch.float64)
    merged = merge_equivalent_units([(w1, b1), (w2, b2)], beta=1e-6)
    assert torch.equal(merged[0][0], w1[[1, 2]])
    assert torch.equal(merged[0][1], b1[[1, 2]])
    assert torch.allclose(merged[1][0], torch.tensor([[10.0 + 0.5 * 1.0, 100.0]], dtype=torch.float64))


def test_negatively_scaled_units_are_not_merged():
    # relu(-z) is not a multiple of relu(z): a unit and its negative are not equivalent (distance 2)
    w1 = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    b1 = torch.tensor([0.3, -0.3], dtype=torch.float64)
    layers = [(w1, b1), (torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))]
    assert merge_equivalent_units(layers, beta=1.9)[0][0].shape[0] == 2
    assert merge_equivalent_units(layers, beta=2.01)[0][0].shape[0] == 1


def test_beta_zero_changes_nothing_on_a_random_net_and_inputs_are_untouched():
    layers = random_layers([5, 8, 6, 3])
    before = [(w.clone(), b.clone()) for w, b in layers]
    merged = merge_equivalent_units(layers, beta=0.0)
    for (w, b), (w0, b0), (wm, bm) in zip(layers, before, merged, strict=True):
        assert torch.equal(w, w0) and torch.equal(b, b0)
        assert torch.equal(wm, w0) and torch.equal(bm, b0)


def test_approximate_merging_counts_match_a_greedy_brute_force():
    # the number of merges of one layer equals an explicit greedy loop over all pairs
    layers = random_layers([3, 40, 2], seed=5)
    beta = 0.6
    v = torch.cat([layers[0][0], layers[0][1][:, None]], dim=1)
    u = v / v.norm(dim=1, keepdim=True)
    alive = list(range(40))
    while True:
        pairs = [(float((u[i] - u[j]).norm()), i, j) for i in alive for j in alive if i < j]
        d, i, j = min(pairs)
        if d >= beta:
            break
        alive.remove(j if v[i].norm() >= v[j].norm() else i)
    assert merge_equivalent_units(layers, beta)[0][0].shape[0] == len(alive)


def test_magnitude_pruning_removes_the_smallest_in_times_out_norms():
    layers = random_layers([4, 10, 7, 3], seed=2)
    counts = [3, 2]
    keeps = []
    for k, n in enumerate(counts):
        w, b = layers[k]
        scores = [float(torch.cat([w[i], b[i : i + 1]]).norm() * layers[k + 1][0][:, i].norm()) for i in range(len(b))]
        keeps.append(sorted(sorted(range(len(b)), key=lambda i: -scores[i])[: len(b) - n]))
    pruned = prune_units_by_magnitude(layers, counts)
    assert torch.equal(pruned[0][0], layers[0][0][keeps[0]])
    assert torch.equal(pruned[0][1], layers[0][1][keeps[0]])
    assert torch.equal(pruned[1][0], layers[1][0][keeps[1]][:, keeps[0]])
    assert torch.equal(pruned[2][0], layers[2][0][:, keeps[1]])
    assert torch.equal(pruned[2][1], layers[2][1])


def test_nearest_unit_distances_match_an_explicit_loop():
    layers = random_layers([3, 6, 2], seed=4)
    v = torch.cat([layers[0][0], layers[0][1][:, None]], dim=1)
    u = v / v.norm(dim=1, keepdim=True)
    expected = [min(float((u[i] - u[j]).norm()) for j in range(6) if j != i) for i in range(6)]
    assert nearest_unit_distances(layers)[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_mlp_affine_layers_reproduce_the_mlp():
    torch.manual_seed(0)
    net = MLP(5, 3, width=8, depth=2)
    x = torch.randn(10, 5)
    assert torch.allclose(affine_relu_forward(mlp_affine_layers(net), x), net(x), atol=1e-6)


def test_bad_inputs_raise_one_line_errors():
    layers = random_layers([3, 4, 2])
    with pytest.raises(PhenomlabError, match="beta"):
        merge_equivalent_units(layers, -0.1)
    with pytest.raises(PhenomlabError, match="at least 2"):
        merge_equivalent_units(layers[:1], 0.1)
    with pytest.raises(PhenomlabError, match="inputs"):
        merge_equivalent_units([layers[0], (torch.zeros(2, 5), torch.zeros(2))], 0.1)
    with pytest.raises(PhenomlabError, match="one count"):
        prune_units_by_magnitude(layers, [1, 1])
    with pytest.raises(PhenomlabError, match="cannot remove"):
        prune_units_by_magnitude(layers, [4])


def test_nan_or_integer_weights_are_checked_not_merged_away():
    torch.manual_seed(0)
    layers = mlp_affine_layers(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    bad = [(torch.full_like(layers[0][0], float("nan")), layers[0][1]), layers[1]]
    with pytest.raises(PhenomlabError, match="layer 0 weight contains NaN"):
        merge_equivalent_units(bad, 0.1)
    ints = [(torch.ones(6, 4, dtype=torch.long), torch.zeros(6, dtype=torch.long)), layers[1]]
    merged = merge_equivalent_units(ints, 0.1)  # six identical units merge into one
    assert merged[0][0].shape == (1, 4)
