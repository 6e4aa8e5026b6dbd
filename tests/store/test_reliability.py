"""Fault tests of the run store: damaged databases, recovery from the run folders, concurrent runs,
prefix lookup, atomic writes. docs/RELIABILITY.md counts them."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import phenomlab
from phenomlab.cli import app
from phenomlab.errors import AmbiguousId, PhenomlabError, StoreDamaged, StoreError
from phenomlab.phenomena import grokking
from phenomlab.store import files, repair
from phenomlab.store.sqlite import RunStore

runner = CliRunner()
_FIELDS = set(grokking.Config.field_names())
STEPS = "steps" if "steps" in _FIELDS else "max_steps"
TINY = {"p": 11, STEPS: 60, "eval_every": 20, "embed_dim": 8, "width": 16}


def fake_store(root, n=2):
    """A store with ``n`` finished runs (metrics, a figure, a sweep) written through the public API."""
    s = RunStore(root)
    ids = [f"{i:x}" * 16 for i in range(10, 10 + n)]
    for i, rid in enumerate(ids):
        s.start_run(rid, "grokking", {"p": 11 + i}, i, preset="quick")
        s.log_metrics(rid, 0, {"main/test_acc": 0.1 * i, "main/loss": 2.0})
        s.log_metrics(rid, 20, {"main/test_acc": 0.2 + i / 10, "main/loss": float("nan")})
        fig = s.run_dir(rid) / "accuracy.png"
        fig.write_bytes(b"\x89PNG\r\n\x1a\n fake")
        s.add_artifact(rid, "accuracy", fig)
        verdict = {"passed": i % 2 == 0, "summary": "s", "checks": [{"name": "c", "value": float(i)}]}
        s.finish_run(rid, i % 2 == 0, verdict, {"test_acc": 0.5 + i / 10}, 1.0 + i)
    s.add_sweep("s" + "e" * 15, "grokking", {"grid": {"p": ["11", "12"]}}, ids)
    return s, ids


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def overwrite_header(path):
    data = bytearray(path.read_bytes())
    data[:100] = b"\x00garbage" * 12 + b"\x00" * 4
    path.write_bytes(bytes(data))


def zero_bytes(path):
    path.write_bytes(b"")


DAMAGE = {"truncated": truncate, "header overwritten": overwrite_header, "zero bytes": zero_bytes}


def _settle(root):
    # all connections closed: the write-ahead log was folded into store.sqlite, as after a finished command
    wal = root / "store.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["show", "aaaa"],
        ["compare", "aaaa"],
        ["report", "aaaa"],
        ["run", "grokking", "--set", "p=11"],
        ["sweep", "grokking", "--grid", "p=11,13"],
    ],
)
def test_damaged_database_is_one_line_in_every_command(tmp_path, damage, command):
    fake_store(tmp_path)
    _settle(tmp_path)
    DAMAGE[damage](tmp_path / "store.sqlite")
    before = (tmp_path / "store.sqlite").read_bytes()
    args = [*command, "--store", str(tmp_path)]
    if command[0] == "report":
        args += ["--report-dir", str(tmp_path / "report")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.output
    assert "is damaged" in errors[0] and str(tmp_path / "store.sqlite") in r.output.replace("\n", "")
    assert (tmp_path / "store.sqlite").read_bytes() == before  # nothing was written into it


def test_zero_byte_database_is_not_an_empty_store(tmp_path):
    fake_store(tmp_path)
    zero_bytes(tmp_path / "store.sqlite")
    for readonly in (True, False):
        with pytest.raises(StoreDamaged, match="empty"):
            RunStore(tmp_path, readonly=readonly)
    assert (tmp_path / "store.sqlite").stat().st_size == 0


def test_partly_overwritten_database_is_found_by_check(tmp_path):
    s, ids = fake_store(tmp_path, n=40)
    _settle(tmp_path)
    db = tmp_path / "store.sqlite"
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for start in range(page, len(data), 3 * page):  # every third page after the header page
        data[start + 10 : start + page - 10] = os.urandom(page - 20)
    db.write_bytes(bytes(data))
    r = runner.invoke(app, ["store", "check", "--store", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "problem" in r.output and "Traceback" not in r.output
    # reading commands either still work or say so in one line
    for args in (["runs"], ["show", ids[0]], ["compare", ids[0]]):
        r = runner.invoke(app, [*args, "--store", str(tmp_path)])
        assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
        assert r.exit_code in (0, 1, 2)
        if r.exit_code == 2:
            assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1


def test_two_runs_truncated_then_check_then_rebuild(tmp_path):
    """The brief's recovery test: two real tiny runs, a truncated database, check, rebuild."""
    results = [phenomlab.run("grokking", seed=seed, store=tmp_path, **TINY) for seed in (0, 1)]
    store = RunStore(tmp_path, readonly=True)
    before = {r.run_id: store.get(r.run_id) for r in results}
    metrics_before = {r.run_id: store.metrics(r.run_id) for r in results}
    sid = "s" + "f" * 15
    RunStore(tmp_path).add_sweep(sid, "grokking", {"grid": {}}, [r.run_id for r in results])
    _settle(tmp_path)
    truncate(tmp_path / "store.sqlite")

    c = runner.invoke(app, ["store", "check", "--store", str(tmp_path)])
    out = " ".join(c.output.split())  # rich wraps long lines at 80 columns here
    assert c.exit_code == 1 and "damaged" in out and "truncated" in out, c.output
    assert "re-indexes 2 run folder(s)" in out
    r = runner.invoke(app, ["runs", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "is damaged" in r.output

    b = runner.invoke(app, ["store", "rebuild", "--store", str(tmp_path)])
    assert b.exit_code == 0, b.output
    assert "re-indexed 2 run(s)" in b.output
    moved = list(tmp_path.glob("store.sqlite.damaged-*"))
    assert len(moved) == 1 and moved[0].stat().st_size > 0  # the damaged file is kept, not deleted

    assert runner.invoke(app, ["store", "check", "--store", str(tmp_path)]).exit_code == 0
    store = RunStore(tmp_path, readonly=True)
    for res in results:
        row = store.get(res.run_id)
        old = before[res.run_id]
        for key in ("phenomenon", "config", "seed", "status", "passed", "verdict", "result", "preset", "duration"):
            assert row[key] == old[key], key
        assert _same_metrics(store.metrics(res.run_id), metrics_before[res.run_id])
        assert store.artifacts(res.run_id) == {"accuracy": str(tmp_path / "runs" / res.run_id / "accuracy.png")}
        s = runner.invoke(app, ["show", res.run_id, "--store", str(tmp_path)])
        assert s.exit_code == 0, s.output  # a finished run, whatever its verdict
        assert "NOT REPRODUCED" in s.output or "PASSED" in s.output
        assert "main/test_acc" in s.output and "accuracy.png" in s.output
    r = runner.invoke(app, ["runs", "--store", str(tmp_path)])
    assert r.exit_code == 0 and all(res.run_id in r.output for res in results)
    assert set(store.sweep(sid)["run_ids"]) == {res.run_id for res in results}
    # the rebuilt store is a normal store: the same run is read back, not recomputed
    again = phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    assert again.cached and again.verdict.to_dict() == results[0].verdict.to_dict()


def _same_metrics(a, b):
    if a.keys() != b.keys():
        return False
    for k in a:
        (sa, va), (sb, vb) = a[k], b[k]
        if sa != sb or any(not (x == y or (x != x and y != y)) for x, y in zip(va, vb, strict=True)):
            return False
    return True


def test_rebuild_restores_unfinished_and_failed_runs_and_skips_bad_records(tmp_path):
    s, ids = fake_store(tmp_path)
    s.start_run("1" * 16, "grokking", {"p": 13}, 5)
    s.fail_run("1" * 16, "training diverged at step 3")
    s.start_run("2" * 16, "grokking", {"p": 17}, 6)  # killed while running: only its first record
    bad = tmp_path / "runs" / ("3" * 16)
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    (tmp_path / "store.sqlite").unlink()
    rep = repair.rebuild(tmp_path)
    assert rep.moved_to is None and sorted(rep.indexed) == sorted([*ids, "1" * 16, "2" * 16])
    assert len(rep.skipped) == 1 and "3" * 16 in rep.skipped[0]
    s = RunStore(tmp_path)
    assert s.get("1" * 16)["status"] == "failed" and "diverged" in s.get("1" * 16)["error"]
    assert s.get("2" * 16)["status"] == "running" and s.get("2" * 16)["config"] == {"p": 17}
    assert s.metrics(ids[1])["main/test_acc"] == ([0, 20], [0.1, 0.2 + 1 / 10])


def test_rebuild_of_a_healthy_store_keeps_the_old_file(tmp_path):
    fake_store(tmp_path)
    rep = repair.rebuild(tmp_path)
    assert rep.moved_to is not None and ".replaced-" in rep.moved_to.name and rep.moved_to.exists()
    assert len(rep.indexed) == 2


def test_check_finds_unindexed_runs_and_figures_outside_their_folder(tmp_path):
    s, ids = fake_store(tmp_path)
    assert repair.check(tmp_path).ok
    s.add_artifact(ids[0], "secret", "/etc/passwd")
    s.delete(ids[1])
    rep = repair.check(tmp_path)
    assert not rep.ok
    assert any("outside its folder" in p for p in rep.problems)
    assert any(ids[1] in p and "not in the index" in p for p in rep.problems)


def test_stale_running_run_is_noted(tmp_path):
    s = RunStore(tmp_path)
    s.start_run("a" * 16, "grokking", {"p": 11}, 0)
    (s.run_dir("a" * 16) / ".lock").write_text("")
    rep = repair.check(tmp_path)
    assert rep.ok and any("no process holds it" in n for n in rep.notes)


CONCURRENT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    import phenomlab
    r = phenomlab.run("grokking", store=sys.argv[1], **{k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])})
    print("RESULT", r.run_id, r.verdict.passed, r.verdict.to_dict()["checks"][0]["value"], r.cached)
    """
)


def test_three_processes_on_the_same_config_give_one_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-c", CONCURRENT, str(tmp_path), *[f"{k}={v}" for k, v in TINY.items()]]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in "abc"]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, errs) in zip(procs, outs, strict=True):
        assert p.returncode == 0, errs
    results = [next(ln.split()[1:] for ln in out.splitlines() if ln.startswith("RESULT")) for out, _ in outs]
    assert len({tuple(r[:3]) for r in results}) == 1, results  # same run, verdict and measured value
    assert sorted(r[3] for r in results) == ["False", "True", "True"]  # one computed, two read it back
    rows = RunStore(tmp_path).list_runs()
    assert len(rows) == 1 and rows[0]["status"] == "finished" and rows[0]["attempts"] == 1
    assert repair.check(tmp_path).ok


def test_concurrent_store_creation_never_sees_an_empty_database(tmp_path):
    code = "import sys; from phenomlab.store.sqlite import RunStore; RunStore(sys.argv[1]).list_runs()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(6)
    ]
    for p in procs:
        _, errs = p.communicate(timeout=120)
        assert p.returncode == 0, errs
    assert not list(tmp_path.glob(".store.sqlite.*"))  # temporary databases removed


def test_prefix_lookup_escapes_like_wildcards_and_reports_ambiguity(tmp_path):
    s = RunStore(tmp_path)
    for rid in ("a_b1000000000000", "axb2000000000000", "a%c3000000000000"):
        s.start_run(rid, "grokking", {}, 0)
    assert [r["run_id"] for r in s.find("a_")] == ["a_b1000000000000"]
    assert [r["run_id"] for r in s.find("a%")] == ["a%c3000000000000"]
    assert s.find("%") == [] and s.find("_") == []
    with pytest.raises(AmbiguousId, match="a_b1000000000000.*axb2000000000000|axb2000000000000.*a_b1"):
        s.resolve_run("a")
    with pytest.raises(PhenomlabError, match="no run"):
        s.resolve_run("zz")
    assert s.resolve_run("ax")["run_id"] == "axb2000000000000"
    s.add_sweep("s_1", "grokking", {}, [])
    s.add_sweep("sx2", "grokking", {}, [])
    assert s.sweep("s_")["sweep_id"] == "s_1"
    with pytest.raises(AmbiguousId, match="s_1.*sx2"):
        s.sweep("s")
    assert s.sweep("s%") is None


def test_unknown_status_is_refused(tmp_path):
    with pytest.raises(PhenomlabError, match="choose one of running, finished, failed, interrupted"):
        RunStore(tmp_path).list_runs(status="bogus")


def test_readonly_open_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        RunStore(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(StoreError, match="no store.sqlite"):
        RunStore(tmp_path, readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_figures_are_stored_relative_to_the_run_folder(tmp_path):
    s, ids = fake_store(tmp_path / "a")
    os.rename(tmp_path / "a", tmp_path / "b")  # a moved (or copied) store keeps its figures
    moved = RunStore(tmp_path / "b")
    assert moved.artifacts(ids[0]) == {"accuracy": str(tmp_path / "b" / "runs" / ids[0] / "accuracy.png")}
    assert os.path.exists(moved.artifacts(ids[0])["accuracy"])


def test_record_holds_everything_a_rebuild_needs(tmp_path):
    s, ids = fake_store(tmp_path)
    rec = json.loads((tmp_path / "runs" / ids[0] / "run.json").read_text())
    assert rec["status"] == "finished" and rec["verdict"]["passed"] is True and rec["result"] == {"test_acc": 0.5}
    assert rec["metrics"]["main/test_acc"] == [[0, 20], [0.0, 0.2]]
    assert rec["artifacts"] == {"accuracy": "accuracy.png"}
    assert [sw["sweep_id"] for sw in rec["sweeps"]] == ["s" + "e" * 15]


def test_atomic_write_leaves_no_temporary_file_on_a_full_disk(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "run.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match="No space left on device"):
        files.write_atomic(target, "new" * 1000)
    assert target.read_text() == "old"  # the old content is intact
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_ctrl_c_right_after_the_run_is_inserted_leaves_it_interrupted(tmp_path, monkeypatch):
    """A Ctrl-C that lands while start_run writes the run's record (the row already says running) must leave the
    run interrupted, as one during training does; a sweep worker stopped between two trials hit this window."""
    real = RunStore._try_write_record
    calls = []

    def interrupted_once(self, run_id):
        calls.append(run_id)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(self, run_id)

    monkeypatch.setattr(RunStore, "_try_write_record", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    (row,) = RunStore(tmp_path).list_runs()
    assert row["status"] == "interrupted"
    monkeypatch.setattr(RunStore, "_try_write_record", real)
    again = phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    assert not again.cached and RunStore(tmp_path).get(again.run_id)["status"] == "finished"


def test_rebuild_restores_runs_whose_record_is_missing_or_unreadable_from_the_old_index(tmp_path):
    s, ids = fake_store(tmp_path, n=3)
    before = {rid: s.metrics(rid) for rid in ids}
    (tmp_path / "runs" / ids[0] / "run.json").write_text('{"run_id": "trunc')  # cut short
    (tmp_path / "runs" / ids[1] / "run.json").unlink()
    rep = repair.check(tmp_path)
    assert not rep.ok
    assert any("unreadable run.json" in p and ids[0] in p for p in rep.problems)
    assert any("no run.json" in p and ids[1] in p for p in rep.problems)
    rebuilt = repair.rebuild(tmp_path)
    assert rebuilt.indexed == [ids[2]] and sorted(rebuilt.restored) == sorted(ids[:2]) and not rebuilt.skipped
    s = RunStore(tmp_path)
    for rid in ids:
        assert s.get(rid)["status"] == "finished"
        assert _same_metrics(s.metrics(rid), before[rid])
    assert all(json.loads((tmp_path / "runs" / rid / "run.json").read_text())["run_id"] == rid for rid in ids)
    assert repair.check(tmp_path).ok


def test_a_lost_index_is_not_silently_replaced_by_an_empty_one(tmp_path):
    fake_store(tmp_path)
    (tmp_path / "store.sqlite").unlink()
    with pytest.raises(StoreError, match="store rebuild"):
        RunStore(tmp_path)
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    res = runner.invoke(app, ["run", "grokking", "--store", str(tmp_path), *sets])
    assert res.exit_code == 2 and "store rebuild" in res.output
    assert not (tmp_path / "store.sqlite").exists()


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError, SystemExit])
def test_a_failed_forced_rerun_puts_the_finished_run_back(tmp_path, monkeypatch, error):
    first = phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    s = RunStore(tmp_path)
    row, metrics, figures = s.get(first.run_id), s.metrics(first.run_id), s.artifacts(first.run_id)
    record = (tmp_path / "runs" / first.run_id / "run.json").read_text()

    def broken(cfg, ctx):
        ctx.store.log_metrics(ctx.run_id, 0, {"main/test_acc": -1.0})  # half a new run, to be discarded
        raise error("stopped")

    monkeypatch.setattr(grokking, "run", broken)
    with pytest.raises(error):
        phenomlab.run("grokking", seed=0, store=tmp_path, force=True, **TINY)
    after = s.get(first.run_id)
    assert after["status"] == "finished" and after["verdict"] == row["verdict"] and after["result"] == row["result"]
    assert s.metrics(first.run_id) == metrics and s.artifacts(first.run_id) == figures
    assert all(os.path.exists(p) for p in figures.values())
    assert json.loads((tmp_path / "runs" / first.run_id / "run.json").read_text()) == json.loads(record)
    assert not (tmp_path / "runs" / first.run_id / ".previous").exists()
    monkeypatch.undo()
    again = phenomlab.run("grokking", seed=0, store=tmp_path, force=True, **TINY)
    assert not again.cached and again.verdict.to_dict() == first.verdict.to_dict()
    assert not (tmp_path / "runs" / first.run_id / ".previous").exists()


def test_system_exit_inside_a_run_leaves_it_interrupted(tmp_path, monkeypatch):
    # rich turns a closed stdout (`phenomlab run ... | head -1`) into SystemExit inside the progress bar
    def closed_pipe(cfg, ctx):
        raise SystemExit(1)

    monkeypatch.setattr(grokking, "run", closed_pipe)
    with pytest.raises(SystemExit):
        phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    (row,) = RunStore(tmp_path).list_runs()
    assert row["status"] == "interrupted" and "SystemExit" in row["error"]


def _as_other_user(args):
    """``phenomlab ARGS`` as a user who cannot write the store: nobody (via setpriv) when the tests run as root."""
    cmd = [sys.executable, "-c", "from phenomlab.cli import main; main()", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv cannot drop its write access")
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if subprocess.run([*drop, sys.executable, "-c", "import phenomlab"], capture_output=True).returncode != 0:
            pytest.skip("user nobody cannot run this environment's python (its folder is private)")
        cmd = [*drop, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def test_a_store_in_a_folder_the_reader_cannot_write_can_be_read():
    base = Path(tempfile.mkdtemp(prefix="phenomlab-ro-"))  # pytest's tmp_path is not traversable by nobody
    try:
        base.chmod(0o755)
        root = base / "store"
        fake_store(root)
        for p in [root, *root.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        res = _as_other_user(["runs", "--store", str(root), "--format", "json"])
        assert res.returncode == 0, res.stderr
        assert {r["run_id"] for r in json.loads(res.stdout)} == {"a" * 16, "b" * 16}
        res = _as_other_user(["store", "check", "--store", str(root)])
        assert res.returncode == 0 and "database ok" in res.stdout, res.stdout + res.stderr
    finally:
        for p in [base, *base.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(base)


def test_a_resumed_run_counts_the_time_of_its_earlier_attempts(tmp_path, monkeypatch):
    import time

    def slow_then_interrupted(cfg, ctx):
        time.sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(grokking, "run", slow_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    s = RunStore(tmp_path)
    (row,) = s.list_runs()
    assert row["status"] == "interrupted" and row["duration"] >= 0.3
    s.fail_run(row["run_id"], "interrupted by the user", status="interrupted", duration=1000.0)  # a long attempt
    monkeypatch.undo()
    done = phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    assert done.duration >= 1000.0 and s.get(done.run_id)["duration"] == done.duration
