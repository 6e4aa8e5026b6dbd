import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import sparse_norm_bounds as snb
from phenomlab.probes.bounds import network_bounds

SIZES = (500, 1000, 2000, 4000)
WIDTHS = (16, 32, 64)


def _run(n, w, gap, sparse, ratio):
    return {
        "n": n,
        "width": w,
        "train_acc": 1.0,
        "test_acc": 1.0 - gap,
        "gap": gap,
        "sparse": sparse,
        "toeplitz": sparse * ratio,
        "ratio": ratio,
        "margin": 1.0,
        "ramp_loss": 0.01,
        "filter_norms": [1.0],
        "toeplitz_norms": [1.0],
    }


def _grid(gap_of, sparse_of, ratio_of):
    return [_run(n, w, gap_of(n, w), sparse_of(n, w), ratio_of(n, w)) for n in SIZES for w in WIDTHS]


def _gap(n, w):
    return 0.3 * (500 / n) ** 0.5 + 0.01 * (64 / w)


def make_result(main, control):
    cfg = build_config(snb.Config, snb.PRESETS)
    return Result(snb.ID, cfg.to_dict(), 0, {"runs": main, "control_runs": control})


def _tracking_main():
    # the sparse bound is a rescaled gap (perfect tracking), the Toeplitz bound 27x above it
    return _grid(_gap, lambda n, w: 1e3 * _gap(n, w), lambda n, w: 27.0)


def _control_arch():
    # the control architecture generalises worse (larger gaps) but has 2.8x fewer Toeplitz positions:
    # its Toeplitz bound drops below the main grid's while its sparse bound tracks its larger gap
    return _grid(lambda n, w: 1.5 * _gap(n, w), lambda n, w: 1.5e3 * _gap(n, w), lambda n, w: 27.0 / 2.8 / 3)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def test_present_passes_every_check():
    v = snb.signature(make_result(_tracking_main(), _control_arch()))
    assert v.passed, str(v)


def test_ratio_check_fails_when_the_advantage_is_small():
    main = _grid(_gap, lambda n, w: 1e3 * _gap(n, w), lambda n, w: 27.0 if n > 500 else 3.0)
    v = snb.signature(make_result(main, _control_arch()))
    assert not _check(v, "min_bound_ratio").passed
    assert _check(v, "spearman_sparse_bound_gap").passed


def test_tracking_check_fails_when_the_bound_grows_with_n():
    # what norm bounds often do (Nagarajan & Kolter 2019): flat or rising in n while the gap falls
    main = _grid(_gap, lambda n, w: 1e3 * (n / 500) ** 0.2 * (64 / w) ** 0.1, lambda n, w: 27.0)
    v = snb.signature(make_result(main, _control_arch()))
    assert not _check(v, "spearman_sparse_bound_gap").passed
    assert _check(v, "min_bound_ratio").passed


def test_control_fails_when_the_toeplitz_bound_tracks_as_well():
    # control architecture with the same Toeplitz/sparse ratio: the position counts add nothing, both rank alike
    ctrl = _grid(lambda n, w: 1.5 * _gap(n, w), lambda n, w: 1.5e3 * _gap(n, w), lambda n, w: 27.0)
    v = snb.signature(make_result(_tracking_main(), ctrl))
    assert not _check(v, "control_toeplitz_tracks_worse").passed
    assert _check(v, "min_bound_ratio").passed and _check(v, "spearman_sparse_bound_gap").passed


def test_within_size_spearman():
    d = snb.deciding_numbers({"runs": _tracking_main(), "control_runs": _control_arch()})
    assert d["within_size_spearman_sparse"] == pytest.approx(1.0)
    assert d["spearman_sparse"] == pytest.approx(1.0)
    # gap(4000) / gap(500) at width 32, the median width
    assert d["gap_change_over_sizes"] == pytest.approx(_gap(4000, 32) / _gap(500, 32))
    assert d["bound_change_over_sizes"] == pytest.approx(d["gap_change_over_sizes"])


def test_model_is_the_architecture_the_probe_covers():
    torch.manual_seed(0)
    net = snb.SparseConvNet(4, 5, (1, 2, 2), 10).double()
    x = torch.randn(30, 40, dtype=torch.float64)
    y = net(x).argmax(1)
    b = network_bounds(net, x, y)
    # degrees: 3 conv layers of kernel 5, then the pooled read-out over 10 positions (40 -> 40 -> 20 -> 10)
    assert b.degrees == (5, 5, 5, 10)
    assert b.ratio > 1


@pytest.mark.parametrize(
    "over",
    [{"widths": (8,), "train_sizes": (100,)}, {"control_strides": (2, 2)}, {"kernel_size": 0}, {"loss": "hinge"}],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(snb.Config, snb.PRESETS, "quick", over)


def test_smoke_end_to_end(smoke):
    _, r = smoke(snb.ID)
    assert {c.name for c in r.verdict.checks} == {
        "min_bound_ratio",
        "spearman_sparse_bound_gap",
        "control_toeplitz_tracks_worse",
    }
    assert len(r.data["runs"]) == 3 and len(r.data["control_runs"]) == 3
    # the pipeline, not the phenomenon: a net that fits too little at smoke scale has no bound (None)
    ratios = [run["ratio"] for run in r.data["runs"] + r.data["control_runs"] if run["ratio"] is not None]
    assert ratios and all(q > 1 for q in ratios)


def test_a_net_without_a_bound_fails_every_check():
    main = _tracking_main()
    main[0].update(sparse=None, toeplitz=None, ratio=None, margin=None, ramp_loss=None)
    v = snb.signature(make_result(main, _control_arch()))
    assert not any(c.passed for c in v.checks)
    assert "1 nets misclassify" in v.summary
