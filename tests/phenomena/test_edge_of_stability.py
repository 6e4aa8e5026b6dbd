from pathlib import Path

import pytest

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config
from phenomlab.phenomena import edge_of_stability as eos

TOTAL = 1000


def falling_loss(n=TOTAL + 1, start=1.0, end=0.1, up_every=3, bump=1.03):
    """Per-step loss falling geometrically from ``start`` to ``end``; every ``up_every``-th step of the second
    half rises by the factor ``bump`` over the previous step (the edge-of-stability spikes)."""
    out = []
    for t in range(n):
        v = start * (end / start) ** (t / (n - 1))
        if up_every and t >= n / 2 and t % up_every == 0:
            v = out[-1] * bump
        out.append(v)
    return out


def run_record(lr, ratios, loss=None, diverged_at=None):
    steps = [20 * i for i in range(len(ratios))]
    sharp = [r * 2 / lr for r in ratios]
    loss = falling_loss() if loss is None else loss
    stats = {**eos._last_half_stats(steps, sharp, lr, TOTAL), **eos._loss_stats(steps, sharp, loss, lr, TOTAL)}
    return {
        "lr": lr,
        "threshold": 2 / lr,
        "steps": steps,
        "sharpness": sharp,
        "train_loss": loss,
        "train_acc": [0.5] * len(steps),
        "initial_ratio": ratios[0] if ratios else None,
        "max_ratio": max(ratios) if ratios else None,
        "end_sharpness": sorted(sharp[-5:])[2] if sharp else None,
        "diverged_at": diverged_at,
        **stats,
    }


def sharpening(n=51, start=0.3, arrive=20, wobble=0.05):
    """Ratio S/(2/lr) rising linearly from ``start`` to 1 at measurement ``arrive``, then oscillating."""
    up = [start + (1 - start) * i / arrive for i in range(arrive)]
    return up + [1 + (wobble if i % 2 else -wobble / 2) for i in range(n - arrive)]


def control_record(lr=0.02, top=0.6, loss=None):
    """Small-lr control: sharpness rising steadily to ``top`` x its own 2/lr, loss falling every step."""
    ratios = [0.1 + (top - 0.1) * i / 50 for i in range(51)]
    return run_record(lr, ratios, falling_loss(up_every=0) if loss is None else loss)


def result(runs, control=None):
    data = {"runs": runs, "control": control_record() if control is None else control, "total_steps": TOTAL}
    return Result(phenomenon=eos.ID, config=eos.Config().to_dict(), seed=0, data=data)


def by_name(v):
    return {c.name: c for c in v.checks}


def failing(v):
    return sorted(c.name for c in v.checks if not c.passed)


def test_last_half_stats_use_measurements_from_the_middle_on():
    steps = [0, 250, 500, 750, 1000]
    st = eos._last_half_stats(steps, [10.0, 10.0, 19.0, 21.0, 30.0], 0.1, 1000)  # 2/lr = 20
    assert st["median_abs_dev"] == pytest.approx(0.05)  # |r-1| = .05, .05, .5
    assert st["frac_within"] == pytest.approx(2 / 3)


def test_loss_stats_on_a_hand_computed_run():
    # 2/lr = 20: S reaches 0.9 x 20 = 18 first at step 4
    steps, sharp = [0, 2, 4, 6, 8], [5.0, 10.0, 18.5, 21.0, 19.0]
    loss = [1.0, 0.9, 0.8, 0.7, 0.8, 0.5, 0.6, 0.3, 0.4, 0.2, 0.25]  # steps 0..10
    st = eos._loss_stats(steps, sharp, loss, 0.1, 10)
    assert st["edge_step"] == 4
    # last half: steps 5..10 -> pairs (5,6) up, (6,7) down, (7,8) up, (8,9) down, (9,10) up
    assert st["up_frac"] == pytest.approx(3 / 5)
    # end window: ceil(0.02 * 10) = 1 step -> 0.25; loss at the edge step 4 is 0.8
    assert st["loss_ratio"] == pytest.approx(0.25 / 0.8)
    never = eos._loss_stats(steps, [5.0] * 5, loss, 0.1, 10)
    assert never["edge_step"] is None and never["loss_ratio"] is None


def test_verdict_passes_when_every_lr_sharpens_to_its_threshold():
    v = eos.signature(result([run_record(lr, sharpening()) for lr in (0.05, 0.1, 0.15)]))
    assert v.passed, str(v)
    assert len(v.checks) == 3 * 4 + 3
    assert v.checks[0].value == pytest.approx(0.3)
    assert [c.name for c in v.checks if c.name.startswith("control_")] == [c.name for c in v.checks[-3:]]


def test_verdict_fails_when_one_lr_never_reaches_the_threshold():
    flat = [0.3 + 0.3 * i / 50 for i in range(51)]  # rises only to 0.6 of 2/lr
    v = eos.signature(result([run_record(0.05, sharpening()), run_record(0.1, flat)]))
    assert not v.passed
    # never at the edge: the hovering check fails, and the loss ratio has no edge step to start from
    assert failing(v) == [
        "lr=0.1: end loss / loss when S first reached 0.9 x 2/lr",
        "lr=0.1: median |S/(2/lr) - 1| over last half",
    ]


