import pytest
import torch

from phenomlab.data import hidden_attributes
from phenomlab.data.attributes import key_leaf, random_key
from phenomlab.errors import PhenomlabError


def test_key_leaf_matches_a_hand_walk():
    # node 0 tests attribute 2; node 1 (left child) attribute 0; node 2 (right child) attribute 1
    node_attr = [2, 0, 1]
    a = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]]).float()
    assert key_leaf(a, node_attr).tolist() == [0, 1, 2, 3, 3]


def testrandom_key_uses_no_attribute_twice_on_a_path_and_all_attributes():
    g = torch.Generator().manual_seed(0)
    node_attr = random_key(6, 3, g)
    assert len(node_attr) == 7 and set(node_attr) == set(range(6))
    for leaf in range(7, 15):
        path, i = [], leaf
        while i > 0:
            i = (i - 1) // 2
            path.append(node_attr[i])
        assert len(set(path)) == len(path)


def test_conditions_share_inputs_and_attributes_and_labels_are_functions_of_attributes():
    key, at, ae = hidden_attributes(6, 8, n_train=500, n_test=100, seed=3)
    rnd, at2, ae2 = hidden_attributes(6, 8, n_train=500, n_test=100, labels="random_partition", seed=3)
    assert torch.equal(key.x_train, rnd.x_train) and torch.equal(at, at2) and torch.equal(ae, ae2)
    assert not torch.equal(key.y_train, rnd.y_train)
    assert key.input_dim == 32 and at.shape == (500, 6) and set(at.unique().tolist()) == {0.0, 1.0}
    for ds, attrs in ((key, at), (rnd, at2)):
        seen = {}
        for row, y in zip(attrs.tolist(), ds.y_train.tolist(), strict=True):
            assert seen.setdefault(tuple(row), y) == y  # one class per attribute combination
    assert torch.bincount(key.y_train, minlength=8).min() > 30  # a complete key: balanced classes
    assert torch.allclose(key.x_train.mean(0), torch.zeros(32), atol=1e-5)


@pytest.mark.parametrize("kw", [{"n_classes": 6}, {"n_classes": 128}, {"labels": "x"}, {"p_on": 1.0}, {"gain": 0}])
def test_bad_arguments(kw):
    with pytest.raises(PhenomlabError):
        hidden_attributes(**{"n_attributes": 6, "n_classes": 8, **kw})
