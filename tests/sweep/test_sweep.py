import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import phenomlab
from phenomlab.cli import app
from phenomlab.errors import PhenomlabError
from phenomlab.store.sqlite import RunStore

PHENOMLAB = os.path.join(os.path.dirname(sys.executable), "phenomlab")


def test_local_sweep_skips_stored_runs_and_survives_failures(tmp_path, tiny):
    res = phenomlab.sweep("grokking", {"lr": ["0.01", "0.02"]}, "0-1", store=tmp_path, base=tiny())
    assert len(res.trials) == 4 and {o.status for o in res.outcomes} == {"finished"}
    again = phenomlab.sweep("grokking", {"lr": ["0.01", "0.02"]}, "0-1", store=tmp_path, base=tiny())
    assert {o.status for o in again.outcomes} == {"cached"}
    df = res.frame()
    assert len(df) == 4 and set(df["status"]) == {"finished"} and "t_fit" in df.columns
    assert set(res.compare()["group"]) == {"lr=0.01", "lr=0.02"}
    # seeds=0 (an int) is seed 0; one trial diverges (huge lr): stored as failed, the other goes on
    bad = phenomlab.sweep("grokking", {"lr": ["1e30", "0.03"]}, 0, store=tmp_path, base=tiny())
    assert [t.seed for t in bad.trials] == [0, 0]
    assert sorted(o.status for o in bad.outcomes) == ["failed", "finished"]
    assert RunStore(tmp_path).sweep(bad.sweep_id)["spec"]["seeds"] == [0]
    assert len(RunStore(tmp_path).sweep(bad.sweep_id)["run_ids"]) == 2
    failed = RunStore(tmp_path).list_runs(status="failed")
    assert len(failed) == 1 and "diverged" in failed[0]["error"]


def test_force_recomputes_finished_trials_and_keeps_their_sweeps(tmp_path, tiny):
    first = phenomlab.sweep("grokking", None, "0-1", store=tmp_path, base=tiny())
    forced = phenomlab.sweep("grokking", None, "0-1", store=tmp_path, base=tiny(), force=True)
    assert [o.status for o in forced.outcomes] == ["finished", "finished"] and forced.sweep_id == first.sweep_id
    rows = RunStore(tmp_path).list_runs()
    assert sorted(r["attempts"] for r in rows) == [2, 2] and {r["status"] for r in rows} == {"finished"}
    assert len(RunStore(tmp_path).sweep(first.sweep_id)["run_ids"]) == 2
    with pytest.raises(PhenomlabError, match="local executor"):
        phenomlab.sweep("grokking", None, "0", store=tmp_path, base=tiny(), executor="ray", force=True)


def test_parallel_local_matches_sequential_and_survives_failures(tmp_path, tiny):
    grid = {"lr": ["1e30", "0.01", "0.02"]}
    seq = phenomlab.sweep("grokking", grid, "0", store=tmp_path / "a", base=tiny())
    par = phenomlab.sweep("grokking", grid, "0", store=tmp_path / "b", base=tiny(), workers=2)
    assert sorted(o.status for o in par.outcomes) == ["failed", "finished", "finished"]
    a, b = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    for t in seq.trials:
        ra, rb = a.get(t.run_id), b.get(t.run_id)
        assert ra["status"] == rb["status"]
        if ra["status"] == "finished":
            assert ra["result"]["t_fit"] == rb["result"]["t_fit"]
            assert ra["result"]["test_acc"] == pytest.approx(rb["result"]["test_acc"], abs=1e-3)
        else:
            assert "diverged" in rb["error"]
    assert par.sweep_id == seq.sweep_id
    # finished trials are read back, the failed one is tried again
    again = phenomlab.sweep("grokking", grid, "0", store=tmp_path / "b", base=tiny(), workers=2)
    assert sorted(o.status for o in again.outcomes) == ["cached", "cached", "failed"]


