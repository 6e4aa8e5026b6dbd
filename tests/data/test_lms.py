import pytest
import torch

from phenomlab.data import digits, mnist1d
from phenomlab.data.lms import dominoes, lms, shuffle_columns, slab_class, slab_index, slab_width
from phenomlab.errors import PhenomlabError


def test_slab_geometry_by_hand():
    # k=5, margin 0.1 (the paper's LMS-5): width (2 - 8 * 0.1) / 5 = 0.24; class 1 owns +-[0.32, 0.56], class 0 the
    # centre [-0.12, 0.12] and +-[0.76, 1]
    assert slab_width(5, 0.1) == pytest.approx(0.24)
    x = torch.tensor([-0.99, -0.77, -0.55, -0.33, -0.11, 0.0, 0.11, 0.33, 0.55, 0.77, 0.99])
    assert slab_index(x, 5, 0.1).tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    # a point in a gap goes to the slab on its left (gaps carry no data)
    assert slab_index(torch.tensor([0.2, 0.6]), 5, 0.1).tolist() == [2, 3]
    assert [slab_class(j, 5) for j in range(5)] == [0, 1, 0, 1, 0]
    assert [slab_class(j, 3) for j in range(3)] == [1, 0, 1]
    assert [slab_class(j, 7) for j in range(7)] == [1, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("k, margin", [(5, 0.1), (3, 0.2), (7, 0.05)])
def test_each_block_alone_predicts_the_label_exactly(k, margin):
    ds = lms(3000, 500, n_slabs=6, k=k, margin=margin, seed=3)
    x, y = torch.cat([ds.x_train, ds.x_test]).double(), torch.cat([ds.y_train, ds.y_test])
    assert set(y.tolist()) == {0, 1}
    # the linear coordinate: its sign is the label, at least `margin` from 0
    assert torch.equal((x[:, 0] > 0).long(), y)
    assert x[:, 0].abs().min() >= margin - 1e-6 and x[:, 0].abs().max() <= 1 + 1e-6
    w, step = slab_width(k, margin), slab_width(k, margin) + 2 * margin
    for c in range(1, 7):
        j = slab_index(x[:, c], k, margin)
        # every point lies inside its slab (so >= 2*margin from any point of the other class) ...
        lo = -1 + j.double() * step
        assert (x[:, c] >= lo - 1e-6).all() and (x[:, c] <= lo + w + 1e-6).all()
        # ... and the slab's owner is the label: one slab coordinate alone decodes y exactly
        assert torch.equal(slab_class(j, k), y)
        # the coordinate is not linearly informative by construction: class 1 is symmetric about 0
        assert abs(float(x[y == 1, c].mean())) < 0.05


def test_center_probability_and_balance():
    ds = lms(20000, 10, n_slabs=2, k=5, margin=0.1, center_prob=0.75, seed=0)
    x, y = ds.x_train, ds.y_train
    j = slab_index(x[:, 1], 5, 0.1)
    frac_centre = float((j[y == 0] == 2).double().mean())
    assert abs(frac_centre - 0.75) < 0.02  # binomial std at ~10k points is 0.004
    assert abs(float(y.double().mean()) - 0.5) < 0.02
    # class 1 splits evenly between its two slabs
    assert abs(float((j[y == 1] == 1).double().mean()) - 0.5) < 0.02


def test_lms_is_reproducible_and_seeded():
    a, b, c = lms(100, 50, n_slabs=3, seed=1), lms(100, 50, n_slabs=3, seed=1), lms(100, 50, n_slabs=3, seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.input_shape == (4,) and a.n_classes == 2


@pytest.mark.parametrize(
    "kw",
    [{"k": 4}, {"k": 1}, {"margin": 0.3, "k": 5}, {"margin": 0.0}, {"n_train": 0}, {"center_prob": 1.5}],
)
def test_lms_rejects_bad_input(kw):
    with pytest.raises(PhenomlabError):
        lms(**{"n_train": 10, "n_test": 10, "n_slabs": 2, **kw})


def test_shuffle_columns_permutes_the_block_jointly():
    x = torch.arange(60.0).view(10, 6)
    out = shuffle_columns(x, slice(2, 5), torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :2], x[:, :2]) and torch.equal(out[:, 5:], x[:, 5:])
    # each new block row is one original block row, all of them once (a joint row permutation)
    rows = {tuple(r) for r in x[:, 2:5].tolist()}
    assert {tuple(r) for r in out[:, 2:5].tolist()} == rows
    assert not torch.equal(out, x)
    assert torch.equal(x, torch.arange(60.0).view(10, 6))  # the input is not modified
    with pytest.raises(PhenomlabError):
        shuffle_columns(torch.zeros(3), [0], torch.Generator())


def _corr_max(rows: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Per row, the max Pearson correlation with any pool row (1 exactly for an affine copy)."""
    a = rows.double() - rows.double().mean(1, keepdim=True)
    b = pool.double() - pool.double().mean(1, keepdim=True)
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).max(1).values


def test_dominoes_pair_each_signal_with_an_image_of_the_paired_class():
    ds = dominoes(120, 60, seed=4, digit_classes=(0, 1), signal_classes=(0, 3))
    img = digits(seed=4)
    assert ds.input_shape == (104,) and ds.n_classes == 2 and set(ds.y_train.tolist()) == {0, 1}
    for x, y, pool_x, pool_y in (
        (ds.x_train, ds.y_train, img.x_train, img.y_train),
        (ds.x_test, ds.y_test, img.x_test, img.y_test),
    ):
        for label, cls in enumerate((0, 1)):
            half = x[y == label, 40:]
            # an affine copy of an image of class `cls` from the matching split ...
            assert (_corr_max(half, pool_x[pool_y == cls]) > 1 - 1e-5).all()
            # ... and of no image of the other class
            assert (_corr_max(half, pool_x[pool_y == 1 - cls]) < 1 - 1e-3).all()
    # the signal half: the MNIST-1D rows of classes 0 and 3, in order, relabelled 0/1, standardised
    sig = mnist1d(int(120 * 6) + 50, int(60 * 6) + 50, seed=4, standardize=False)
    keep = torch.isin(sig.y_train, torch.tensor([0, 3])).nonzero().flatten()[:120]
    raw = sig.x_train[keep]
    assert torch.allclose(ds.x_train[:, :40], (raw - raw.mean()) / raw.std(), atol=1e-5)
    assert torch.equal(ds.y_train, (sig.y_train[keep] == 3).long())
    assert abs(float(ds.x_train[:, 40:].mean())) < 1e-5 and float(ds.x_train[:, 40:].std()) == pytest.approx(
        1, abs=1e-4
    )


def test_ten_class_dominoes_and_bad_input():
    ds = dominoes(200, 100, seed=0)
    assert ds.n_classes == 10 and ds.meta["blocks"] == {"mnist1d": [0, 40], "digits": [40, 104]}
    for kw in (
        {"digit_classes": (0, 1), "signal_classes": (0,)},
        {"digit_classes": (0, 0)},
        {"digit_classes": (0, 12)},
    ):
        with pytest.raises(PhenomlabError):
            dominoes(20, 10, **kw)
    with pytest.raises(PhenomlabError):
        dominoes(0, 10)
