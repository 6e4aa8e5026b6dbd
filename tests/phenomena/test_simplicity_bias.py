import pytest
import torch

from phenomlab.data.lms import lms
from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, simplicity_bias

CHECKS = [
    "lms_test_acc",
    "lms_probe_gap",
    "lms_s_randomized_acc",
    "lms_sc_randomized_acc",
    "dom_test_acc",
    "dom_probe_gap",
    "dom_s_randomized_acc",
    "dom_sc_randomized_cost",
    "control_lms_sc_learned",
    "control_lms_sc_drop",
    "control_dom_sc_learned",
    "control_dom_sc_drop",
    "control_lms_equal_min_cost",
]


def setting(blocks, probes, main, control):
    """One constructed setting: probe accuracies per block (S = the higher) and (clean, S-rand, S^c-rand) per arm."""
    simple = max(probes, key=lambda i: probes[i])
    arms = {
        arm: {
            "steps": [0, 1],
            "train_acc": [0.5, 1.0],
            "test_acc": [0.5, v[0]],
            "clean": v[0],
            "s_rand": v[1],
            "sc_rand": v[2],
        }
        for arm, v in (("main", main), ("control", control))
    }
    return {
        "chance": 0.5,
        "probe": {blocks[i]: probes[i] for i in probes},
        "simple": blocks[simple],
        "complex": blocks[1 - simple],
        **arms,
    }


def equal_arm(clean, rand0, rand1):
    return {"steps": [0, 1], "test_acc": [0.5, clean], "clean": clean, "rand": [rand0, rand1]}


# both equally simple coordinates used alike: shuffling either costs ~0.25
EQUAL_BOTH = equal_arm(1.0, 0.75, 0.76)


def make_result(lms=None, dom=None, equal=EQUAL_BOTH):
    """Phenomenon present by default; ``lms``/``dom`` override fields of one setting (probe, main, control)."""
    lms_kw = {"probes": {0: 1.0, 1: 0.5}, "main": (1.0, 0.5, 1.0), "control": (0.99, 0.99, 0.5), **(lms or {})}
    dom_kw = {"probes": {0: 0.67, 1: 1.0}, "main": (1.0, 0.5, 1.0), "control": (0.98, 0.98, 0.5), **(dom or {})}
    cfg = build_config(simplicity_bias.Config, simplicity_bias.PRESETS)
    data = {
        "lms": setting(("linear", "slabs"), **lms_kw),
        "dom": setting(("mnist1d", "digits"), **dom_kw),
    }
    if equal is not None:
        data["lms_equal"] = equal
    return Result("simplicity-bias", cfg.to_dict(), 0, data)


def failed(**kw):
    v = simplicity_bias.signature(make_result(**kw))
    return [c.name for c in v.checks if not c.passed]


def test_present_passes_every_check():
    v = simplicity_bias.signature(make_result())
    assert v.passed, str(v)
    assert [c.name for c in v.checks] == CHECKS
    assert "S = linear" in v.summary and "S = digits" in v.summary


@pytest.mark.parametrize(
    "kw, name",
    [
        # the net did not learn LMS well (S^c-randomised accuracy at the noise level above it)
        ({"lms": {"main": (0.94, 0.5, 0.95)}}, "lms_test_acc"),
        # the two LMS blocks are about equally linearly decodable: "simple" is not measured to differ
        ({"lms": {"probes": {0: 0.8, 1: 0.7}}}, "lms_probe_gap"),
        # the net also uses the slabs: shuffling the linear coordinate leaves it well above chance
        ({"lms": {"main": (1.0, 0.8, 1.0)}}, "lms_s_randomized_acc"),
        # the net relies on the slabs too: shuffling them costs accuracy
        ({"lms": {"main": (1.0, 0.55, 0.85)}}, "lms_sc_randomized_acc"),
        ({"dom": {"main": (0.9, 0.5, 0.9)}}, "dom_test_acc"),
        ({"dom": {"probes": {0: 0.9, 1: 1.0}}}, "dom_probe_gap"),
        ({"dom": {"main": (1.0, 0.7, 0.99)}}, "dom_s_randomized_acc"),
        # the dominoes net leans on the complex half as well
        ({"dom": {"main": (1.0, 0.55, 0.9)}}, "dom_sc_randomized_cost"),
        # the control net cannot learn the slabs: the invariance could be an inability (drop still large enough)
        ({"lms": {"control": (0.88, 0.88, 0.5)}}, "control_lms_sc_learned"),
        # the control learned S^c yet is invariant to it too: the randomisation itself is broken
        ({"lms": {"control": (0.99, 0.99, 0.9)}}, "control_lms_sc_drop"),
        ({"dom": {"control": (0.87, 0.87, 0.5)}}, "control_dom_sc_learned"),
        ({"dom": {"control": (0.98, 0.98, 0.7)}}, "control_dom_sc_drop"),
        # with two equally simple coordinates the net still ignores one: exclusive reliance whatever the simplicity
        ({"equal": equal_arm(1.0, 0.5, 0.99)}, "control_lms_equal_min_cost"),
        ({"equal": equal_arm(1.0, 0.98, 0.52)}, "control_lms_equal_min_cost"),
        # a run stored before the arm existed (or equal_control=False): the control is missing, not passed
        ({"equal": None}, "control_lms_equal_min_cost"),
    ],
)
def test_each_check_fails_alone_on_its_construction(kw, name):
    assert failed(**kw) == [name]