def test_cli_sweep_compare_and_exit_codes(tmp_path, tiny):
    runner = CliRunner()
    args = ["sweep", "grokking", "--seeds", "0-1", "--out", str(tmp_path)]
    for k, v in tiny().items():
        args += ["--set", f"{k}={v}"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    sid = RunStore(tmp_path).list_sweeps()[0]["sweep_id"]
    c = runner.invoke(app, ["compare", "--sweep", sid, "--out", str(tmp_path), "--csv", str(tmp_path / "c.csv")])
    assert c.exit_code == 0 and "pass rate" in c.output and "95% CI" in c.output
    assert (tmp_path / "c.csv").read_text().startswith("group,metric,mean")
    bad = runner.invoke(app, ["sweep", "grokking", "--grid", "lr=-1", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "lr must be" in bad.output
    bad = runner.invoke(app, ["sweep", "grokking", "--executor", "spark", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "executor" in bad.output


def _sweep_args(tmp_path: Path, base: dict[str, str], grid: str, seeds: str, workers: int = 2) -> list[str]:
    args = [PHENOMLAB, "sweep", "grokking", "--grid", grid, "--seeds", seeds, "--out", str(tmp_path)]
    for k, v in base.items():
        args += ["--set", f"{k}={v}"]
    return [*args, "--workers", str(workers)]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_midway_then_rerun_loses_and_duplicates_nothing(tmp_path, tiny):
    args = _sweep_args(tmp_path, tiny(600), "lr=0.01,0.02", "0-1")
    env = {**os.environ, "PHENOMLAB_CHECKPOINT_SECONDS": "0.2", "OMP_NUM_THREADS": "1"}
    # a shell starts background jobs with SIGINT ignored and Python keeps that: give the driver the default action
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, preexec_fn=_default_sigint)
    deadline = time.time() + 180
    while time.time() < deadline:
        # read-only: a poll must never wait for the write lock the workers keep taking
        if (tmp_path / "store.sqlite").exists() and RunStore(tmp_path, readonly=True).list_runs(status="finished"):
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out.decode()
    rows = RunStore(tmp_path).list_runs()
    done_before = {r["run_id"] for r in rows if r["status"] == "finished"}
    assert 1 <= len(done_before) < 4, out.decode()
    assert all(r["status"] in ("finished", "interrupted") for r in rows), out.decode()
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = RunStore(tmp_path).list_runs()
    assert len(rows) == 4 and len({x["run_id"] for x in rows}) == 4
    assert all(x["status"] == "finished" for x in rows)
    assert f"{len(done_before)} read from the store" in r.stdout
    # finished runs were not recomputed (one attempt each)
    assert all(x["attempts"] == 1 for x in rows if x["run_id"] in done_before)


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited (an orphan waits for init to reap it)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_killed_driver_leaves_no_worker_running_and_rerun_completes(tmp_path, tiny):
    """kill -9 of a sweep driver with 2 workers: within 10 s no worker is alive, no queued trial starts,
    the runs in flight are marked interrupted, and the same sweep run again resumes and completes."""
    args = _sweep_args(tmp_path, tiny(2000), "lr=0.01,0.02,0.03", "0")
    env = {**os.environ, "PHENOMLAB_CHECKPOINT_SECONDS": "0.2", "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 180
        workers: list[int] = []
        while time.time() < deadline and driver.poll() is None:
            workers = [k for k in _children(driver.pid) if "spawn_main" in _cmdline(k)]
            db = tmp_path / "store.sqlite"
            running = db.exists() and RunStore(tmp_path, readonly=True).list_runs(status="running")
            if len(workers) == 2 and running:
                break
            time.sleep(0.2)
        assert len(workers) == 2 and driver.poll() is None, "the sweep never got two workers running"
        helpers = _children(driver.pid)  # the workers and multiprocessing's resource tracker
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
    at_kill = {r["run_id"] for r in RunStore(tmp_path).list_runs()}
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(k) for k in helpers):
        time.sleep(0.2)
    assert [k for k in helpers if _alive(k)] == []
    rows = RunStore(tmp_path).list_runs()
    assert {r["run_id"] for r in rows} == at_kill  # no queued trial was started after the kill
    assert len(rows) < 3  # a trial was still queued when the driver died
    # a worker stores its trial as interrupted on SIGTERM; one that had to hard-exit (5 s fallback, e.g. on a busy
    # machine) leaves it "running" with its lock released, which the re-run resumes the same way
    assert all(r["status"] in ("finished", "interrupted", "running") for r in rows), [r["status"] for r in rows]
    interrupted = {r["run_id"] for r in rows if r["status"] in ("interrupted", "running")}
    assert interrupted
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = RunStore(tmp_path).list_runs()
    assert len(rows) == 3 and all(x["status"] == "finished" for x in rows)
    # the interrupted runs were taken up again once (resumed), the others ran once
    assert all(x["attempts"] == (2 if x["run_id"] in interrupted else 1) for x in rows)
