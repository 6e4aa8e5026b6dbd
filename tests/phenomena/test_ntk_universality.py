import math

import pytest
import torch

from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.phenomena import Result, build_config, ntk_universality
from phenomlab.phenomena._stats import loglog_slope

W = [64, 128, 256, 512, 1024]
ARCHS = ntk_universality.ARCHS


def present(readout, arch, width):
    # NTK: the deviation falls like 1/sqrt(n) or faster; muP: O(1) at every width
    return 0.5 / math.sqrt(width) if readout == "ntk" else 0.3


def make_result(dev=present, loss_ratio=lambda readout, arch, width, s: 0.1, spread=lambda arch, width: width**-0.5):
    cfg = build_config(ntk_universality.Config, ntk_universality.PRESETS)
    noise = (0.95, 1.0, 1.05)  # three initialisations around the cell's value
    cells = [
        {
            "readout": r,
            "arch": a,
            "width": w,
            "dev": [dev(r, a, w) * e for e in noise],
            "change": [dev(r, a, w) * e for e in noise],
            "loss0": [1.0] * 3,
            "lossT": [loss_ratio(r, a, w, s) for s in range(3)],
            "loss_lin": [0.1] * 3,
            "init_spread": [spread(a, w) * e for e in noise],
        }
        for r in ntk_universality.READOUTS
        for a in ARCHS
        for w in W
    ]
    return Result("ntk-universality", cfg.to_dict(), 0, {"cells": cells, "widths": W})


def _failed(r):
    v = ntk_universality.signature(r)
    return [c.name for c in v.checks if not c.passed]


def test_present_passes_every_check():
    v = ntk_universality.signature(make_result())
    assert v.passed, str(v)
    assert {c.name for c in v.checks} == {
        *(f"dev_slope_{a}" for a in ARCHS),
        *(f"control_mup_slope_{a}" for a in ARCHS),
        *(f"init_spread_slope_{a}" for a in ARCHS),
        "control_mup_gap",
        "train_loss_ratio",
        "control_mup_trained",
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_an_initial_kernel_that_stays_random_fails_the_spread_check(arch):
    # the network follows its own initial kernel (lazy), but that kernel does not approach a deterministic limit:
    # its seed-to-seed spread falls only like n^-0.1 for one architecture
    def spread(a, w):
        return w**-0.1 if a == arch else w**-0.5

    assert _failed(make_result(spread=spread)) == [f"init_spread_slope_{arch}"]


def test_results_stored_before_the_spread_measurement_fail_its_checks():
    r = make_result()
    for c in r.data["cells"]:
        del c["init_spread"]
    assert _failed(r) == [f"init_spread_slope_{a}" for a in ARCHS]


def test_init_spread_by_hand():
    a = torch.eye(2)
    b = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    c = 2 * torch.eye(2)
    # ||a - b|| = 2, (||a|| + ||b||) / 2 = (sqrt(2) + sqrt(10)) / 2; ||a - c|| = sqrt(2), mean norm 3 sqrt(2) / 2;
    # ||b - c|| = sqrt(2), mean norm (sqrt(10) + 2 sqrt(2)) / 2
    want = [
        2 / ((math.sqrt(2) + math.sqrt(10)) / 2),
        math.sqrt(2) / (3 * math.sqrt(2) / 2),
        math.sqrt(2) / ((math.sqrt(10) + 2 * math.sqrt(2)) / 2),
    ]
    assert ntk_universality.init_spread([a, b, c]) == pytest.approx(want, rel=1e-12)
    assert ntk_universality.init_spread([a]) == []


@pytest.mark.parametrize("arch", ARCHS)
def test_one_architecture_that_does_not_linearise_fails(arch):
    # "every architecture": a deviation that falls only like n^-0.2 for one of them fails that check alone
    def dev(r, a, w):
        return 0.1 * w**-0.2 if (r, a) == ("ntk", arch) else present(r, a, w)

    assert _failed(make_result(dev=dev)) == [f"dev_slope_{arch}"]


@pytest.mark.parametrize("arch", ARCHS)
def test_control_fails_when_mup_deviation_also_shrinks(arch):
    def dev(r, a, w):
        return 1.2 * math.sqrt(64 / w) if (r, a) == ("mup", arch) else present(r, a, w)

    assert _failed(make_result(dev=dev)) == [f"control_mup_slope_{arch}"]


@pytest.mark.parametrize("arch", ARCHS)
def test_control_fails_when_mup_deviation_is_flat_but_small(arch):
    # flat, but only ~3x the NTK deviation at the largest width: not "much weaker"
    def dev(r, a, w):
        return 0.05 if (r, a) == ("mup", arch) else present(r, a, w)

    assert _failed(make_result(dev=dev)) == ["control_mup_gap"]


def test_stalled_ntk_run_fails():
    def ratio(r, a, w, s):
        return 0.8 if (r, a, w, s) == ("ntk", "rnn", 1024, 2) else 0.1

    assert _failed(make_result(loss_ratio=ratio)) == ["train_loss_ratio"]


def test_untrained_mup_control_fails_but_one_unstable_mup_run_does_not():
    assert _failed(make_result(loss_ratio=lambda r, a, w, s: 0.8 if r == "mup" else 0.1)) == ["control_mup_trained"]
    one = make_result(loss_ratio=lambda r, a, w, s: 1.1 if (r, a, w, s) == ("mup", "rnn", 64, 2) else 0.1)
    assert _failed(one) == []


def test_diverged_run_leaves_its_slope_unmeasured():
    r = make_result()
    cell = next(c for c in r.data["cells"] if (c["readout"], c["arch"], c["width"]) == ("ntk", "mlp", 256))
    for k in ("dev", "change", "loss0", "lossT", "loss_lin"):
        cell[k][1] = None
    assert _failed(r) == ["dev_slope_mlp", "train_loss_ratio"]
    cell["dev"][1], cell["loss0"][1], cell["lossT"][1] = 0.01, 1.0, 0.1
    last = next(c for c in r.data["cells"] if (c["readout"], c["arch"], c["width"]) == ("mup", "rnn", 1024))
    last["dev"][0] = None
    assert _failed(r) == ["control_mup_slope_rnn", "control_mup_gap"]


def test_kernel_gd_prediction_equals_gd_on_the_linear_model():
    # a linear model f = f0 + J (theta - theta0), trained by explicit GD steps on mean (f - y)^2
    g = torch.Generator().manual_seed(0)
    n, p, lr, steps = 6, 10, 0.05, 25
    J = torch.randn(n, p, generator=g, dtype=torch.float64)
    f0, y = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    delta = torch.zeros(p, dtype=torch.float64)
    for _ in range(steps):
        f = f0 + J @ delta
        delta = delta - lr * J.T @ (2 * (f - y) / n)
    pred = ntk_universality.kernel_gd_prediction(J @ J.T, f0, y, lr, steps)
    assert torch.allclose(pred, f0 + J @ delta, atol=1e-10)
    # zero steps: nothing moves; many steps at a stable rate: the kernel interpolates y (J J^T is full rank)
    assert torch.allclose(ntk_universality.kernel_gd_prediction(J @ J.T, f0, y, lr, 0), f0)
    lam = float(torch.linalg.eigvalsh(J @ J.T)[-1])
    assert torch.allclose(ntk_universality.kernel_gd_prediction(J @ J.T, f0, y, 0.5 * n / lam, 20000), y, atol=1e-6)
    with pytest.raises(PhenomlabError):
        ntk_universality.kernel_gd_prediction(J, f0, y, lr, steps)


def test_relative_deviation_by_hand():
    f0, f_net, f_lin = torch.zeros(2), torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])
    assert ntk_universality.relative_deviation(f_net, f_lin, f0) == pytest.approx(1 / 5)
    with pytest.raises(PhenomlabError):
        ntk_universality.relative_deviation(f0, f_lin, f0)


