import multiprocessing as mp
import os

import pytest

from phenomlab.errors import StoreError
from phenomlab.store.ids import run_id
from phenomlab.store.sqlite import RunStore


def test_run_id_is_content_addressed():
    a = run_id("grokking", {"p": 97, "lr": 1e-3}, 0)
    assert a == run_id("grokking", {"lr": 1e-3, "p": 97}, 0)  # key order does not matter
    assert a != run_id("grokking", {"p": 97, "lr": 1e-3}, 1)
    assert a != run_id("grokking", {"p": 97, "lr": 2e-3}, 0)
    assert a != run_id("other", {"p": 97, "lr": 1e-3}, 0)
    assert run_id("x", {"w": (1, 2)}, 0) == run_id("x", {"w": [1, 2]}, 0)
    assert len(a) == 16


def test_lifecycle(tmp_path):
    s = RunStore(tmp_path)
    s.start_run("r1", "grokking", {"p": 7}, 0, preset="quick", versions={"torch": "x"})
    assert s.get("r1")["status"] == "running"
    s.log_metrics("r1", 0, {"acc": 0.1, "loss": float("nan")})
    s.log_metrics("r1", 10, {"acc": 0.5})
    s.log_metrics("r1", 10, {"acc": 0.6})  # re-logging a step after a resume replaces it
    m = s.metrics("r1")
    assert m["acc"] == ([0, 10], [0.1, 0.6])
    assert m["loss"][1][0] != m["loss"][1][0]  # NaN round-trips as NaN
    s.finish_run("r1", True, {"passed": True, "checks": []}, {"x": [1, 2]}, 1.5)
    row = s.get("r1")
    assert row["status"] == "finished" and row["passed"] is True and row["result"] == {"x": [1, 2]}
    assert row["config"] == {"p": 7} and row["versions"] == {"torch": "x"}
    s.start_run("r2", "grokking", {"p": 7}, 1)
    s.fail_run("r2", "training diverged at step 3")
    assert s.get("r2")["status"] == "failed"
    s.start_run("r2", "grokking", {"p": 7}, 1)  # a retry bumps attempts
    assert s.get("r2")["attempts"] == 2
    assert [r["run_id"] for r in s.list_runs(status="finished")] == ["r1"]
    assert [r["run_id"] for r in s.find("r")] == ["r1", "r2"]
    s.add_artifact("r1", "fig", tmp_path / "fig.png")
    assert s.artifacts("r1") == {"fig": str(tmp_path / "fig.png")}


def _writer(root, worker, n):
    s = RunStore(root)
    for i in range(n):
        rid = f"w{worker}-{i}"
        s.start_run(rid, "p", {"i": i}, worker)
        s.log_metrics(rid, i, {"a": float(i), "b": float(worker)})
        s.finish_run(rid, i % 2 == 0, {"passed": i % 2 == 0, "checks": []}, {"i": i}, 0.1)


def test_concurrent_writers_lose_nothing(tmp_path):
    RunStore(tmp_path)
    ctx = mp.get_context("spawn")
    n = 60
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = RunStore(tmp_path)
    rows = s.list_runs()
    assert len(rows) == 2 * n
    assert all(r["status"] == "finished" for r in rows)
    for w in range(2):
        for i in range(n):
            assert s.metrics(f"w{w}-{i}")["a"] == ([i], [float(i)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(StoreError, match="not writable"):
        RunStore(ro / "x")


def test_unwritable_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file, not a directory"):
        RunStore(f)