def test_verdict_fails_when_sharpness_starts_at_the_threshold():
    v = eos.signature(result([run_record(0.1, sharpening(start=1.0, arrive=1))]))
    assert failing(v) == ["lr=0.1: initial sharpness / (2/lr)"]


def test_verdict_fails_when_sharpness_overshoots_or_training_diverged():
    v = eos.signature(result([run_record(0.1, sharpening(wobble=0.4))]))
    assert failing(v) == ["lr=0.1: median |S/(2/lr) - 1| over last half"]
    d = run_record(0.1, [], loss=[])
    d["diverged_at"] = 7
    v = eos.signature(result([d]))
    assert not v.passed and "diverged at step 7" in v.summary


def test_verdict_fails_when_the_loss_stalls_at_the_edge():
    # S first reaches 0.9 x 2/lr at measurement 18 = step 360 (loss 0.46); the loss then only drops to 0.3
    stall = [max(0.3, 1.0 - 0.0015 * t) for t in range(TOTAL + 1)]
    stall = [v * (1.02 if t > TOTAL / 2 and t % 4 == 0 else 1.0) for t, v in enumerate(stall)]
    v = eos.signature(result([run_record(0.1, sharpening(), stall)]))
    assert failing(v) == ["lr=0.1: end loss / loss when S first reached 0.9 x 2/lr"]
    assert by_name(v)["lr=0.1: end loss / loss when S first reached 0.9 x 2/lr"].value == pytest.approx(0.3 / 0.46)


def test_verdict_fails_when_the_loss_falls_monotonically():
    v = eos.signature(result([run_record(0.1, sharpening(), falling_loss(up_every=0))]))
    assert failing(v) == ["lr=0.1: fraction of loss-increasing steps in last half"]
    assert by_name(v)["lr=0.1: fraction of loss-increasing steps in last half"].value == 0.0


def test_control_fails_when_the_small_lr_also_hovers_at_its_own_threshold():
    hover = run_record(0.02, sharpening(), falling_loss(up_every=0))
    v = eos.signature(result([run_record(0.1, sharpening())], control=hover))
    assert failing(v) == ["control_small_lr (lr=0.02): median |S/(2/lr) - 1| over last half"]


def test_control_fails_when_its_sharpness_plateaus_below_the_largest_lr_edge():
    # a natural plateau: the control's sharpness stops at 2/0.1 = 20 (ratio 0.2 of its own 2/lr = 100), the level
    # the lr=0.1 run sits at, so that run's hovering need not be the edge's doing
    v = eos.signature(result([run_record(0.1, sharpening())], control=control_record(top=0.2)))
    assert failing(v) == ["control_small_lr (lr=0.02): end sharpness / (2/lr_min)"]


def test_control_fails_when_it_plateaus_at_the_smallest_lr_edge():
    # the control stops at 40 = 2/0.05, the level where the lr=0.05 run hovers: past the lr=0.1 edge (20) by 2x, but
    # the lr=0.05 run's hovering could then be a natural plateau (this passed before the check used the highest edge)
    runs = [run_record(0.05, sharpening()), run_record(0.1, sharpening())]
    v = eos.signature(result(runs, control=control_record(top=0.4)))
    assert failing(v) == ["control_small_lr (lr=0.02): end sharpness / (2/lr_min)"]
    assert by_name(v)["control_small_lr (lr=0.02): end sharpness / (2/lr_min)"].value == pytest.approx(1.0, abs=0.05)


def test_control_fails_when_its_loss_is_also_non_monotone():
    v = eos.signature(result([run_record(0.1, sharpening())], control=control_record(loss=falling_loss())))
    assert failing(v) == ["control_small_lr (lr=0.02): fraction of loss-increasing steps in last half"]


def test_reduced_run_end_to_end(smoke):
    _, res = smoke(eos.ID)
    runs = res.data["runs"]
    assert [r["lr"] for r in runs] == [0.05, 0.1]
    assert res.data["control"]["lr"] == 0.02
    for r in [*runs, res.data["control"]]:
        assert r["steps"] == [0, 10, 20, 30, 40]
        assert len(r["train_loss"]) == 41  # the loss at every step
        assert len(r["sharpness"]) == 5 and all(s > 0 for s in r["sharpness"])
        assert r["median_abs_dev"] is not None and r["threshold"] == pytest.approx(2 / r["lr"])
    # same init for every lr: the step-0 sharpness is the same measurement
    assert runs[0]["sharpness"][0] == pytest.approx(runs[1]["sharpness"][0], rel=1e-3)
    assert len(res.verdict.checks) == 2 * 4 + 3
    assert res.figures and Path(res.figures[0]).exists()


@pytest.mark.parametrize(
    "override",
    [
        {"lrs": []},
        {"lrs": [0.1, -0.1]},
        {"lrs": [0.1, 0.1]},
        {"eval_every": 600, "steps": 1000},
        {"activation": "softmax"},
        {"dataset": "digits", "n_train": 5000},
        {"lanczos_tol": 0.0},
        {"lr": 0.1},
        {"control_lr": 0.05},
        {"control_lr": 0.0},
    ],
)
def test_bad_config_is_rejected(override):
    with pytest.raises(ConfigError):
        build_config(eos.Config, eos.PRESETS, "quick", override)