def test_loglog_slope_and_bootstrap_ci():
    w = [4, 16, 64]
    assert loglog_slope(w, [3 * x**-0.5 for x in w]) == pytest.approx(-0.5)
    assert loglog_slope(w, [1.0, 0.0, 1.0]) is None
    p, (lo, hi) = ntk_universality.slope_with_ci(w, [[x**-0.7] * 3 for x in w])
    assert p == pytest.approx(-0.7) and lo == pytest.approx(-0.7) and hi == pytest.approx(-0.7)
    p, (lo, hi) = ntk_universality.slope_with_ci(w, [[x**-0.7 * e for e in (0.5, 1.0, 1.5)] for x in w])
    assert lo < p < hi


def test_task_shapes_and_standardised_target():
    cfg = build_config(ntk_universality.Config, ntk_universality.PRESETS, "smoke")
    x, y = ntk_universality.task(cfg, 0)
    assert x.shape == (cfg.n_train, cfg.seq_len, 40 // cfg.seq_len) and y.shape == (cfg.n_train,)
    assert abs(float(y.mean())) < 1e-5 and float(y.std()) == pytest.approx(1.0, abs=1e-5)


def test_reduced_run_end_to_end(smoke):
    store, r = smoke("ntk-universality")
    assert len(r.data["cells"]) == 2 * len(ARCHS) * 4 and all(len(c["dev"]) == 2 for c in r.data["cells"])
    # NTK cells: 3 kernels at init (2 trained + 1 more), 3 pairs; muP cells: the 2 trained inits, 1 pair
    assert all(len(c["init_spread"]) == (3 if c["readout"] == "ntk" else 1) for c in r.data["cells"])
    assert all(v > 0 for c in r.data["cells"] for v in c["init_spread"])
    assert all(p.endswith(".png") for p in r.figures)


@pytest.mark.parametrize(
    "over",
    [
        {"widths": (64, 128, 256)},
        {"widths": (64, 128, 128, 256)},
        {"seq_len": 7},
        {"inits": 1},
        {"lr_scale": 1.5},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(ntk_universality.Config, ntk_universality.PRESETS, "quick", over)
