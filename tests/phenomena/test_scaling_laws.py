import numpy as np
import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, scaling_laws
from phenomlab.phenomena.scaling_laws import bootstrap_alpha, fit_power_law, power_law, summarise_axis

N = [21, 41, 81, 161, 321, 641, 1281]
D = [500, 1000, 2000, 4000, 8000, 16000, 32000]
# a fixed +-4% multiplicative wiggle: constructed losses are not exactly on the law
WIGGLE = np.array([1.03, 0.97, 1.04, 0.98, 1.02, 0.96, 1.01])


def law(x, c, a, alpha, wiggle=WIGGLE):
    return list((c + a * np.asarray(x, dtype=float) ** -alpha) * wiggle[: len(x)])


EXPS = [-4, -3, -2, -1, 0, 1, 2, 3, 4, 5]
WIDTHS = [4, 8, 16, 32, 64, 128, 256]


def grid_rows(optima, params):
    # per width a parabola in log2(lr) with its vertex at that width's optimum (the largest rate diverged: inf)
    rows = []
    for w, o, n in zip(WIDTHS, optima, params, strict=True):
        val = [0.01 * (1 + (e - o) ** 2) for e in EXPS]
        val[-1] = float("inf")
        rows.append({"width": w, "params": n, "val": val, "test": val})
    return rows


MUP_OPTIMA = [1.2, 1.3, 1.6, 2.0, 2.1, 1.9, 1.8]  # drift 2^0.9; the base width's (8) optimum within 2^0.8 of each


def make_result(params=None, data=None, control=None, teacher_dim=3, optima=MUP_OPTIMA):
    params = params or (N, law(N, 2e-3, 1.5, 1.1))
    data = data or (D, law(D, 0.3, 25.0, 0.5))
    control = control or (N, list(1e-4 * WIGGLE))
    cfg = build_config(scaling_laws.Config, scaling_laws.PRESETS)
    d = {
        "teacher_dim": teacher_dim,
        "params": {"params": params[0], "loss": params[1], "grid": grid_rows(optima, params[0])},
        "control": {"params": control[0], "loss": control[1], "grid": grid_rows([0.0] * 7, control[0])},
        "fit_params": summarise_axis(*params, n_boot=50, seed=0),
        "fit_data": summarise_axis(*data, n_boot=50, seed=1),
        "fit_control": summarise_axis(*control, n_boot=50, seed=2),
        "lr_exponents": EXPS,
        "widths": WIDTHS,
        "base_width": 8,
    }
    return Result("scaling-laws", cfg.to_dict(), 0, d)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def _fails_only(v, *names):
    assert not v.passed
    failed = {c.name for c in v.checks if not c.passed}
    assert set(names) <= failed, failed
    return failed


# ------------------------------------------------------------------------------------------- the fit


@pytest.mark.parametrize(("c", "a", "alpha"), [(0.1, 3.0, 0.7), (0.0, 2.0, 1.3), (2e-3, 1.5, 0.25), (0.5, 40.0, 2.0)])
def test_fit_recovers_an_exact_power_law_with_offset(c, a, alpha):
    x = np.logspace(1, 4, 8)
    f = fit_power_law(x, c + a * x**-alpha)
    assert f["alpha"] == pytest.approx(alpha, rel=1e-5)
    assert f["a"] == pytest.approx(a, rel=1e-4)
    assert f["c"] == pytest.approx(c, abs=1e-6)
    assert f["r2"] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(power_law(x, f), c + a * x**-alpha, rtol=1e-5)


def test_fit_keeps_the_offset_and_amplitude_non_negative():
    x = np.logspace(1, 3, 6)
    # a rising curve: the best law with a >= 0 is the constant (a = 0), never a negative amplitude
    f = fit_power_law(x, 0.1 * x**0.5)
    assert f["a"] >= 0 and f["c"] >= 0


def test_fit_r2_is_low_for_a_zigzag():
    x = np.logspace(1, 3, 7)
    f = fit_power_law(x, [1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0])
    assert f["r2"] < 0.5


def test_bootstrap_ci_brackets_the_true_exponent_and_is_exact_without_noise():
    x = np.logspace(1, 3.5, 8)
    clean = 0.05 + 2.0 * x**-0.8
    lo, hi = bootstrap_alpha(x, clean, n_boot=50, seed=0)
    assert lo == pytest.approx(0.8, rel=1e-4) and hi == pytest.approx(0.8, rel=1e-4)
    noisy = clean * np.exp(np.random.default_rng(0).normal(0, 0.03, len(x)))
    lo, hi = bootstrap_alpha(x, noisy, n_boot=200, seed=0)
    assert lo < 0.8 < hi and hi - lo < 0.6
    assert bootstrap_alpha(x, noisy, n_boot=50, seed=3) == bootstrap_alpha(x, noisy, n_boot=50, seed=3)


def test_fit_rejects_bad_input():
    with pytest.raises(ConfigError):
        fit_power_law([1, 2, 3], [1.0, 0.0, 0.5])
    with pytest.raises(ConfigError):
        fit_power_law([1, 2], [1.0, 0.5])
    with pytest.raises(ConfigError):
        fit_power_law([1, 2, 3], [1.0, 0.5])


def test_config_requires_students_wider_than_the_control_teacher():
    with pytest.raises(ConfigError, match="wider than the control teacher"):
        build_config(scaling_laws.Config, scaling_laws.PRESETS, "quick", {"widths": [2, 4, 8, 16]})
    with pytest.raises(ConfigError, match="at least 4"):
        build_config(scaling_laws.Config, scaling_laws.PRESETS, "quick", {"data_sizes": [100, 200]})


