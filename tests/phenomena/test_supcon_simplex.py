import copy
import math

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, supcon_simplex

LEVELS = [0.0, 0.1, 0.2, 0.4, 0.6]


def times(b: float, t0: float = 200.0, a: float = 2000.0, jitter: float = 0.02, reps: int = 3) -> dict[str, list[int]]:
    """``reps`` (2 or 3) replicates per level of T(p) = t0 + a p^b with a small deterministic spread."""
    ks = (-1, 0, 1) if reps == 3 else (-1, 1)[:reps]
    return {str(p): [round((t0 + a * p**b) * (1 + jitter * k)) for k in ks] for p in LEVELS}


def geometry(nc1: float, dev: float, ncc: float = 1.0) -> dict[str, float]:
    return {"nc1": nc1, "simplex_dev": dev, "cos_mean": -1 / 9, "min_mean_norm": 0.99, "ncc_acc": ncc}


def series(g: dict[str, float]) -> dict:
    return {"steps": [0, 100], "nc1": [1.0, g["nc1"]], "simplex_dev": [0.8, g["simplex_dev"]],
            "cos_mean": [0.0, -1 / 9], "ncc_acc": [0.5, g["ncc_acc"]], "final": g}  # fmt: skip


def make(**over) -> Result:
    cfg = build_config(supcon_simplex.Config, supcon_simplex.PRESETS)
    d = {
        "n_classes": 10,
        "n_train": 1348,
        "untrained": geometry(1.5, 0.9, 0.8),
        "simplex": {"supcon": series(geometry(0.002, 0.02)), "ce": series(geometry(0.001, 0.05))},
        "control": series(geometry(0.01, 0.6, 0.97)),
        "noise_levels": LEVELS,
        "fit_steps": {"supcon": times(2.0), "ce": times(1.0)},
        "fit_cap": 8000,
        "boot_seed": 0,
    }
    for k, v in over.items():
        d[k] = v
    return Result("supcon-simplex", {**cfg.to_dict(), "n_boot": 200}, 0, d)


def failed(r: Result) -> set[str]:
    return {c.name for c in supcon_simplex.signature(r).checks if not c.passed}


def test_present_passes_every_check():
    v = supcon_simplex.signature(make())
    assert v.passed, str([str(c) for c in v.checks])


@pytest.mark.parametrize("loss", ["supcon", "ce"])
def test_no_collapse_fails_nc1(loss):
    r = make()
    r.data["simplex"][loss]["final"]["nc1"] = 0.3
    assert failed(r) == {f"{loss}_nc1"}


@pytest.mark.parametrize("loss", ["supcon", "ce"])
def test_collapsed_but_not_a_simplex_fails_dev(loss):
    r = make()
    r.data["simplex"][loss]["final"]["simplex_dev"] = 0.35
    assert failed(r) == {f"{loss}_simplex_dev"}


def test_linear_supcon_fails_both_exponent_checks():
    r = make(fit_steps={"supcon": times(1.0), "ce": times(1.0)})
    assert failed(r) == {"supcon_exponent", "supcon_exponent_ci_low"}


@pytest.mark.parametrize("spread", [(0.2, 1.0, 1.8), (0.2, 1.8)])
def test_noisy_supcon_fails_the_ci_check_only(spread):
    # point estimate ~1.5 but replicates so spread that the CI reaches below 1 (3 or 2 replicates, the quick preset)
    wide = {str(p): [round(200 + 2000 * p**1.5 * f) for f in spread] for p in LEVELS}
    wide["0.0"] = [200] * len(spread)
    r = make(fit_steps={"supcon": wide, "ce": times(1.0, reps=len(spread))})
    assert failed(r) == {"supcon_exponent_ci_low"}


def test_two_replicates_present_passes_every_check():
    v = supcon_simplex.signature(make(fit_steps={"supcon": times(2.0, reps=2), "ce": times(1.0, reps=2)}))
    assert v.passed, str([str(c) for c in v.checks])


def test_one_replicate_has_no_ci_and_fails_the_ci_check():
    # a clean superlinear point estimate, but one run per level: nothing to resample, so no confidence
    one = {loss: {p: ts[:1] for p, ts in times(b).items()} for loss, b in (("supcon", 2.0), ("ce", 1.0))}
    assert failed(make(fit_steps=one)) == {"supcon_exponent_ci_low"}


