import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phenomlab.errors import PhenomlabError
from phenomlab.probes.similarity import (
    MinibatchCKA,
    cca,
    cca_matrices,
    cca_matrix,
    cka_matrices,
    cka_matrix,
    hsic1,
    linear_cka,
    minibatch_cka,
    pwcca,
    rbf_cka,
    svcca,
)


def related(n=200, dx=10, dy=7, noise=1.0, seed=0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, dx))
    y = np.tanh(x @ g.standard_normal((dx, dy))) + noise * g.standard_normal((n, dy))
    return x, y


def orthogonal(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def naive_linear_cka(x, y):
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, lm = h @ x @ x.T @ h, h @ y @ y.T @ h
    return (k * lm).sum() / np.sqrt((k * k).sum() * (lm * lm).sum())


def naive_hsic1(k, lm):
    """Song et al. (2012) unbiased HSIC, written term by term with explicit O(n^2) sums."""
    n = len(k)
    kt, lt = k.copy(), lm.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    ones = np.ones(n)
    return (
        trace + ones @ kt @ ones * (ones @ lt @ ones) / ((n - 1) * (n - 2)) - 2 / (n - 2) * ones @ kt @ lt @ ones
    ) / (n * (n - 3))


def naive_cka1(x, y):
    k, lm = x @ x.T, y @ y.T
    return naive_hsic1(k, lm) / np.sqrt(naive_hsic1(k, k) * naive_hsic1(lm, lm))


# ------------------------------------------------------------------------- linear CKA


@pytest.mark.parametrize("n,dx,dy", [(200, 10, 7), (15, 40, 30)])  # feature form and Gram form
def test_linear_cka_matches_naive_gram_formula(n, dx, dy):
    x, y = related(n, dx, dy)
    assert linear_cka(x, y) == pytest.approx(naive_linear_cka(x, y), rel=1e-10)


@pytest.mark.parametrize("n,dx,dy", [(60, 5, 4), (12, 30, 20)])
def test_unbiased_cka_matches_naive_hsic1(n, dx, dy):
    x, y = related(n, dx, dy, seed=1)
    assert linear_cka(x, y, unbiased=True) == pytest.approx(naive_cka1(x, y), rel=1e-9)
    assert hsic1(x, y) == pytest.approx(naive_hsic1(x @ x.T, y @ y.T), rel=1e-9)


def test_hsic1_is_translation_invariant():
    x, y = related(40, 6, 5, seed=2)
    assert hsic1(x + 3.0, y - 7.0) == pytest.approx(hsic1(x, y), rel=1e-9)
    assert naive_hsic1((x + 3) @ (x + 3).T, y @ y.T) == pytest.approx(hsic1(x, y), rel=1e-8)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariances(unbiased):
    x, y = related(150, 12, 8, seed=3)
    base = linear_cka(x, y, unbiased=unbiased)
    assert 0.0 < base < 1.0
    assert linear_cka(x, x, unbiased=unbiased) == pytest.approx(1.0, rel=1e-12)
    assert linear_cka(x @ orthogonal(12), y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(y, x, unbiased=unbiased) == pytest.approx(base, rel=1e-12)
    # Not invariant to a generic (non-orthogonal) invertible map: the test can fail.
    a = np.diag(np.linspace(0.1, 10, 12))
    assert abs(linear_cka(x @ a, y, unbiased=unbiased) - base) > 1e-3


def test_rbf_cka_invariances_and_naive():
    x, y = related(80, 6, 5, seed=4)
    base = rbf_cka(x, y)
    assert rbf_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert rbf_cka(3.0 * x @ orthogonal(6), y) == pytest.approx(base, rel=1e-9)

    def gram(z, frac=0.5):
        d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * frac**2 * np.median(d2)))

    n = len(x)
    h = np.eye(n) - 1 / n
    k, lm = h @ gram(x) @ h, h @ gram(y) @ h
    assert base == pytest.approx((k * lm).sum() / np.sqrt((k * k).sum() * (lm * lm).sum()), rel=1e-6)
    kr, lr = gram(x), gram(y)
    ref1 = naive_hsic1(kr, lr) / np.sqrt(naive_hsic1(kr, kr) * naive_hsic1(lr, lr))
    assert rbf_cka(x, y, unbiased=True) == pytest.approx(ref1, rel=1e-6)
    # A small bandwidth sees only local structure: different value.
    assert abs(rbf_cka(x, y, sigma_frac=0.05) - base) > 1e-3


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.001, 1000.0))
def test_linear_cka_property_bounds_and_scaling(seed, scale):
    x, y = related(30, 4, 3, seed=seed)
    v = linear_cka(x, y)
    assert 0.0 <= v <= 1.0 + 1e-12
    assert linear_cka(scale * x, y) == pytest.approx(v, rel=1e-9)


