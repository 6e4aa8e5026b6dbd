import numpy as np
import pytest
import torch

from phenomlab import data
from phenomlab.errors import PhenomlabError


@pytest.mark.parametrize(
    "make, shape, classes",
    [
        (lambda s: data.mnist1d(n_train=300, n_test=100, seed=s), (40,), 10),
        (lambda s: data.digits(seed=s), (64,), 10),
        (
            lambda s: data.gaussian_mixture(n_classes=7, dim=5, n_train_per_class=10, n_test_per_class=4, seed=s),
            (5,),
            7,
        ),
        (lambda s: data.modular_arithmetic(p=11, op="+", train_fraction=0.5, seed=s), (2,), 11),
        (lambda s: data.teacher_student(dim=6, n_classes=3, n_train=50, n_test=20, seed=s), (6,), 3),
    ],
)
def test_shapes_and_determinism(make, shape, classes):
    a, b, c = make(0), make(0), make(1)
    assert a.input_shape == shape
    assert a.n_classes == classes
    assert a.y_train.dtype == torch.long and a.y_train.max() < classes and a.y_train.min() >= 0
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.x_train, c.x_train) or not torch.equal(a.y_train, c.y_train)


def test_mnist1d_sizes_and_standardised():
    ds = data.mnist1d(n_train=400, n_test=100, seed=3)
    assert ds.x_train.shape == (400, 40) and ds.x_test.shape == (100, 40)
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3
    assert set(ds.y_train.tolist()) == set(range(10))


def test_mnist1d_templates_balanced_standardised_and_seeded():
    ds = data.mnist1d_templates(n_classes=7, n_train_per_class=20, n_test_per_class=10, seed=5)
    assert ds.x_train.shape == (140, 40) and ds.x_test.shape == (70, 40) and ds.n_classes == 7
    assert ds.y_train.bincount().tolist() == [20] * 7 and ds.y_test.bincount().tolist() == [10] * 7
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-3
    again = data.mnist1d_templates(n_classes=7, n_train_per_class=20, n_test_per_class=10, seed=5)
    other = data.mnist1d_templates(n_classes=7, n_train_per_class=20, n_test_per_class=10, seed=6)
    assert torch.equal(ds.x_train, again.x_train) and not torch.equal(ds.x_train, other.x_train)


def test_mnist1d_templates_rejects_bad_sizes():
    with pytest.raises(PhenomlabError):
        data.mnist1d_templates(n_classes=1)
    with pytest.raises(PhenomlabError):
        data.mnist1d_templates(n_train_per_class=0)


def test_digits_images():
    ds = data.digits(flatten=False)
    assert ds.x_train.shape[1:] == (1, 8, 8)
    assert ds.n_train + ds.n_test == 1797
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_modular_labels_are_correct(op):
    p = 7
    ds = data.modular_arithmetic(p=p, op=op, train_fraction=0.5, seed=0)
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    for (a, b), c in zip(x.tolist(), y.tolist(), strict=True):
        if op == "+":
            assert c == (a + b) % p
        elif op == "-":
            assert c == (a - b) % p
        elif op == "*":
            assert c == (a * b) % p
        else:
            assert (c * b) % p == a % p
    expected = p * (p - 1) if op == "/" else p * p
    assert len(y) == expected
    assert len(set(map(tuple, x.tolist()))) == expected  # no pair in both splits


def test_modular_bad_input():
    with pytest.raises(PhenomlabError, match="train_fraction"):
        data.modular_arithmetic(p=7, train_fraction=1.0)
    with pytest.raises(PhenomlabError, match="prime"):
        data.modular_arithmetic(p=8, op="/")
    with pytest.raises(PhenomlabError, match="unknown operation"):
        data.modular_arithmetic(p=7, op="^")