def test_quick_preset_has_two_replicates():
    # the issue-15 budget protocol; replicates 0 and 1 are the runs of the earlier 3-replicate protocol
    assert build_config(supcon_simplex.Config, supcon_simplex.PRESETS).replicates == 2


def test_superlinear_ce_fails_the_high_bound_and_sublinear_the_low():
    assert failed(make(fit_steps={"supcon": times(2.0), "ce": times(2.0)})) == {"ce_exponent_high"}
    assert failed(make(fit_steps={"supcon": times(2.0), "ce": times(0.4)})) == {"ce_exponent_low"}


def test_unfitted_run_fails_the_exponent_checks():
    ft = copy.deepcopy({"supcon": times(2.0), "ce": times(1.0)})
    ft["supcon"]["0.6"][1] = None
    assert {"supcon_exponent", "supcon_exponent_ci_low"} <= failed(make(fit_steps=ft))


def test_control_that_reaches_a_simplex_fails():
    r = make(control=series(geometry(0.01, 0.05, 1.0)))
    assert failed(r) == {"control_bottleneck_simplex_dev"}


def test_broken_control_encoder_fails():
    r = make(control=series(geometry(0.9, 0.8, 0.3)))
    assert failed(r) == {"control_bottleneck_ncc_acc"}


@pytest.mark.parametrize("b", [0.5, 1.0, 1.7, 3.0])
def test_power_law_fit_recovers_the_exponent(b):
    p = [0.0, 0.1, 0.2, 0.4, 0.6, 0.8]
    t = [300 + 1500 * x**b for x in p]
    fb, t0, a, rss = supcon_simplex.power_law_exponent(p, t)
    assert (
        fb == pytest.approx(b, abs=0.011) and t0 == pytest.approx(300, rel=0.02) and a == pytest.approx(1500, rel=0.02)
    )


def test_bootstrap_ci_of_exact_data_is_a_point():
    runs = [[300 + 1500 * p**2] * 3 for p in LEVELS]
    lo, hi = supcon_simplex.bootstrap_exponent(LEVELS, runs, 50, seed=0)
    assert lo == hi == pytest.approx(2.0, abs=0.011)


def test_simplex_geometry_of_an_exact_simplex():
    c = 10
    vertices = torch.eye(c) - 1.0 / c
    vertices = vertices / vertices.norm(dim=1, keepdim=True)
    y = torch.arange(c).repeat_interleave(5)
    g = supcon_simplex.simplex_geometry(vertices[y].double(), y)
    assert g["nc1"] < 1e-12 and g["simplex_dev"] < 1e-12 and g["ncc_acc"] == 1.0
    assert g["cos_mean"] == pytest.approx(-1 / 9) and g["min_mean_norm"] == pytest.approx(1.0)
    # two classes pushed together: no longer a simplex
    skew = vertices.clone()
    skew[1] = (skew[0] + 0.2 * skew[1]) / (skew[0] + 0.2 * skew[1]).norm()
    assert supcon_simplex.simplex_geometry(skew[y].double(), y)["simplex_dev"] > 0.5
    assert math.isfinite(supcon_simplex.simplex_geometry(torch.randn(50, 4), y)["nc1"])


@pytest.mark.parametrize(
    "over", [{"dim": 8}, {"control_dim": 9}, {"noise_levels": (0.1, 0.2, 0.4, 0.6, 0.8)}, {"noise_levels": (0.0, 0.2)}]
)
def test_bad_config_rejected(over):
    with pytest.raises(ConfigError):
        build_config(supcon_simplex.Config, supcon_simplex.PRESETS, overrides=over)


def test_fit_time_that_falls_with_noise_has_no_exponent():
    assert supcon_simplex.power_law_exponent(LEVELS, [900, 800, 700, 600, 500]) is None
    falling = {str(p): [round(900 - 500 * p)] * 3 for p in LEVELS}
    assert {"ce_exponent_low", "ce_exponent_high"} <= failed(make(fit_steps={"supcon": times(2.0), "ce": falling}))
