import pytest

import phenomlab
from phenomlab.store.sqlite import RunStore

ray = pytest.importorskip("ray", reason="the Ray executor test needs the optional extra phenomlab[ray]")

GRID = {"lr": ["1e30", "0.01", "0.02"]}


def test_ray_sweep_matches_local(tmp_path, tiny):
    ray_res = phenomlab.sweep("grokking", GRID, "0", executor="ray", workers=2, store=tmp_path / "ray", base=tiny())
    assert sorted(o.status for o in ray_res.outcomes) == ["failed", "finished", "finished"]
    # local with the same threads per worker (1) gives the same numbers
    local = phenomlab.sweep("grokking", GRID, "0", workers=2, store=tmp_path / "local", base=tiny())
    rs, ls = RunStore(tmp_path / "ray"), RunStore(tmp_path / "local")
    assert len(rs.list_runs(status="finished")) == 2
    for t in local.trials:
        a, b = rs.get(t.run_id), ls.get(t.run_id)
        assert a["status"] == b["status"] and a["attempts"] == b["attempts"] == 1, t.label
        assert a["result"] == b["result"], t.label
        assert a["verdict"] == b["verdict"]
        # the driver wrote the metrics and figures it received from the workers
        assert rs.metrics(t.run_id)["main/test_acc"] == ls.metrics(t.run_id)["main/test_acc"]
        if a["status"] == "finished":
            assert rs.artifacts(t.run_id) and all(p.endswith(".png") for p in rs.artifacts(t.run_id).values())
            assert (tmp_path / "ray" / "runs" / t.run_id / "run.json").exists()
        else:  # the diverged trial is stored as failed, with the worker's error
            assert "diverged" in a["error"] and "diverged" in b["error"]
    again = phenomlab.sweep("grokking", GRID, "0", executor="ray", workers=2, store=tmp_path / "ray", base=tiny())
    assert sorted(o.status for o in again.outcomes) == ["cached", "cached", "failed"]
    assert rs.sweep(again.sweep_id)["run_ids"] == rs.sweep(ray_res.sweep_id)["run_ids"]