def test_float32_and_tensor_inputs():
    x, y = related(100, 8, 6, seed=5)
    v64 = linear_cka(torch.tensor(x), torch.tensor(y))
    v32 = linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert v32 == pytest.approx(v64, rel=1e-5)
    assert linear_cka(torch.tensor(x).reshape(100, 2, 4), y) == pytest.approx(v64, rel=1e-12)  # flattened


# ------------------------------------------------------------------------- minibatch CKA


def test_minibatch_cka_single_batch_equals_unbiased_and_accumulates_hsic():
    x, y = related(240, 10, 6, seed=6)
    assert minibatch_cka(x, y, batch_size=240) == pytest.approx(linear_cka(x, y, unbiased=True), rel=1e-10)
    # Several batches: ratio of summed per-batch HSIC_1 (Nguyen et al. 2021), from the naive formula.
    num = kk = ll = 0.0
    for s in range(0, 240, 60):
        xb, yb = x[s : s + 60], y[s : s + 60]
        num += naive_hsic1(xb @ xb.T, yb @ yb.T)
        kk += naive_hsic1(xb @ xb.T, xb @ xb.T)
        ll += naive_hsic1(yb @ yb.T, yb @ yb.T)
    assert minibatch_cka(x, y, batch_size=60) == pytest.approx(num / np.sqrt(kk * ll), rel=1e-9)
    pairs = [(x[s : s + 60], y[s : s + 60]) for s in range(0, 240, 60)]
    assert minibatch_cka(pairs) == pytest.approx(num / np.sqrt(kk * ll), rel=1e-9)


def test_minibatch_cka_converges_to_full_unbiased_cka():
    x, y = related(3000, 16, 12, noise=0.5, seed=7)
    full = linear_cka(x, y, unbiased=True)
    assert minibatch_cka(x, y, batch_size=500) == pytest.approx(full, abs=0.02)


def test_minibatch_gram_and_feature_paths_agree():
    # Batch of 20 < D = 32 uses Gram form, D = 5 uses feature form; mixed pairs use the hybrid trace.
    g = np.random.default_rng(8)
    wide, narrow = g.standard_normal((100, 32)), g.standard_normal((100, 5))
    narrow2 = narrow @ g.standard_normal((5, 5)) + 0.3 * g.standard_normal((100, 5))
    acc = MinibatchCKA()
    for s in range(0, 100, 20):
        acc.update({"w": wide[s : s + 20], "n": narrow[s : s + 20]}, {"w": wide[s : s + 20], "n2": narrow2[s : s + 20]})
    mat = acc.compute()
    assert mat.shape == (2, 2)
    assert mat[0, 0] == pytest.approx(1.0, rel=1e-10)
    assert mat[1, 1] == pytest.approx(minibatch_cka(narrow, narrow2, batch_size=20), rel=1e-10)
    assert mat[0, 1] == pytest.approx(minibatch_cka(wide, narrow2, batch_size=20), rel=1e-10)
    assert mat[1, 0] == pytest.approx(minibatch_cka(narrow, wide, batch_size=20), rel=1e-10)
    acc.update({"w": wide[:3], "n": narrow[:3]}, {"w": wide[:3], "n2": narrow2[:3]})
    assert acc.skipped == 1 and acc.batches == 5


def test_cka_matrix_matches_pairwise():
    x, y = related(120, 9, 6, seed=9)
    z = np.random.default_rng(0).standard_normal((120, 4))
    fa, fb = {"x": x, "y": y}, {"y": y, "z": z, "x": x}
    mat = cka_matrix(fa, fb)
    for i, a in enumerate(fa.values()):
        for j, b in enumerate(fb.values()):
            assert mat[i, j] == pytest.approx(linear_cka(a, b), rel=1e-10)
    mat1 = cka_matrix(fa, fb, unbiased=True)
    assert mat1[0, 1] == pytest.approx(linear_cka(x, z, unbiased=True), rel=1e-10)
    matr = cka_matrix(fa, fb, kernel="rbf")
    assert matr[1, 2] == pytest.approx(rbf_cka(y, x), rel=1e-10)
    matb = cka_matrix(fa, fb, batch_size=40)
    assert matb[0, 2] == pytest.approx(1.0, rel=1e-10)
    assert matb[0, 0] == pytest.approx(minibatch_cka(x, y, batch_size=40), rel=1e-10)


