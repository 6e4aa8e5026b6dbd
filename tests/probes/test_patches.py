import numpy as np
import pytest
import scipy.linalg
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.probes.patches import patch_features, patch_fid, random_patch_extractor


def _brute_features(x, w, b, relu):
    k = w.shape[-1]
    rows = []
    for n in range(x.shape[0]):
        for r in range(x.shape[2] - k + 1):
            for c in range(x.shape[3] - k + 1):
                p = x[n, :, r : r + k, c : c + k].reshape(-1)
                f = w.reshape(w.shape[0], -1) @ p + b
                rows.append(f.clamp_min(0) if relu else f)
    return torch.stack(rows)


@pytest.mark.parametrize("relu", [True, False])
def test_patch_features_equal_an_explicit_loop_over_patches(relu):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    w, b = random_patch_extractor(3, 5, 3, seed=4)
    feats = patch_features(x, (w, b), relu=relu)
    assert feats.shape == (2 * 5 * 4, 5)
    torch.testing.assert_close(feats, _brute_features(x, w, b, relu), rtol=0, atol=1e-12)


def _fid_scipy(a, b):
    a, b = a.numpy(), b.numpy()
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_patch_fid_equals_the_closed_form_on_brute_features():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(1, 1, 12, 12, generator=g, dtype=torch.float64)
    stripes = torch.sin(torch.arange(12.0, dtype=torch.float64))[None, None, None].expand(2, 1, 12, 12)
    w, b = random_patch_extractor(1, 4, 3, seed=2)
    for relu in (True, False):
        ref = _fid_scipy(_brute_features(a, w, b, relu), _brute_features(stripes, w, b, relu))
        assert patch_fid(a, stripes, (w, b), relu=relu) == pytest.approx(ref, rel=1e-6, abs=1e-9)
    assert patch_fid(a, a, (w, b)) == pytest.approx(0.0, abs=1e-9)
    # the same texture shifted by one period has the same patches up to the border: a far smaller FID
    wave = torch.sin(2 * torch.pi * torch.arange(16.0, dtype=torch.float64) / 4)[None, None, None].expand(1, 1, 16, 16)
    assert patch_fid(wave[..., :12], wave[..., 4:], (w, b)) == pytest.approx(0.0, abs=1e-9)
    assert patch_fid(wave[..., :12], a, (w, b)) > 0.1


def test_extractor_is_fixed_by_its_seed_and_bad_input_is_rejected():
    w1, b1 = random_patch_extractor(1, 8, 5, seed=3)
    w2, b2 = random_patch_extractor(1, 8, 5, seed=3)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
    assert not torch.equal(w1, random_patch_extractor(1, 8, 5, seed=4)[0])
    assert w1.shape == (8, 1, 5, 5)
    with pytest.raises(PhenomlabError):
        random_patch_extractor(0, 8, 5, seed=0)
    with pytest.raises(PhenomlabError):
        patch_features(torch.zeros(1, 1, 4, 4), (w1, b1))  # smaller than a patch
    with pytest.raises(PhenomlabError):
        patch_features(torch.zeros(1, 2, 8, 8), (w1, b1))  # wrong channels
    with pytest.raises(PhenomlabError):
        patch_features(torch.zeros(8, 8), (w1, b1))
