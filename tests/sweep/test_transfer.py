"""The lifecycle functions the executors use for runs settled outside ``run_phenomenon``'s own store."""

import pytest

from phenomlab.errors import TrainingDiverged
from phenomlab.phenomena import lifecycle
from phenomlab.phenomena.registry import make_config
from phenomlab.store.sqlite import RunStore


def test_export_import_keeps_everything_and_never_overwrites_a_finished_run(tmp_path, tiny):
    scratch, home = RunStore(tmp_path / "scratch"), RunStore(tmp_path / "home")
    r = lifecycle.run_phenomenon("grokking", overrides=tiny(), seed=3, store=scratch)
    record = lifecycle.export_run(scratch, r.run_id)
    assert lifecycle.export_run(scratch, "nope") is None
    got = lifecycle.import_run(home, record, sweep_id="s1")
    assert not got.cached and got.verdict == r.verdict and got.data == r.data
    row, src = home.get(r.run_id), scratch.get(r.run_id)
    assert row["status"] == "finished" and row["result"] == src["result"] and row["versions"] == src["versions"]
    assert home.metrics(r.run_id) == scratch.metrics(r.run_id)
    figures = home.artifacts(r.run_id)
    assert figures and all(p.startswith(str(home.root)) for p in figures.values())
    assert (home.run_dir(r.run_id) / "run.json").exists()
    assert not lifecycle.needs_run(row) and lifecycle.needs_run(None)
    # a second import (e.g. a duplicate remote result) reads back what is stored
    again = lifecycle.import_run(home, record, sweep_id="s2")
    assert again.cached and home.get(r.run_id)["attempts"] == 1
    assert home.sweep("s2")["run_ids"] == [r.run_id]
    # a process that died on a finished run does not downgrade it
    cfg = make_config("grokking", "quick", tiny()).to_dict()
    lifecycle.record_failure(home, "grokking", cfg, 3, "worker process died")
    assert home.get(r.run_id)["status"] == "finished"


def test_failed_records_and_lost_runs_are_stored_failed(tmp_path, tiny):
    scratch, home = RunStore(tmp_path / "scratch"), RunStore(tmp_path / "home")
    with pytest.raises(TrainingDiverged):
        lifecycle.run_phenomenon("grokking", overrides={**tiny(), "lr": "1e30"}, seed=0, store=scratch)
    (rid,) = [r["run_id"] for r in scratch.list_runs()]
    with pytest.raises(lifecycle.RunFailed, match="diverged"):
        lifecycle.import_run(home, lifecycle.export_run(scratch, rid))
    assert home.get(rid)["status"] == "failed" and "diverged" in home.get(rid)["error"]
    assert lifecycle.needs_run(home.get(rid))
    cfg = make_config("grokking", "quick", tiny()).to_dict()
    lifecycle.record_failure(home, "grokking", cfg, 5, "ray task failed: lost", preset="quick", sweep_id="s")
    (lost,) = [r for r in home.list_runs() if r["seed"] == 5]
    assert lost["status"] == "failed" and lost["error"] == "ray task failed: lost" and lost["attempts"] == 1