def test_cka_matrix_is_float64_on_the_cpu_on_every_path():
    x, y = related(60, 5, 4, seed=3)
    fa = {"x": torch.as_tensor(x, dtype=torch.float32)}
    fb = {"y": torch.as_tensor(y, dtype=torch.float32)}
    for kw in ({}, {"unbiased": True}, {"kernel": "rbf"}, {"batch_size": 20}):
        mat = cka_matrix(fa, fb, **kw)
        assert (mat.dtype, mat.device.type) == (torch.float64, "cpu"), kw


# ------------------------------------------------------------------------- CCA family


def naive_cca(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w**-0.5) @ v.T

    m = inv_sqrt(x.T @ x) @ x.T @ y @ inv_sqrt(y.T @ y)
    return np.linalg.svd(m, compute_uv=False)


def test_cca_matches_whitening_reference_and_invariances():
    x, y = related(300, 6, 4, seed=10)
    rho = cca(x, y).numpy()
    assert rho.shape == (4,)
    np.testing.assert_allclose(rho, naive_cca(x, y), rtol=1e-9)
    a = np.random.default_rng(1).standard_normal((6, 6))  # any invertible map leaves CCA unchanged
    np.testing.assert_allclose(cca(x @ a + 2.0, y).numpy(), rho, rtol=1e-8)
    np.testing.assert_allclose(cca(x, x @ a).numpy(), np.ones(6), atol=1e-10)


def test_cca_rank_deficient_input():
    x, _ = related(100, 5, 3, seed=11)
    x_dup = np.concatenate([x, x[:, :2] * 2.0], 1)  # rank 5 in 7 columns
    np.testing.assert_allclose(cca(x_dup, x).numpy(), np.ones(5), atol=1e-10)


def test_svcca_and_pwcca():
    x, y = related(300, 8, 6, seed=12)
    a = np.random.default_rng(2).standard_normal((8, 8))
    assert svcca(x, x @ a, keep=1.0) == pytest.approx(1.0, rel=1e-9)
    assert pwcca(x, x @ a) == pytest.approx(1.0, rel=1e-9)
    v = svcca(x, y, keep=3)
    assert v == pytest.approx(float(np.mean(naive_cca(*[_top(z, 3) for z in (x, y)]))), rel=1e-8)
    p = pwcca(x, y)
    assert 0.0 < p < 1.0
    # PWCCA weights favour directions that carry the neurons' variance.
    rho = cca(x, y).numpy()
    assert rho.min() <= p <= rho.max()


def _top(z, k):
    z = z - z.mean(0)
    u, s, _ = np.linalg.svd(z, full_matrices=False)
    return u[:, :k] * s[:k]


def test_bad_inputs():
    x, y = related(50, 4, 3)
    with pytest.raises(ValueError, match="different lengths"):
        linear_cka(x, y[:40])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        linear_cka(bad, y)
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], y[:3], unbiased=True)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_cka(x, y)
    with pytest.raises(ValueError, match="constant"):
        cca(np.ones((10, 2)), y[:10])
    with pytest.raises(ValueError, match="keep"):
        svcca(x, y, keep=1.5)


PAIR_FNS = {
    "linear_cka": linear_cka,
    "linear_cka_unbiased": lambda x, y: linear_cka(x, y, unbiased=True),
    "rbf_cka": rbf_cka,
    "hsic1": hsic1,
    "minibatch_cka": lambda x, y: minibatch_cka(x, y, batch_size=4),
    "cca": cca,
    "svcca": svcca,
    "pwcca": pwcca,
    "cka_matrix": lambda x, y: cka_matrix({"a": x}, {"b": y}),
    "cka_matrix_minibatch": lambda x, y: cka_matrix({"a": x}, {"b": y}, batch_size=4),
}


@pytest.mark.parametrize("name", sorted(PAIR_FNS))
@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 4), (6, 0)])
def test_empty_inputs_raise_one_line_error(name, shape):
    empty = torch.empty(shape)
    with pytest.raises(PhenomlabError, match="empty") as err:
        PAIR_FNS[name](empty, empty)
    assert "\n" not in str(err.value)


CKA_FNS = {
    "linear": linear_cka,
    "linear_unbiased": lambda x, y: linear_cka(x, y, unbiased=True),
    "rbf": rbf_cka,
    "rbf_unbiased": lambda x, y: rbf_cka(x, y, unbiased=True),
    "minibatch": lambda x, y: minibatch_cka(x, y, batch_size=6),
    "matrix_linear": lambda x, y: float(cka_matrix({"a": x}, {"b": y})[0, 0]),
    "matrix_unbiased": lambda x, y: float(cka_matrix({"a": x}, {"b": y}, unbiased=True)[0, 0]),
    "matrix_rbf": lambda x, y: float(cka_matrix({"a": x}, {"b": y}, kernel="rbf")[0, 0]),
    "matrix_minibatch": lambda x, y: float(cka_matrix({"a": x}, {"b": y}, batch_size=6)[0, 0]),
}


