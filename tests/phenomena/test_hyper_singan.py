import statistics

import pytest
import torch

from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.phenomena import Result, build_config, hyper_singan

NAMES = {
    "own_image_fraction",
    "sample_diversity",
    "interpolation_monotone",
    "sample_novelty",
    "control_own_image_fraction",
    "control_rec_only_novel_own_fraction",
}


def rec_arm(wins, r):
    """A reconstruction-only arm with per-image row wins and pixel correlations."""
    own = sum(w > 0.5 for w in wins) / len(wins)
    return {"own_fraction": own, "row_wins": list(wins), "novelty_r": list(r), "diversity": 0.2, "novelty": 0.0}


# half of the held-out images closer to their own image, all samples novel: no advantage (0.5)
REC_CHANCE = rec_arm([0.9, 0.2, 0.7, 0.4], [0.0, 0.1, -0.1, 0.2])


def make_result(own=0.9, div=0.3, rho=(1.0, 0.9, 0.85), ctrl_own=0.5, novelty=0.05, rec_only=REC_CHANCE):
    cfg = build_config(hyper_singan.Config, hyper_singan.PRESETS)
    main = {"own_fraction": own, "own_generator_fraction": 1.0, "row_wins": [own], "diversity": div}
    main["interp_rho"] = list(rho)
    main["novelty"] = novelty
    ctrl = {"own_fraction": ctrl_own, "own_generator_fraction": 0.5, "row_wins": [ctrl_own], "diversity": div}
    return Result("hyper-singan", cfg.to_dict(), 0, {"main": main, "control": ctrl, "rec_only": rec_only})


def _failed(v):
    return [c.name for c in v.checks if not c.passed]


def test_present_phenomenon_passes_every_check():
    v = hyper_singan.signature(make_result())
    assert v.passed and {c.name for c in v.checks} == NAMES


def test_each_check_fails_on_its_own_construction():
    # emitted GANs no closer to their own image than to others (no feed-forward modelling)
    assert _failed(hyper_singan.signature(make_result(own=0.55))) == ["own_image_fraction"]
    # a deterministic copy of the image, no sampling: not a generative model
    assert _failed(hyper_singan.signature(make_result(div=0.01))) == ["sample_diversity"]
    # the interpolated generators do not move from one image's statistics to the other's
    assert _failed(hyper_singan.signature(make_result(rho=(0.2, -0.1, 0.5)))) == ["interpolation_monotone"]
    # the shuffled-conditioning control shows the own-image advantage too: the advantage is not from conditioning
    assert _failed(hyper_singan.signature(make_result(ctrl_own=0.8))) == ["control_own_image_fraction"]
    # the samples are the image plus noise (pixel correlation with the image near 1): no new arrangement
    assert _failed(hyper_singan.signature(make_result(novelty=0.85))) == ["sample_novelty"]
    # without the adversarial term the emitted generators still give novel samples of their own image's patches:
    # the adversarial training is not what makes them single-image GANs
    novel_own = rec_arm([0.9, 0.8, 0.7, 0.4], [0.0, 0.1, -0.1, 0.2])
    assert _failed(hyper_singan.signature(make_result(rec_only=novel_own))) == ["control_rec_only_novel_own_fraction"]


def test_novel_own_fraction_is_per_image_conjunction():
    # image 0: own and novel; 1: own but a copy (r 0.9); 2: novel but not own; 3: own and novel at the bound
    arm = rec_arm([0.9, 0.8, 0.5, 0.6], [0.1, 0.9, 0.0, hyper_singan.MAX_NOVELTY_R])
    assert hyper_singan.novel_own_fraction(arm) == 0.5
    # copies of their own image (own, but r near 1) do not show the signature: the control passes on them
    copies = rec_arm([1.0, 1.0, 1.0, 1.0], [0.9, 0.85, 0.95, 0.8])
    assert (
        hyper_singan.novel_own_fraction(copies) == 0.0 and hyper_singan.signature(make_result(rec_only=copies)).passed
    )
    # an arm stored without the per-image correlations has no fraction
    assert hyper_singan.novel_own_fraction({"row_wins": [0.9], "own_fraction": 1.0}) is None


def test_missing_novelty_fails():
    # a result without the pixel-correlation measurement cannot pass the novelty check
    r = make_result()
    del r.data["main"]["novelty"]
    assert _failed(hyper_singan.signature(r)) == ["sample_novelty"]


def test_missing_control_or_interpolation_fails():
    # a run without the shuffled-conditioning arm (control=False) cannot pass: the control is missing, not passed
    r = make_result()
    del r.data["control"]
    assert _failed(hyper_singan.signature(r)) == ["control_own_image_fraction"]
    # a run stored before the reconstruction-only arm existed (or with rec_only=False) fails that control
    assert _failed(hyper_singan.signature(make_result(rec_only=None))) == ["control_rec_only_novel_own_fraction"]
    # no interpolation pairs measured: the interpolation check is missing, not passed
    assert _failed(hyper_singan.signature(make_result(rho=()))) == ["interpolation_monotone"]