def test_absent_phenomenon_fails():
    # a net that uses both blocks alike: neither randomisation sends it to chance
    both = {"main": (1.0, 0.85, 0.85)}
    names = failed(lms=both, dom=both)
    assert {"lms_s_randomized_acc", "lms_sc_randomized_acc", "dom_s_randomized_acc", "dom_sc_randomized_cost"} <= set(
        names
    )


def test_simple_block_is_the_measured_one():
    # if the probes said the slabs were simpler, S would be the slabs and the same numbers would read the other way
    r = make_result(lms={"probes": {0: 0.5, 1: 1.0}})
    assert r.data["lms"]["simple"] == "slabs"
    assert "S = slabs" in simplicity_bias.signature(r).summary


def test_linear_probe_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g)
    y = (x[:, 0] > 0).long()
    x_sep = x.clone()
    x_sep[:, 0] += 0.5 * torch.sign(x[:, 0])  # a margin of 1 between the classes along x_0
    # a linearly separable label with a margin: the probe gets every test point
    assert simplicity_bias.linear_probe_acc(x_sep[:300], y[:300], x_sep[300:], y[300:]) == 1.0
    # a label that is a symmetric function of x_0 (|x_0| > median): no linear rule beats ~chance
    y2 = (x[:, 0].abs() > x[:, 0].abs().median()).long()
    assert simplicity_bias.linear_probe_acc(x[:300], y2[:300], x[300:], y2[300:]) < 0.7


@pytest.mark.parametrize(
    "over",
    [
        {"slabs": 4},
        {"margin": 0.3},
        {"digit_classes": [0, 1, 2]},
        {"digit_classes": [1, 1], "signal_classes": [0, 3]},
        {"signal_classes": [0, 10]},
        {"width": 0},
    ],
)
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(simplicity_bias.Config, simplicity_bias.PRESETS, "quick", over)


def test_smoke_run_end_to_end(smoke):
    store, r = smoke("simplicity-bias")
    assert [c.name for c in r.verdict.checks] == CHECKS
    for name in ("lms", "dom"):
        e = r.data[name]
        assert set(e["probe"]) == {e["simple"], e["complex"]}
        assert all(0.0 <= e[arm][k] <= 1.0 for arm in ("main", "control") for k in ("clean", "s_rand", "sc_rand"))
    assert r.data["lms"]["simple"] == "linear"  # the linear coordinate is linearly separable by construction
    eq = r.data["lms_equal"]
    assert len(eq["rand"]) == 2 and all(0.0 <= v <= 1.0 for v in [eq["clean"], *eq["rand"]])
    assert all(p.endswith(".png") for p in r.figures)


def test_ten_class_dominoes_are_reported_not_checked():
    # the ten-class setting shows only partial bias: it appears in the summary but decides nothing
    r = make_result()
    r.data["dom10"] = setting(("mnist1d", "digits"), {0: 0.35, 1: 0.96}, (0.97, 0.8, 0.6), (0.5, 0.5, 0.1))
    v = simplicity_bias.signature(r)
    assert v.passed and [c.name for c in v.checks] == CHECKS
    assert "ten-class dominoes (reported)" in v.summary


def test_the_s_randomised_bound_follows_the_chance_level():
    # a ten-class-like setting (chance 0.1): 0.5 after randomising S is far above chance + 0.1 and must fail
    r = make_result()
    r.data["dom"]["chance"] = 0.1
    v = simplicity_bias.signature(r)
    assert [c.name for c in v.checks if not c.passed] == ["dom_s_randomized_acc"]


def test_second_linear_coordinate_is_as_simple_and_independent():
    ds = lms(3000, 1000, n_slabs=4, margin=0.1, seed=0)
    two = simplicity_bias.with_second_linear(ds, 0.1, torch.Generator().manual_seed(1))
    sign = 2.0 * torch.cat([ds.y_train, ds.y_test]).double() - 1.0
    x, x0 = torch.cat([two.x_train, two.x_test]).double(), torch.cat([ds.x_train, ds.x_test]).double()
    # column 1 has column 0's law: sign(y) times U[0.1, 1], so each alone predicts the label exactly
    assert torch.equal(torch.sign(x[:, 1]), sign) and float((x[:, 1] * sign).min()) >= 0.1
    assert float((x[:, 1] * sign).max()) <= 1.0 and abs(float((x[:, 1] * sign).mean()) - 0.55) < 0.02
    # independent of column 0 given the label; the other columns and the input data are untouched
    assert abs(float(torch.corrcoef(torch.stack([x[:, 0] * sign, x[:, 1] * sign]))[0, 1])) < 0.05
    assert torch.equal(x[:, [0, 2, 3, 4]], x0[:, [0, 2, 3, 4]]) and not torch.equal(x[:, 1], x0[:, 1])
