import time

import numpy as np
import pytest
from typer.testing import CliRunner

import phenomlab
from phenomlab.cli import app
from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.phenomena.lifecycle import check_seed
from phenomlab.store.sqlite import RunStore
from phenomlab.sweep import TooManyTrials, bootstrap_ci, parse_grid, parse_seeds, plan
from phenomlab.sweep.grid import count_seeds, parse_seed_ranges


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("2") == [2]
    assert parse_seeds("0-2,2,5") == [0, 1, 2, 5]
    # one int is that seed (as `phenomlab run --seed 0`), never a count of seeds
    assert parse_seeds(0) == [0] and parse_seeds(7) == [7]
    assert parse_seeds([3, 1, 3]) == [3, 1] and parse_seeds(np.arange(2)) == [0, 1] and parse_seeds(range(2)) == [0, 1]
    for bad in ("a", "3-1", "", "1-", "0-2-4"):
        with pytest.raises(PhenomlabError):
            parse_seeds(bad)


def test_negative_or_non_integer_seeds_refused_as_run_refuses_them():
    with pytest.raises(ConfigError) as expected:
        check_seed(-1)
    for bad in (-1, "-1", "0,-1", [0, -1], range(-1, 2)):
        with pytest.raises(ConfigError) as exc:
            parse_seeds(bad)
        assert str(exc.value) == str(expected.value)
    for bad in (True, 1.5, [0.5]):
        with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
            parse_seeds(bad)


def test_seeds_are_counted_without_listing_them():
    ranges = parse_seed_ranges("0-100000000,5,50-60")
    assert len(ranges) == 3 and count_seeds(ranges) == 100_000_001
    assert count_seeds(parse_seed_ranges("0-4,3-9,20")) == 11 == len(parse_seeds("0-4,3-9,20"))
    assert count_seeds(parse_seed_ranges(range(10**12))) == 10**12


def test_parse_grid():
    assert parse_grid(["wd=0,0.5", "lr=1e-3"]) == {"wd": ["0", "0.5"], "lr": ["1e-3"]}
    assert parse_grid({"wd": [0, 1], "lr": 0.1}) == {"wd": [0, 1], "lr": [0.1]}
    assert parse_grid(["widths=1;2,4;8"]) == {"widths": ["1,2", "4,8"]}
    for bad in (["wd"], ["wd="], ["wd=1", "wd=2"]):
        with pytest.raises(PhenomlabError):
            parse_grid(bad)


def test_plan_expands_and_validates():
    sid, trials = plan("grokking", ["lr=0.01,0.02", "beta2=0.9,0.98"], "0-2", base={"p": "23"})
    assert len(trials) == 12 and len({t.run_id for t in trials}) == 12
    assert all(t.config["p"] == 23 for t in trials)
    assert sid == plan("grokking", ["lr=0.01,0.02", "beta2=0.9,0.98"], "0-2", base={"p": "23"})[0]
    with pytest.raises(ConfigError, match="lr must be > 0"):
        plan("grokking", ["lr=0.5,-1"], "0")
    with pytest.raises(ConfigError, match="unknown config key"):
        plan("grokking", ["nope=1"], "0")
    with pytest.raises(PhenomlabError, match="repeats"):
        plan("grokking", ["lr=1,1.0"], "0")


def test_huge_sweeps_refused_by_count_before_any_trial_is_built(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(TooManyTrials, match=r"100,000,001 trials"):
        plan("grokking", None, "0-100000000")
    grid = {"lr": [f"0.{i + 1:03d}" for i in range(300)], "beta2": [f"0.{i + 1:03d}" for i in range(300)]}
    with pytest.raises(TooManyTrials, match=r"90,000 trials \(90,000 grid point"):
        plan("grokking", grid, "0")
    assert time.perf_counter() - t0 < 2.0
    # the limit is inclusive and can be raised or lifted
    assert len(plan("grokking", None, "0-999")[1]) == 1000
    with pytest.raises(TooManyTrials, match="1,001 trials"):
        plan("grokking", None, "0-1000")
    assert len(plan("grokking", None, "0-1000", max_trials=None)[1]) == 1001
    assert len(plan("grokking", None, "0-1000", max_trials=2000)[1]) == 1001
    # phenomlab.sweep refuses before it records anything
    with pytest.raises(TooManyTrials, match="confirm=True"):
        phenomlab.sweep("grokking", grid, "0-100000000", store=tmp_path)
    assert RunStore(tmp_path).list_sweeps() == []


def test_cli_refuses_huge_sweep_in_one_line_unless_yes(tmp_path):
    runner = CliRunner()
    t0 = time.perf_counter()
    r = runner.invoke(app, ["sweep", "grokking", "--seeds", "0-100000000", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "100,000,001 trials" in r.output and "--yes" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert time.perf_counter() - t0 < 10
    assert RunStore(tmp_path).list_sweeps() == []
    # --yes lifts the limit: the sweep is built, and here fails for another reason before running anything
    args = ["sweep", "grokking", "--grid", "lr=1,1.0", "--seeds", "0-1000", "--out", str(tmp_path)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "2,002 trials" in r.output
    r = runner.invoke(app, [*args, "--yes"])
    assert r.exit_code == 2 and "repeats a configuration" in r.output, r.output


def test_cli_negative_seed_refused_like_run(tmp_path):
    runner = CliRunner()
    run = runner.invoke(app, ["run", "grokking", "--seed", "-1", "--out", str(tmp_path)])
    sweep = runner.invoke(app, ["sweep", "grokking", "--seeds=-1", "--out", str(tmp_path)])
    assert run.exit_code == sweep.exit_code == 2
    assert "seed must be a non-negative integer, got -1" in run.output
    assert "seed must be a non-negative integer, got -1" in sweep.output


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert lo < 2.5 < hi and 1.0 <= lo and hi <= 4.0
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
