import pytest
import torch

from phenomlab.data import augment as A
from phenomlab.errors import PhenomlabError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def x():
    return torch.randn(64, 40, generator=gen(123))


ALL = [
    lambda x, g: A.circular_shift(x, 5, g),
    lambda x, g: A.translate(x, 5, g),
    lambda x, g: A.scale(x, 0.5, 1.5, g),
    lambda x, g: A.gaussian_noise(x, 0.3, g),
    lambda x, g: A.time_warp(x, 0.3, g),
    lambda x, g: A.random_mask(x, 0.3, g),
    lambda x, g: A.Augment1D()(x, g),
]


@pytest.mark.parametrize("fn", ALL)
def test_shape_seeded_and_pure(fn, x):
    before = x.clone()
    a, b, c = fn(x, gen(0)), fn(x, gen(0)), fn(x, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)  # same generator state, same view
    assert not torch.equal(a, c)
    assert torch.equal(x, before)  # input untouched


@pytest.mark.parametrize("fn", ALL)
def test_channel_axis_gets_one_draw_per_sample(fn):
    # [N, C, L]: both channels of a sample receive the same transformation
    base = torch.randn(16, 1, 40, generator=gen(5))
    two = base.repeat(1, 2, 1)
    out = fn(two, gen(3))
    if fn is ALL[3] or fn is ALL[6]:  # i.i.d. noise differs per entry by design
        return
    assert torch.allclose(out[:, 0], out[:, 1])


def test_circular_shift_is_a_roll(x):
    out = A.circular_shift(x, 7, gen(0))
    for row_in, row_out in zip(x, out, strict=True):
        assert any(torch.equal(torch.roll(row_in, k), row_out) for k in range(-7, 8))
    assert torch.equal(A.circular_shift(x, 0, gen(0)), x)


def test_translate_fills_with_zeros():
    ones = torch.ones(200, 40)
    out = A.translate(ones, 4, gen(0))
    zeros = (out == 0).sum(1)
    assert zeros.max() <= 4 and zeros.max() > 0
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_scale_is_one_factor_per_sample(x):
    out = A.scale(x, 0.5, 1.5, gen(0))
    ratio = out / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.5 + 1e-6


def test_noise_std():
    z = torch.zeros(500, 40)
    out = A.gaussian_noise(z, 0.3, gen(0))
    assert abs(float(out.std()) - 0.3) < 0.01


def test_time_warp_properties(x):
    assert torch.allclose(A.time_warp(x, 0.0, gen(0)), x)  # r = 1 is the identity
    const = torch.full((10, 40), 2.5)
    assert torch.allclose(A.time_warp(const, 0.5, gen(0)), const)
    out = A.time_warp(x, 0.5, gen(0))
    # linear interpolation stays inside each signal's range
    assert (out.min(1).values >= x.min(1).values - 1e-5).all()
    assert (out.max(1).values <= x.max(1).values + 1e-5).all()
    ramp = torch.arange(40.0).repeat(8, 1)
    warped = A.time_warp(ramp, 0.5, gen(1))
    assert (warped.diff(dim=1) >= -1e-5).all()  # a monotone warp keeps a ramp monotone


def test_random_mask_is_one_contiguous_segment():
    ones = torch.ones(300, 40)
    out = A.random_mask(ones, 0.25, gen(0))
    zeros = out == 0
    assert zeros.sum(1).max() <= 10 and zeros.any()
    for row in zeros:
        idx = row.nonzero().flatten()
        if len(idx):
            assert idx.max() - idx.min() + 1 == len(idx)
    assert torch.equal(A.random_mask(ones, 0.0, gen(0)), ones)


def test_views_differ_and_global_generator_works(x):
    torch.manual_seed(0)
    v1, v2 = A.Augment1D().views(x)
    assert not torch.equal(v1, v2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: A.circular_shift(torch.randn(40), 3),
        lambda: A.scale(torch.randint(0, 3, (4, 40)), 1, 2),
        lambda: A.circular_shift(torch.randn(4, 40), -1),
        lambda: A.scale(torch.randn(4, 40), 2.0, 1.0),
        lambda: A.gaussian_noise(torch.randn(4, 40), -0.1),
        lambda: A.time_warp(torch.randn(4, 40), -0.1),
        lambda: A.random_mask(torch.randn(4, 40), 1.5),
        lambda: A.Augment1D(mask_fraction=2.0),
        lambda: A.Augment1D(scale_range=(1.2, 0.8)),
        lambda: A.Augment1D(max_shift=-2),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(PhenomlabError):
        call()
