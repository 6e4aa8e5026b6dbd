"""The phenomenon contract, checked for every implemented catalogue id (a new module gets these tests for free).

Per-phenomenon test files hold only what is specific to one phenomenon (its signature on constructed results,
its helpers). The slow reproduction runs seed 0 here (CI); ``benchmarks/quick_presets.py`` runs seeds 0-2.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import typing
from pathlib import Path

import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, Verdict, build_config, registry
from phenomlab.phenomena.lifecycle import replot, run_phenomenon
from phenomlab.store.sqlite import RunStore

IDS = registry.implemented()
SLOW_SEEDS = [int(s) for s in os.environ.get("PHENOMLAB_SLOW_SEEDS", "0").split(",") if s]


def check_contract(pid: str) -> None:
    mod = registry.get(pid)
    assert mod.ID == pid
    assert {"quick", "smoke"} <= set(mod.PRESETS), "presets 'quick' and 'smoke' are required"
    for preset in mod.PRESETS:
        build_config(mod.Config, mod.PRESETS, preset).validate()
    with pytest.raises(ConfigError, match="unknown config key"):
        build_config(mod.Config, mod.PRESETS, "quick", {"no_such_key": 1})
    hints = typing.get_type_hints(mod.Config)
    numeric = next(f.name for f in dataclasses.fields(mod.Config) if hints[f.name] in (int, float))
    with pytest.raises(ConfigError):
        build_config(mod.Config, mod.PRESETS, "quick", {numeric: "not-a-number"})
    for name, _tp, _default, help_ in mod.Config.describe():
        assert help_, f"config field {name} has no help text"
    # a run uses the device it is given, or declares that it runs on the CPU (and is then stored as run there)
    uses_device = "ctx.device" in inspect.getsource(mod)
    assert uses_device != (getattr(mod, "RUNS_ON_CPU", False) is True), "use ctx.device or set RUNS_ON_CPU = True"


def check_smoke_run(pid: str, store: RunStore, r: Result) -> None:
    """The smoke-preset run ``r``: stored, reads back identically, re-plots to the same verdict."""
    assert isinstance(r.verdict, Verdict) and r.verdict.checks
    assert all(c.name and c.op in (">=", ">", "<=", "<") for c in r.verdict.checks)
    # every verdict compares with a negative control, and says so in the check's name (issue 11)
    assert any(c.name.startswith("control") for c in r.verdict.checks), "no check named control..."
    json.dumps(r.data)  # the stored data is plain JSON
    assert r.figures and all(Path(p).is_file() and Path(p).parent == Path(r.run_dir) for p in r.figures)
    # a finished run keeps its measurements, not its checkpoints or partial results (docs/RELIABILITY.md)
    assert not [*Path(r.run_dir).glob("*.ckpt"), *Path(r.run_dir).glob("*.part.pt")]
    again = run_phenomenon(pid, preset="smoke", seed=0, store=store)
    assert again.cached and again.data == r.data and again.verdict.to_dict() == r.verdict.to_dict()
    redone = replot(store, r.run_id)
    assert redone.verdict.to_dict() == r.verdict.to_dict()
    assert isinstance(redone, Result) and sorted(redone.figures) == sorted(r.figures)


def test_list_values_parse_bare_bracketed_or_as_a_tuple():
    from phenomlab.phenomena.config import parse_value

    for text in ("0,0.1,0.3", "[0, 0.1, 0.3]", "(0, 0.1, 0.3)", " 0, 0.1 ,0.3, "):
        assert parse_value("noise_levels", text, tuple[float, ...]) == (0.0, 0.1, 0.3)
    with pytest.raises(ConfigError, match="expects float"):
        parse_value("noise_levels", "0,x", tuple[float, ...])


@pytest.mark.parametrize("pid", IDS)
def test_contract(pid):
    check_contract(pid)


def test_a_phenomenon_that_runs_on_the_cpu_is_stored_as_run_there_whatever_the_device_asked(tmp_path, monkeypatch):
    lines: list[str] = []
    store = RunStore(tmp_path)
    # a CUDA that claims to be there stands for an accelerator on a machine without one: sgd-fluctuation must not
    # try to use it (any CUDA call here would fail)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    r = run_phenomenon("sgd-fluctuation", preset="smoke", device="cuda", store=store, announce=lines.append)
    assert store.get(r.run_id)["device"] == "cpu"
    assert any("runs on the CPU" in line and "cuda" in line for line in lines)


@pytest.mark.parametrize("pid", IDS)
def test_smoke_run_is_stored_cached_and_replotted(pid, smoke):
    check_smoke_run(pid, *smoke(pid))


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("pid", IDS)
def test_quick_preset_reproduces(pid, seed, tmp_path):
    r = run_phenomenon(pid, seed=seed, out=tmp_path)
    assert r.passed, str(r.verdict)


def test_whole_numbers_parse_exactly_and_empty_list_items_are_refused():
    from phenomlab.phenomena.config import parse_value

    assert parse_value("steps", "99999999999999999999999", int) == 99999999999999999999999
    assert parse_value("steps", "1e3", int) == 1000 and parse_value("steps", " 2.0 ", int) == 2
    with pytest.raises(ConfigError, match="expects"):
        parse_value("steps", "1e30", int)  # a float this large no longer holds every integer
    with pytest.raises(ConfigError, match="empty item"):
        parse_value("noise_levels", "0,,0.3", tuple[float, ...])
    assert parse_value("noise_levels", "()", tuple[float, ...]) == ()


def test_a_run_read_back_from_another_kind_of_device_says_so(tmp_path, monkeypatch):
    store, lines = RunStore(tmp_path), []
    first = run_phenomenon("grokking", preset="smoke", store=store)  # computed on the CPU
    # a CUDA that claims to be there stands for an accelerator: the finished run is read back, not recomputed (any
    # CUDA call would fail here), and the line says where it ran
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    again = run_phenomenon("grokking", preset="smoke", device="cuda", store=store, announce=lines.append)
    assert again.cached and again.data == first.data
    assert any("computed on cpu, not cuda" in line and "--force" in line for line in lines)
    lines.clear()
    run_phenomenon("grokking", preset="smoke", device="cpu", store=store, announce=lines.append)
    assert not any("computed on" in line for line in lines)