# ------------------------------------------------------------------------------------------- the signature


def test_constructed_scaling_passes_every_check():
    v = scaling_laws.signature(make_result())
    assert v.passed, str(v)
    assert any(c.name.startswith("control") for c in v.checks)


@pytest.mark.parametrize("axis", ["params", "data"])
def test_decades_check_fails_on_a_narrow_range(axis):
    x = [100, 150, 200, 300, 450, 700, 1000]
    kw = {axis: (x, law(x, 2e-3, 1.5, 1.1))}
    _fails_only(scaling_laws.signature(make_result(**kw)), f"{axis}_decades")


@pytest.mark.parametrize("axis", ["params", "data"])
def test_r2_check_fails_when_the_loss_is_not_a_power_law(axis):
    x = N if axis == "params" else D
    zigzag = [0.05, 0.02, 0.04, 0.01, 0.03, 0.008, 0.02]
    _fails_only(scaling_laws.signature(make_result(**{axis: (x, zigzag)})), f"{axis}_fit_r2")


@pytest.mark.parametrize("axis", ["params", "data"])
def test_share_check_fails_when_the_loss_is_mostly_a_constant(axis):
    x = N if axis == "params" else D
    # a tiny power-law term on top of a large floor, at a plausible exponent: only the share is wrong
    y = law(x, 1.0, 0.3 * min(x) ** 1.1, 1.1, wiggle=np.ones(7))
    failed = _fails_only(scaling_laws.signature(make_result(**{axis: (x, y)})), f"{axis}_powerlaw_share")
    assert f"{axis}_fit_r2" not in failed


@pytest.mark.parametrize("axis", ["params", "data"])
def test_alpha_ci_check_fails_on_a_flat_loss(axis):
    x = N if axis == "params" else D
    _fails_only(scaling_laws.signature(make_result(**{axis: (x, list(0.5 * WIGGLE))})), f"{axis}_alpha_ci_low")


def test_alpha_over_4_over_d_checks_fail_on_a_wrong_exponent():
    steep = scaling_laws.signature(make_result(params=(N, law(N, 2e-4, 20.0, 3.0))))
    _fails_only(steep, "params_alpha_over_4/d<=")
    assert _check(steep, "params_alpha_over_4/d>=").passed
    shallow = scaling_laws.signature(make_result(params=(N, law(N, 2e-3, 1.5, 0.4))))
    _fails_only(shallow, "params_alpha_over_4/d>=")
    assert _check(shallow, "params_alpha_over_4/d<=").passed


def test_control_check_fails_when_the_representable_teacher_also_scales():
    v = scaling_laws.signature(make_result(control=(N, law(N, 0.0, 0.1, 0.8))))
    failed = _fails_only(v, "control_params_range_over_main_fall")
    assert failed == {"control_params_range_over_main_fall"}


def test_control_check_ignores_relative_noise_at_the_floor():
    # a narrow control student stuck 30x above the floor, still far below the main's losses: no loss bought by width
    floor = [1.4e-4, 1.1e-4, 3e-6, 4e-6, 9e-6, 8e-6, 5e-6]
    assert _check(scaling_laws.signature(make_result(control=(N, floor))), "control_params_range_over_main_fall").passed


# ------------------------------------------------------------------------------------ learning-rate transfer


def test_lr_transfer_reads_the_optima_and_drifts():
    t = scaling_laws.lr_transfer(make_result().data)
    assert t["optima"] == pytest.approx(MUP_OPTIMA)
    assert t["drift"] == pytest.approx(2**0.9)
    assert t["base_off"] == pytest.approx(2**0.8)


def test_mup_drift_check_fails_when_the_optimum_moves_under_mup():
    # the base width's optimum sits in the middle: every width within 2x of it, but 2.5x between the extremes
    v = scaling_laws.signature(make_result(optima=[0.7, 1.3, 1.6, 2.0, 2.0, 1.9, 1.8]))
    assert _fails_only(v, "mup_lr_drift") == {"mup_lr_drift"}


def test_base_lr_check_fails_when_the_base_width_is_far_from_the_others():
    # widths 16-256 agree (drift 1.2x between them) but the base width's optimum is 4x lower
    v = scaling_laws.signature(make_result(optima=[1.9, 0.0, 2.0, 2.2, 2.1, 1.9, 2.0]))
    failed = _fails_only(v, "mup_base_lr_off_optimum", "mup_lr_drift")
    assert failed == {"mup_base_lr_off_optimum", "mup_lr_drift"}


def test_runs_stored_before_the_grid_fail_the_transfer_checks_instead_of_crashing():
    r = make_result()
    del r.data["params"]["grid"]
    v = scaling_laws.signature(r)
    assert _fails_only(v, "mup_lr_drift", "mup_base_lr_off_optimum") == {"mup_lr_drift", "mup_base_lr_off_optimum"}


def test_config_checks_the_grid_and_the_base_width():
    with pytest.raises(ConfigError, match="lr_exponents"):
        build_config(scaling_laws.Config, scaling_laws.PRESETS, "quick", {"lr_exponents": [1, 1, 3]})
    with pytest.raises(ConfigError, match="base_width"):
        build_config(scaling_laws.Config, scaling_laws.PRESETS, "quick", {"base_width": 12})