@pytest.mark.parametrize("name", sorted(CKA_FNS))
@pytest.mark.parametrize("value", [0.0, 0.1, 3.7])
def test_cka_of_a_constant_representation_is_nan_with_warning(name, value):
    # Zero variance makes every CKA 0/0: undefined, so NaN (0.0 would read as "unrelated").
    x, y = related(n=24)
    const = np.full((24, 5), value)
    for args in ((const, y), (x, const)):
        with pytest.warns(RuntimeWarning, match="undefined"):
            assert np.isnan(CKA_FNS[name](*args))
    # A barely varying representation is still defined.
    assert np.isfinite(CKA_FNS[name](const + 1e-3 * x[:, :5], y))


def test_cca_matrix_equals_mean_cca_per_pair():
    g = torch.Generator().manual_seed(0)
    a = {"l1": torch.randn(60, 5, generator=g, dtype=torch.float64), "l2": torch.randn(60, 3, 2, generator=g).double()}
    b = {
        "m1": torch.randn(60, 7, generator=g, dtype=torch.float64),
        "m2": a["l1"] @ torch.randn(5, 5, generator=g, dtype=torch.float64),
    }
    m = cca_matrix(a, b)
    assert m.shape == (2, 2)
    for i, x in enumerate(a.values()):
        for j, y in enumerate(b.values()):
            assert float(m[i, j]) == pytest.approx(float(cca(x, y).mean()), abs=1e-12)
    assert float(m[0, 1]) == pytest.approx(1.0, abs=1e-12)  # an invertible linear map of the same layer


def _nets_features(n_nets=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    # a wide layer (feature form), one wider than the examples (Gram form), a 3-d one and a float64 one
    return [
        {
            "w": torch.randn(40, 6, generator=g),
            "x": torch.randn(40, 50, generator=g),
            "c": torch.randn(40, 2, 3, generator=g),
            "d": torch.randn(40, 4, generator=g, dtype=torch.float64),
        }
        for _ in range(n_nets)
    ]


def test_pairwise_matrices_equal_the_per_pair_ones_bit_for_bit():
    feats = _nets_features()
    cka = cka_matrices(feats)
    cc = cca_matrices(feats)
    assert sorted(cka) == sorted(cc) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    for a, b in cka:
        assert torch.equal(cka[(a, b)], cka_matrix(feats[a], feats[b]))
        assert torch.equal(cc[(a, b)], cca_matrix(feats[a], feats[b]))
    only = cca_matrices(feats, pairs=[(2, 0)])
    assert list(only) == [(2, 0)] and torch.equal(only[(2, 0)], cc[(2, 0)])


@pytest.mark.parametrize("fn", [cka_matrices, cca_matrices])
def test_pairwise_matrices_reject_bad_input(fn):
    feats = _nets_features(2)
    with pytest.raises(PhenomlabError, match="at least 2 nets"):
        fn(feats[:1])
    with pytest.raises(PhenomlabError, match="two different net indices"):
        fn(feats, pairs=[(0, 0)])
    with pytest.raises(PhenomlabError, match="two different net indices"):
        fn(feats, pairs=[(0, 2)])
    with pytest.raises(PhenomlabError, match="same number of examples"):
        fn([feats[0], {"w": torch.randn(39, 6)}])


def test_cca_matrix_is_one_when_width_reaches_examples():
    # Kornblith et al. 2019, Theorem 1: any two layers at least as wide as N look identical to CCA
    g = torch.Generator().manual_seed(1)
    a = {"x": torch.randn(10, 12, generator=g, dtype=torch.float64)}
    b = {"y": torch.randn(10, 15, generator=g, dtype=torch.float64)}
    assert float(cca_matrix(a, b)[0, 0]) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_measured_in_float32(dtype):
    # float16 Gram sums overflow at unit scale: without the upcast linear CKA of these features was NaN.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 64, generator=g)
    y = x[:, :32] + torch.randn(500, 32, generator=g)
    xh, yh = x.to(dtype), y.to(dtype)
    want = linear_cka(xh.float(), yh.float())
    assert linear_cka(xh, yh) == pytest.approx(want, abs=1e-6)
    assert svcca(xh, yh) == pytest.approx(svcca(xh.float(), yh.float()), abs=1e-6)