def test_label_noise_changes_exact_fraction_and_keeps_test_clean():
    ds = data.gaussian_mixture(n_classes=5, dim=3, n_train_per_class=40, n_test_per_class=10, seed=0)
    noisy = data.with_label_noise(ds, 0.2, seed=1)
    changed = noisy.y_train != ds.y_train
    assert int(changed.sum()) == round(0.2 * ds.n_train)
    assert torch.equal(changed, noisy.meta["noisy_mask"])
    assert torch.equal(noisy.y_test, ds.y_test)
    assert torch.equal(noisy.meta["y_train_clean"], ds.y_train)
    again = data.with_label_noise(ds, 0.2, seed=1)
    assert torch.equal(again.y_train, noisy.y_train)
    with pytest.raises(PhenomlabError):
        data.with_label_noise(ds, 1.5)


def test_random_labels():
    ds = data.mnist1d(n_train=500, n_test=50)
    rnd = data.with_random_labels(ds, seed=0)
    agree = float((rnd.y_train == ds.y_train).float().mean())
    assert 0.03 < agree < 0.2  # about 1/10 by chance
    assert torch.equal(rnd.y_test, ds.y_test)


def test_class_split():
    ds = data.gaussian_mixture(n_classes=10, dim=4, n_train_per_class=6, n_test_per_class=3, seed=0)
    src, new = data.class_split(ds, 7, seed=0)
    assert src.n_classes == 7 and new.n_classes == 3
    assert set(src.meta["classes"]).isdisjoint(new.meta["classes"])
    assert src.n_train == 42 and new.n_train == 18
    assert set(src.y_train.tolist()) == set(range(7))
    # relabelling is consistent with the original classes
    orig = torch.tensor(src.meta["classes"])[src.y_train]
    mask = torch.isin(ds.y_train, orig.unique())
    assert torch.equal(orig.sort().values, ds.y_train[mask].sort().values)
    src2, _ = data.class_split(ds, [0, 1, 2])
    assert src2.meta["classes"] == [0, 1, 2]
    with pytest.raises(PhenomlabError):
        data.class_split(ds, 10)
    with pytest.raises(PhenomlabError):
        data.class_split(ds, [0, 0])


def test_user_data_npz(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.normal(size=(10, 3)),
        y_train=rng.integers(0, 2, 10),
        x_test=rng.normal(size=(4, 3)),
        y_test=rng.integers(0, 2, 4),
    )
    ds = data.from_npz(path)
    assert ds.x_train.dtype == torch.float32 and ds.n_classes == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 2)))
    with pytest.raises(PhenomlabError, match="lacks arrays"):
        data.from_npz(bad)
    with pytest.raises(PhenomlabError, match="rows"):
        data.from_tensors(np.zeros((3, 2)), np.zeros(2), np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(PhenomlabError, match="NaN"):
        data.from_tensors(np.full((2, 2), np.nan), np.zeros(2), np.zeros((1, 2)), np.zeros(1))


def test_digits_refuses_a_fraction_that_empties_a_split():
    from phenomlab.data import digits
    from phenomlab.errors import PhenomlabError

    for fraction in (1e-4, 0.9999):
        with pytest.raises(PhenomlabError, match="empty split"):
            digits(test_fraction=fraction)


def test_label_noise_metadata_follows_subsets_splits_and_repeated_noise():
    from phenomlab.data import class_split, digits, with_label_noise

    base = digits(seed=0)
    noisy = with_label_noise(base, 0.3, seed=1)
    twice = with_label_noise(noisy, 0.3, seed=2)
    assert torch.equal(twice.meta["y_train_clean"], base.y_train)  # not the once-noisy labels
    assert torch.equal(twice.meta["noisy_mask"], twice.y_train != base.y_train)
    sub = noisy.subset_train(100, seed=3)
    assert len(sub.meta["noisy_mask"]) == len(sub.meta["y_train_clean"]) == 100
    assert torch.equal(sub.meta["noisy_mask"], sub.y_train != sub.meta["y_train_clean"])
    src, new = class_split(noisy, [0, 1, 2])
    assert len(src.meta["noisy_mask"]) == src.n_train and "y_train_clean" not in src.meta
