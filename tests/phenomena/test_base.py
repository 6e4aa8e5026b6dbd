from dataclasses import dataclass

import pytest

from phenomlab.errors import ConfigError, UnknownPhenomenon
from phenomlab.phenomena import PhenomenonConfig, Verdict, build_config, check, param, registry, training
from phenomlab.phenomena.config import ConfigKeyDeprecated, canonical_config


@dataclass(frozen=True)
class Cfg(PhenomenonConfig):
    width: int = param(8, "width", gt=0)
    frac: float = param(0.5, "fraction", gt=0.0, lt=1.0)
    widths: tuple[int, ...] = param((1, 2), "widths", gt=0)
    mode: str = param("a", "mode", choices=("a", "b"))
    flag: bool = param(False, "flag")
    cap: int | None = param(None, "optional", gt=0)


PRESETS = {"quick": {}, "paper": {"width": 64}}


def test_build_and_parse():
    c = build_config(Cfg, PRESETS, "paper", {"frac": "0.25", "widths": "3,4,5", "flag": "true", "cap": "7"})
    assert c == Cfg(width=64, frac=0.25, widths=(3, 4, 5), mode="a", flag=True, cap=7)
    assert build_config(Cfg, PRESETS, "quick", {"cap": "none"}).cap is None
    assert build_config(Cfg, PRESETS, "quick", {"width": 5}).width == 5
    assert c.to_dict()["widths"] == [3, 4, 5]


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"width": "-1"}, "width must be > 0"),
        ({"frac": "1.5"}, "frac must be < 1.0"),
        ({"frac": "x"}, "frac expects float"),
        ({"width": "2.5"}, "width expects int"),
        ({"widths": "1,0"}, "widths must be > 0"),
        ({"mode": "c"}, "mode must be one of"),
        ({"widht": "3"}, "did you mean 'width'"),
        ({"frac": "nan"}, "finite"),
        ({"width": True}, "integer"),
    ],
)
def test_bad_values(over, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config(Cfg, PRESETS, "quick", over)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config(Cfg, PRESETS, "huge", {})


def test_check_and_verdict():
    assert check("a", 1.0, ">=", 1.0).passed
    assert not check("a", 0.99, ">=", 1.0).passed
    assert not check("a", None, "<", 1.0).passed  # an event that never happened fails
    assert not check("a", float("nan"), "<", 1.0).passed
    v = Verdict([check("a", 2.0, ">", 1.0), check("b", 3.0, "<", 1.0)], "s")
    assert not v.passed
    assert Verdict.from_dict(v.to_dict()).to_dict() == v.to_dict()
    assert not Verdict([]).passed  # no evidence is no pass
    assert "NOT REPRODUCED" in str(v)


def test_registry():
    assert "grokking" in registry.implemented()
    assert registry.get("grokking").ID == "grokking"
    with pytest.raises(UnknownPhenomenon, match="did you mean 'grokking'"):
        registry.get("grokkin")
    with pytest.raises(UnknownPhenomenon):
        registry.get("nope")
    ids = [e.id for e in registry.CATALOG]
    assert len(ids) == len(set(ids))


@dataclass(frozen=True)
class Trained(PhenomenonConfig, training(optimizer="sgd", lr=0.1, steps=10, batch_size=0, weight_decay=1e-3)):
    width: int = param(8, "width", gt=0)


def test_training_group_and_builder():
    c = build_config(Trained, {"quick": {}}, "quick", {"lr": "0.5"})
    assert [n for n, *_ in Trained.describe()][:5] == ["optimizer", "lr", "steps", "batch_size", "weight_decay"]
    tc = c.train_config(eval_every=5)
    assert (tc.optimizer, tc.lr, tc.steps, tc.batch_size, tc.weight_decay, tc.eval_every) == (
        "sgd",
        0.5,
        10,
        None,
        1e-3,
        5,
    )
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        build_config(Trained, {"quick": {}}, "quick", {"optimizer": "lbfgs"})
    with pytest.raises(ConfigError, match="not shared training fields"):
        training(learning_rate=0.1)


def test_deprecated_keys_still_parse_with_one_warning():
    with pytest.warns(ConfigKeyDeprecated, match="'wd' is deprecated; use 'weight_decay'"):
        c = build_config(Trained, {"quick": {}}, "quick", {"wd": "0.25"})
    assert c.weight_decay == 0.25
    # stored configs written under old names read back under the new ones
    assert canonical_config({"wd": 1.0, "max_steps": 5}) == {"weight_decay": 1.0, "steps": 5}
    assert canonical_config({"wd": 1.0, "weight_decay": 2.0}) == {"wd": 1.0, "weight_decay": 2.0}
