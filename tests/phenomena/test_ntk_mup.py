import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, ntk_mup

WIDTHS = [64, 128, 256, 512]
EXPS = list(range(-11, -1))


def losses_with_optimum(opt: float) -> list[float]:
    # a parabola in log2(lr) has its vertex exactly where optimum() puts it
    return [0.5 + 0.1 * (e - opt) ** 2 for e in EXPS]


def coord_rows(exponent: float) -> list[dict]:
    return [
        {"width": w, "step": s, "layer": layer, "l1": (w ** (exponent if s else 0.0)) * 0.3}
        for w in WIDTHS
        for s in range(3)
        for layer in ("act1", "act2", "out")
    ]


def make_result(
    ntk_exp=-0.5,
    mup_exp=0.1,
    loss_ratio=0.3,
    sp_opts=(-6.0, -6.7, -7.4, -8.1),
    mup_opts=(-5.0, -5.2, -4.9, -5.1),
    sp_growth=0.8,
    mup_growth=0.02,
):
    cfg = build_config(ntk_mup.Config, ntk_mup.PRESETS)
    kernel = {
        s: [{"width": w, "change": 0.5 * (w / 64) ** e, "loss_ratio": loss_ratio} for w in WIDTHS]
        for s, e in (("ntk", ntk_exp), ("mup", mup_exp))
    }
    transfer = {
        s: [{"width": w, "losses": losses_with_optimum(o)} for w, o in zip(WIDTHS, opts, strict=True)]
        for s, opts in (("sp", sp_opts), ("mup", mup_opts))
    }
    data = {
        "widths": WIDTHS,
        "lr_exponents": EXPS,
        "kernel": kernel,
        "transfer": transfer,
        "coords": {"sp": coord_rows(sp_growth), "mup": coord_rows(mup_growth)},
    }
    return Result("ntk-mup", cfg.to_dict(), 0, data)


def _failed(r):
    return [c.name for c in ntk_mup.signature(r).checks if not c.passed]


def test_present_passes_every_check():
    v = ntk_mup.signature(make_result())
    assert v.passed, str(v)
    assert sum(c.name.startswith("control") for c in v.checks) == 3


@pytest.mark.parametrize(
    "kw, failing",
    [
        ({"ntk_exp": -0.05}, ["ntk_change_slope_upper"]),
        ({"ntk_exp": -1.0}, ["ntk_change_slope"]),
        ({"mup_exp": -0.5}, ["control_mup_kernel_moves"]),
        ({"loss_ratio": 0.95}, ["kernel_training"]),
        ({"mup_opts": (-7.0, -6.0, -5.0, -5.0)}, ["mup_lr_drift"]),
        ({"sp_opts": (-6.0, -6.5, -6.8, -7.0)}, ["control_sp_lr_drift"]),
        ({"mup_growth": 0.5}, ["mup_coord_growth"]),
        ({"sp_growth": 0.1}, ["control_sp_coord_growth"]),
    ],
)
def test_each_check_can_fail(kw, failing):
    assert _failed(make_result(**kw)) == failing


def test_drift_is_max_over_min():
    d = make_result().data
    drift, opts = ntk_mup.drift(d, "sp")
    assert drift == pytest.approx(2 ** (8.1 - 6.0))
    assert opts == pytest.approx([-6.0, -6.7, -7.4, -8.1])


def test_reduced_run_end_to_end(smoke):
    _, r = smoke("ntk-mup")
    assert set(r.data["kernel"]) == {"ntk", "mup"} and set(r.data["transfer"]) == {"sp", "mup"}
    assert all(len(t["losses"]) == 3 for t in r.data["transfer"]["sp"])
    assert all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize("over", [{"widths": (64, 64, 128)}, {"widths": (64, 128)}, {"lr_exponents": (-8, -6, -4)}])
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ntk_mup.Config, ntk_mup.PRESETS, "quick", over)
