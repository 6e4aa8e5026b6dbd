import math

import numpy as np
import pytest
import torch

from phenomlab.probes.information import binned_mutual_information, discretize, entropy_of_rows


def h2(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_entropy_of_rows_hand_counted():
    rows = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 1]])
    assert entropy_of_rows(rows) == pytest.approx(1.5)  # p = 1/2, 1/4, 1/4
    assert entropy_of_rows(torch.zeros(5, 3)) == 0.0
    assert entropy_of_rows(np.arange(8)) == pytest.approx(3.0)


def test_discretize_edges_and_bounds():
    a = torch.tensor([[0.0, 0.49, 0.5, 1.0]])
    assert discretize(a, 2, (0.0, 1.0)).tolist() == [[0, 0, 1, 1]]
    assert discretize(torch.tensor([[-5.0, 5.0]]), 4, (0.0, 1.0)).tolist() == [[0, 3]]  # clipped
    assert discretize(torch.full((3, 2), 0.7), 10).unique().tolist() == [0]
    with pytest.raises(ValueError, match="bounds"):
        discretize(a, 2, (1.0, 1.0))


ACTS = torch.tensor([0.1, 0.2, 0.6, 0.9, 0.1, 0.7, 0.3, 0.8])[:, None]  # 2 bins on [0, 1]: T = 0,0,1,1,0,1,0,1
Y = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1])


def test_mi_hand_counted_toy():
    # H(T) = 1 bit. Y = 0 (3 rows) -> T always 0; Y = 1 (5 rows) -> T = 1,1,1,0,1: H(T|Y) = 5/8 h(1/5).
    ixt, ity = binned_mutual_information(ACTS, None, Y, n_bins=2, bounds=(0.0, 1.0))
    assert ixt == pytest.approx(1.0)  # distinct inputs: I(X;T) = H(T)
    assert ity == pytest.approx(1.0 - 5 / 8 * h2(0.2), rel=1e-12)


def test_mi_with_repeated_inputs():
    # x_ids pair the rows: x0 -> T (0,0), x1 -> (1,1), x2 -> (0,1), x3 -> (0,1): H(T|X) = 2/4 * 1 bit.
    ixt, ity = binned_mutual_information(ACTS, [0, 0, 1, 1, 2, 2, 3, 3], Y, n_bins=2, bounds=(0.0, 1.0))
    assert ixt == pytest.approx(0.5)
    assert ity == pytest.approx(1.0 - 5 / 8 * h2(0.2), rel=1e-12)


def test_mi_limits_multi_unit():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(64, 3, generator=g)
    y = torch.arange(4).repeat(16)
    # Fine bins: every row is its own symbol, I(X;T) = log2 N and T determines Y: I(T;Y) = H(Y).
    ixt, ity = binned_mutual_information(a, None, y, n_bins=10_000)
    assert ixt == pytest.approx(6.0)
    assert ity == pytest.approx(2.0)
    # A single bin carries no information.
    assert binned_mutual_information(a, None, y, n_bins=1) == (0.0, 0.0)
    # Rows binned jointly across units: unit 0 alone vs both units.
    two = torch.tensor([[0.1, 0.1], [0.1, 0.9], [0.9, 0.1], [0.9, 0.9]])
    assert binned_mutual_information(two, None, [0, 0, 1, 1], n_bins=2, bounds=(0, 1))[0] == pytest.approx(2.0)


def test_mi_bad_inputs():
    with pytest.raises(ValueError, match="different lengths"):
        binned_mutual_information(ACTS, None, Y[:5])
    with pytest.raises(ValueError, match="NaN/inf"):
        binned_mutual_information(torch.tensor([[float("nan")], [0.0]]), None, [0, 1])
    with pytest.raises(ValueError, match="x_ids"):
        binned_mutual_information(ACTS, [0, 1], Y)


def test_quantize_codes_and_round_trip():
    from phenomlab.probes.information import dequantize, quantize

    # 2 bits on [-1, 1]: levels -1, -1/3, 1/3, 1 (delta 2/3); round to the nearest, clip outside
    a = torch.tensor([[-1.0, -0.5, -0.1, 0.2, 0.99, 3.0, -7.0]])
    assert quantize(a, 2, (-1.0, 1.0)).tolist() == [[0, 1, 1, 2, 3, 3, 0]]
    back = dequantize(quantize(a, 2, (-1.0, 1.0)), 2, (-1.0, 1.0))
    assert back[0].tolist() == pytest.approx([-1.0, -1 / 3, -1 / 3, 1 / 3, 1.0, 1.0, -1.0])
    assert quantize(torch.linspace(0, 1, 256), 8, (0.0, 1.0)).tolist() == list(range(256))
    with pytest.raises(ValueError, match="n_bits"):
        quantize(a, 0, (0.0, 1.0))
    with pytest.raises(ValueError, match="bounds"):
        quantize(a, 8, (1.0, 0.0))


def test_quantized_mutual_information_hand_computed():
    from phenomlab.probes.information import quantized_mutual_information

    # 4 equiprobable inputs -> codes t = 0, 0, 1, 2; labels 0, 0, 1, 1
    # H(T) = -(1/2 log 1/2 + 2 * 1/4 log 1/4) = 1.5; H(T|Y=0) = 0, H(T|Y=1) = 1 -> H(T|Y) = 0.5; I(T;Y) = 1
    ixt, ity = quantized_mutual_information(torch.tensor([[0, 5], [0, 5], [1, 5], [2, 5]]), [0, 0, 1, 1])
    assert ixt == pytest.approx(1.5) and ity == pytest.approx(1.0)
    # injective codes: I(X;T) = log2 N; a constant layer: 0 and 0
    ixt, ity = quantized_mutual_information(torch.arange(8)[:, None], [0, 1] * 4)
    assert ixt == pytest.approx(3.0) and ity == pytest.approx(1.0)
    assert quantized_mutual_information(torch.zeros(6, 2, dtype=torch.long), [0, 1, 0, 1, 0, 1]) == (0.0, 0.0)
    # explicit loop over the joint distribution as the reference, on random codes
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 3, (64, 2), generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    rows = [tuple(r) for r in codes.tolist()]
    n = len(rows)
    p_t = {t: rows.count(t) / n for t in set(rows)}
    p_y = {c: y.tolist().count(c) / n for c in set(y.tolist())}
    joint = [(t, c) for t, c in zip(rows, y.tolist(), strict=True)]
    p_ty = {k: joint.count(k) / n for k in set(joint)}
    mi_ref = sum(p * math.log2(p / (p_t[t] * p_y[c])) for (t, c), p in p_ty.items())
    h_ref = -sum(p * math.log2(p) for p in p_t.values())
    ixt, ity = quantized_mutual_information(codes, y)
    assert ixt == pytest.approx(h_ref) and ity == pytest.approx(mi_ref)
    with pytest.raises(ValueError, match="integer"):
        quantized_mutual_information(torch.rand(4, 2), [0, 1, 0, 1])


def test_entropy_of_rows_rejects_nan():
    from phenomlab.errors import PhenomlabError

    # NaN != NaN: counted naively, each NaN row would be a symbol of its own (1.585 bits here)
    with pytest.raises(PhenomlabError, match="NaN"):
        entropy_of_rows(torch.tensor([[float("nan")], [float("nan")], [1.0]]))