def _median_r(samples, images):
    return statistics.median(hyper_singan.pixel_correlations(samples, images))


@pytest.mark.parametrize("data_seed", [1, 2, 3])
def test_audit_fake_copy_plus_noise_fails_novelty_and_new_texture_passes(data_seed):
    # the audit's fake generator on the row's own held-out textures (as run() draws them): sample = image + N(0, s^2)
    x = hyper_singan.textures(32, 16, data_seed + 1)
    g = torch.Generator().manual_seed(data_seed)
    r = {s: _median_r(x[:, None] + s * torch.randn(32, 8, 1, 16, 16, generator=g), x) for s in (0.3, 0.45)}
    assert r[0.3] >= 0.8
    # measured 0.903/0.899/0.910 (noise 0.3) and 0.814/0.808/0.826 (noise 0.45) on data seeds 1/2/3
    assert r[0.45] >= 0.8
    for s in (0.3, 0.45):
        v = hyper_singan.signature(make_result(div=s, novelty=r[s]))
        assert _failed(v) == ["sample_novelty"]  # it passes every other check: the audit's finding
    # independent textures of the same family in place of the samples: no pixel-wise resemblance
    other = torch.stack([hyper_singan.textures(8, 16, 1000 * data_seed + i) for i in range(32)])
    r_other = _median_r(other, x)
    assert abs(r_other) < 0.1 and r_other < hyper_singan.MAX_NOVELTY_R
    assert hyper_singan.signature(make_result(novelty=r_other)).passed
    # the image's own patches re-arranged (random circular shifts, small noise): what a single-image GAN samples
    shifts = torch.randint(0, 16, (32, 8, 2), generator=g)
    rolled = torch.stack(
        [
            torch.stack([torch.roll(x[i], tuple(int(v) for v in shifts[i, k]), (1, 2)) for k in range(8)])
            for i in range(32)
        ]
    )
    r_rolled = _median_r(rolled + 0.05 * torch.randn(rolled.shape, generator=g), x)
    assert r_rolled < hyper_singan.MAX_NOVELTY_R


def test_pixel_correlations_by_hand():
    img = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]]])  # [1, 1, 2, 2]
    samples = torch.stack([img[0], -img[0], torch.zeros_like(img[0]), 3 * img[0] + 2])[None]  # [1, 4, 1, 2, 2]
    # +1, -1, a constant sample (no correlation: 0) and an affine copy (+1): mean 0.25
    assert hyper_singan.pixel_correlations(samples, img) == pytest.approx([0.25])
    with pytest.raises(PhenomlabError):
        hyper_singan.pixel_correlations(samples[0], img)


def test_absent_phenomenon_fails():
    # emitted generators unrelated to their input: main arm at the control's level, no interpolation trend
    v = hyper_singan.signature(make_result(own=0.5, rho=(0.1, -0.2, 0.0), ctrl_own=0.5))
    assert not v.passed and {"own_image_fraction", "interpolation_monotone"} <= set(_failed(v))


def test_win_rates_by_hand():
    M = [[1.0, 2.0, 3.0], [0.5, 2.0, 1.0], [4.0, 0.1, 0.2]]
    rows, cols = hyper_singan.win_rates(M)
    # row i: M[i][i] < M[i][j]; column i: M[i][i] < M[j][i]
    assert rows == [1.0, 0.0, 0.5]
    assert cols == [0.5, 0.0, 1.0]  # the tie M[1][1] == M[0][1] is no win


def test_textures_are_deterministic_distinct_and_bounded():
    a = hyper_singan.textures(5, 16, seed=3)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, hyper_singan.textures(5, 16, seed=3))
    assert float(a.abs().max()) <= 1.0 and not torch.equal(a, hyper_singan.textures(5, 16, seed=4))
    assert float((a[0] - a[1]).abs().mean()) > 0.1


def test_reduced_run_end_to_end(smoke):
    store, r = smoke("hyper-singan")
    assert {c.name for c in r.verdict.checks} == NAMES
    assert len(r.data["main"]["fid"]) == r.config["n_test"] and all(
        f >= 0 for row in r.data["main"]["fid"] for f in row
    )
    assert all(p.endswith(".png") for p in r.figures)
    assert "interp_rho" in r.data["main"] and "interp_rho" not in r.data["rec_only"]
    for arm in ("main", "control", "rec_only"):
        d = r.data[arm]
        assert len(d["novelty_r"]) == len(d["rec_r"]) == r.config["n_test"]
        assert all(-1 <= v <= 1 for v in d["novelty_r"] + d["rec_r"])


@pytest.mark.parametrize("over", [{"n_test": 2}, {"gp_weight": -1.0}, {"width": 0}, {"n_eval": 1}])
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(hyper_singan.Config, hyper_singan.PRESETS, "quick", over)
