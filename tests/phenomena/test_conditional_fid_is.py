import math

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, conditional_fid_is

MOD = conditional_fid_is

# measured-like means (seed 0 of the quick preset): BCFID, WCFID, FID, BCIS, WCIS; IS = BCIS * WCIS
PRESENT = {
    "real": (0.95, 6.9, 0.76, 7.46, 1.25),
    "perfect": (0.93, 6.4, 0.74, 7.53, 1.22),
    "mode_drop": (2.5, 13.4, 1.39, 8.35, 1.114),
    "swap": (0.94, 288.0, 0.86, 7.74, 1.19),
    "ignore": (72.0, 160.0, 0.83, 1.153, 7.946),
}


def make_result(over=None, draw_over=None):
    """A result with one draw per generator; ``over`` edits the means (and the draw), ``draw_over`` the draw only."""
    vals = {g: dict(zip(("BCFID", "WCFID", "FID", "BCIS", "WCIS"), v, strict=True)) for g, v in PRESENT.items()}
    for (g, mt), v in (over or {}).items():
        vals[g][mt] = v
    for v in vals.values():
        v["IS"] = v["BCIS"] * v["WCIS"]
    draws = {g: {mt: [x] for mt, x in v.items()} for g, v in vals.items()}
    for (g, mt), v in (draw_over or {}).items():
        draws[g][mt] = [v]
    cfg = build_config(MOD.Config, MOD.PRESETS)
    data = {"draws": draws, "mean": vals, "mode_fraction": 0.65, "pool_per_class_min": 60}
    return Result(MOD.ID, cfg.to_dict(), 0, data)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_present_passes():
    v = MOD.signature(make_result())
    assert v.passed, str(v)
    assert any(c.name.startswith("control") for c in v.checks)
    # identical IS and FID for the label-error generators: zero shift passes
    same = {
        (g, mt): PRESENT["perfect"][i] for g in ("swap", "ignore") for i, mt in ((2, "FID"), (3, "BCIS"), (4, "WCIS"))
    }
    same[("swap", "WCFID")] = same[("ignore", "WCFID")] = 288.0
    same[("ignore", "BCFID")] = 72.0
    v = MOD.signature(make_result(same))
    assert _check(v, "control_is_blind_to_labels").value == 0.0 and _check(v, "control_is_blind_to_labels").passed


@pytest.mark.parametrize(
    "name, over, draw_over",
    # BCIS(ignore) and WCIS(ignore) are tied by IS = BCIS x WCIS: moving one alone also moves IS(ignore), which the
    # control_is_blind_to_labels check then (rightly) flags as well
    [
        # IS is not the product of BCIS and WCIS in one draw
        ("is_equals_bcis_x_wcis", None, {("perfect", "IS"): 7.53 * 1.22 * 1.001}),
        # FID above BCFID + WCFID in one draw
        ("fid_upper_bound", None, {("perfect", "FID"): 8.0}),
        # swapped classes barely change the class-wise FID
        ("swap_raises_wcfid", {("swap", "WCFID"): 10.0}, None),
        # ignoring the class leaves the classes distinct (BCIS high)
        ("ignore_lowers_bcis", {("ignore", "BCIS"): 5.0}, None),
        # ignoring the class leaves the within-class predictions consistent
        ("ignore_raises_wcis", {("ignore", "WCIS"): 1.5}, None),
        # ignoring the class leaves the class means apart
        ("ignore_raises_bcfid", {("ignore", "BCFID"): 1.0}, None),
        # dropping a mode per class does not move WCFID
        ("mode_drop_raises_wcfid", {("mode_drop", "WCFID"): 7.0}, None),
        # the IS sees the mode dropping
        ("mode_drop_is_unchanged", {("mode_drop", "WCIS"): 1.5}, None),
        # the unconditional FID sees the label swap
        ("control_fid_blind_to_labels", {("swap", "FID"): 1.5}, None),
        # the unconditional IS sees the label swap
        ("control_is_blind_to_labels", {("swap", "WCIS"): 1.5}, None),
        # the perfect generator's WCFID is far from the real-vs-real value
        ("control_perfect_like_real", {("perfect", "WCFID"): 3.0}, None),
    ],
)
def test_each_check_fails_on_its_own_construction(name, over, draw_over):
    v = MOD.signature(make_result(over, draw_over))
    assert not v.passed and not _check(v, name).passed
    also = {"control_is_blind_to_labels"} if name in ("ignore_lowers_bcis", "ignore_raises_wcis") else set()
    assert {c.name for c in v.checks if not c.passed} - also == {name}, str(v)


def test_generators_indistinguishable_fails():
    # no simulated failure is visible: every generator scores like the perfect one on every metric
    over = {
        (g, mt): PRESENT["perfect"][i]
        for g in PRESENT
        for i, mt in enumerate(("BCFID", "WCFID", "FID", "BCIS", "WCIS"))
    }
    v = MOD.signature(make_result(over))
    headline = {"swap_raises_wcfid", "ignore_lowers_bcis", "ignore_raises_wcis", "ignore_raises_bcfid"}
    assert not v.passed and headline | {"mode_drop_raises_wcfid"} <= {c.name for c in v.checks if not c.passed}


def test_uninformative_classifier_fails():
    # measured pattern of an UNTRAINED classifier (audit, 5 draws): near-uniform p(y|x), so every IS-type metric is
    # about 1, while the feature-based FID checks still move; the ignored-class checks must then fail
    over = {(g, mt): 1.0 for g in PRESENT for mt in ("BCIS", "WCIS")}
    v = MOD.signature(make_result(over))
    failed = {c.name for c in v.checks if not c.passed}
    assert not v.passed and {"ignore_lowers_bcis", "ignore_raises_wcis"} <= failed


def test_every_check_is_covered():
    names = {c.name for c in MOD.signature(make_result()).checks}
    assert len(names) == 11 and sum(n.startswith("control") for n in names) == 3


def test_kmeans_largest_finds_the_bigger_blob():
    import torch

    g = torch.Generator().manual_seed(0)
    big = torch.randn(30, 2, generator=g, dtype=torch.float64)
    small = torch.randn(12, 2, generator=g, dtype=torch.float64) + 20
    idx = MOD._kmeans_largest(torch.cat([small, big]), 2, g)
    assert sorted(idx.tolist()) == list(range(12, 42))


@pytest.mark.parametrize("over", [{"n_per_class": 2}, {"train_fraction": 1.0}, {"n_modes": 1}, {"repeats": 0}])
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(MOD.Config, MOD.PRESETS, "quick", over)


def test_smoke_end_to_end(smoke):
    _, r = smoke(MOD.ID)
    d = r.data
    assert set(d["mean"]) == set(MOD.GENERATORS)
    for g in MOD.GENERATORS:
        dr = d["draws"][g]
        assert len(dr["IS"]) == r.config["repeats"]
        for i, b, w in zip(dr["IS"], dr["BCIS"], dr["WCIS"], strict=True):
            assert math.isclose(i, b * w, rel_tol=1e-12)
    assert _check(r.verdict, "is_equals_bcis_x_wcis").passed and _check(r.verdict, "fid_upper_bound").passed
