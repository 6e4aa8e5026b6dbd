import math

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, hypernet_ntk
from phenomlab.phenomena._stats import loglog_slope

NFS = [64, 256, 1024, 4096]
NGS = [4, 16, 64, 256, 1024]


def present_change(nf, ng):
    # kernel theory: a 1/sqrt(n_g) part that widening f cannot remove plus a 1/sqrt(n_f) part
    return 2 / math.sqrt(ng) + 2 / math.sqrt(nf)


def present_dev(nf, ng):
    return 1 / math.sqrt(ng) + 3 / math.sqrt(nf)


def make_result(change=present_change, dev=present_dev, loss_ratio=0.1):
    cfg = build_config(hypernet_ntk.Config, hypernet_ntk.PRESETS)
    grid = sorted({(NFS[-1], g) for g in NGS} | {(f, NGS[0]) for f in NFS} | {(f, NGS[-1]) for f in NFS})
    noise = (0.95, 1.0, 1.05)  # three seeds around the cell's value
    cells = [
        {
            "n_f": nf,
            "n_g": ng,
            "change": [change(nf, ng) * e for e in noise],
            "init_dev": [dev(nf, ng) * e for e in noise],
            "loss0": [1.0] * 3,
            "lossT": [loss_ratio] * 3,
            "init_rel_var": dev(nf, ng) ** 2,
        }
        for nf, ng in grid
    ]
    data = {"cells": cells, "meta_widths": NFS, "primary_widths": NGS}
    return Result("hypernet-ntk", cfg.to_dict(), 0, data)


def _failed(r):
    v = hypernet_ntk.signature(r)
    return [c.name for c in v.checks if not c.passed]


def test_present_passes_every_check():
    v = hypernet_ntk.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == {
        "change_slope_vs_n_g",
        "control_change_ratio_vs_n_f",
        "change_ratio_vs_n_f_wide_primary",
        "init_dev_slope_vs_n_g",
        "init_dev_slope_vs_n_f",
        "train_loss_ratio",
    }


def test_kernel_that_does_not_freeze_with_n_g_fails():
    # a width-independent floor of 1: widening either network leaves most of the change (also at n_g = 1024)
    failed = _failed(make_result(change=lambda nf, ng: 1.0 + 2 / math.sqrt(nf)))
    assert failed == ["change_slope_vs_n_g", "change_ratio_vs_n_f_wide_primary"]


def test_control_companion_fails_when_widening_f_never_moves_the_kernel():
    # the change depends on n_g only: the control (n_g = 4) passes for a reason that has nothing to do with the
    # narrow primary network, and its companion at n_g = 1024 catches it
    assert _failed(make_result(change=lambda nf, ng: 2 / math.sqrt(ng))) == ["change_ratio_vs_n_f_wide_primary"]


def test_control_fails_when_widening_only_f_freezes_the_kernel():
    # the change falls like n_f^-1/2 at every n_g: then the meta width alone would linearise the model
    r = make_result(change=lambda nf, ng: 2 / math.sqrt(ng) * math.sqrt(64 / nf))
    assert _failed(r) == ["control_change_ratio_vs_n_f"]


def test_control_undefined_when_the_kernel_never_moves_at_the_smallest_n_f():
    # no kernel change at (n_f=64, n_g=4): the ratio has no denominator, so the control cannot pass
    def change(nf, ng):
        return 0.0 if (nf, ng) == (NFS[0], NGS[0]) else present_change(nf, ng)

    v = hypernet_ntk.signature(make_result(change=change))
    ctrl = next(c for c in v.checks if c.name == "control_change_ratio_vs_n_f")
    assert ctrl.value is None and not ctrl.passed


def test_control_reads_the_narrow_primary_slice_not_the_wide_one():
    # widening f freezes the kernel only at n_g=1024 (the paper's dual limit): the control, read at n_g=4, passes
    def change(nf, ng):
        return 2 / math.sqrt(ng) + (2 / math.sqrt(nf) if ng == NGS[-1] else 0.0)

    assert _failed(make_result(change=change)) == []


def test_init_kernel_not_converging_with_n_g_fails():
    assert _failed(make_result(dev=lambda nf, ng: 3 / math.sqrt(nf))) == ["init_dev_slope_vs_n_g"]


def test_init_kernel_not_converging_with_n_f_fails():
    assert _failed(make_result(dev=lambda nf, ng: 1 / math.sqrt(ng))) == ["init_dev_slope_vs_n_f"]


def test_stalled_training_fails():
    assert _failed(make_result(loss_ratio=0.8)) == ["train_loss_ratio"]


def test_loglog_slope_and_bootstrap_ci():
    w = [4, 16, 64]
    assert loglog_slope(w, [3 * x**-0.5 for x in w]) == pytest.approx(-0.5)
    assert loglog_slope(w, [1.0, 0.0, 1.0]) is None
    # identical seeds: the bootstrap CI collapses onto the point estimate
    p, (lo, hi) = hypernet_ntk.slope_with_ci(w, [[x**-0.7] * 3 for x in w])
    assert p == pytest.approx(-0.7) and lo == pytest.approx(-0.7) and hi == pytest.approx(-0.7)
    p, (lo, hi) = hypernet_ntk.slope_with_ci(w, [[x**-0.7 * e for e in (0.5, 1.0, 1.5)] for x in w])
    assert lo < p < hi


def test_task_shapes_and_spheres():
    cfg = build_config(hypernet_ntk.Config, hypernet_ntk.PRESETS, "smoke")
    inp, y = hypernet_ntk.task(cfg, 0)
    assert inp.shape == (cfg.n_tasks * cfg.n_points, cfg.z_dim + cfg.x_dim) and y.shape == (inp.shape[0],)
    assert (inp[:, : cfg.z_dim].norm(dim=1) ** 2 - cfg.z_dim).abs().max() < 1e-4


def test_reduced_run_end_to_end(smoke):
    store, r = smoke("hypernet-ntk")
    assert len(r.data["cells"]) == 4 and all(len(c["change"]) == 2 for c in r.data["cells"])
    assert all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over", [{"meta_widths": (64, 64)}, {"primary_widths": (16,)}, {"inits": 1}, {"lr_scale": 1.5}]
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(hypernet_ntk.Config, hypernet_ntk.PRESETS, "quick", over)
