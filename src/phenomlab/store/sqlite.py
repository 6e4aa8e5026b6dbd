"""The run store: one SQLite file (WAL mode) with runs, metrics and artifacts, plus a folder per run.

Crash safety: every write is one transaction; WAL lets readers and several writer processes share
the file (writers wait on a busy timeout instead of failing). Metrics are keyed by
(run, name, step), so re-logging a step after a resume replaces rather than duplicates.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .ids import canonical_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    phenomenon  TEXT NOT NULL,
    preset      TEXT,
    seed        INTEGER NOT NULL,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL,
    passed      INTEGER,
    verdict     TEXT,
    result      TEXT,
    error       TEXT,
    device      TEXT,
    versions    TEXT,
    sweep_id    TEXT,
    created     REAL NOT NULL,
    started     REAL,
    finished    REAL,
    duration    REAL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id  TEXT NOT NULL,
    name    TEXT NOT NULL,
    step    INTEGER NOT NULL,
    value   REAL,
    PRIMARY KEY (run_id, name, step)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id  TEXT NOT NULL,
    name    TEXT NOT NULL,
    path    TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id    TEXT PRIMARY KEY,
    phenomenon  TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_runs (
    sweep_id TEXT NOT NULL,
    run_id   TEXT NOT NULL,
    PRIMARY KEY (sweep_id, run_id)
);
CREATE INDEX IF NOT EXISTS runs_by_phenomenon ON runs (phenomenon, created);
"""

STATUSES = ("running", "finished", "failed", "interrupted")


def default_root() -> Path:
    """``$PHENOMLAB_HOME`` if set, else ``./phenomlab-runs``."""
    return Path(os.environ.get("PHENOMLAB_HOME", "phenomlab-runs"))


class RunStore:
    """SQLite index + metrics under ``root/store.sqlite``; per-run files under ``root/runs/<run_id>/``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "runs").mkdir(exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"output directory {self.root} is not writable: {exc.strerror or exc}") from None
        self.path = self.root / "store.sqlite"
        with self._connect() as con:
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=60000")
        con.row_factory = sqlite3.Row
        return con

    @contextmanager
    def transaction(self) -> Any:
        con = self._connect()
        try:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def run_dir(self, run_id: str) -> Path:
        d = self.root / "runs" / run_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ---- runs -------------------------------------------------------------------------------
    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's row with JSON columns decoded, or None."""
        con = self._connect()
        try:
            row = con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        finally:
            con.close()
        return _decode(row) if row else None

    def find(self, prefix: str) -> list[dict[str, Any]]:
        """Runs whose id starts with ``prefix`` (so users can type a short id)."""
        con = self._connect()
        try:
            rows = con.execute("SELECT * FROM runs WHERE run_id LIKE ? ORDER BY created", (prefix + "%",)).fetchall()
        finally:
            con.close()
        return [_decode(r) for r in rows]

    def list_runs(self, phenomenon: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM runs", []
        conds = []
        if phenomenon:
            conds.append("phenomenon = ?")
            args.append(phenomenon)
        if status:
            conds.append("status = ?")
            args.append(status)
        if conds:
            q += " WHERE " + " AND ".join(conds)
        con = self._connect()
        try:
            rows = con.execute(q + " ORDER BY created", args).fetchall()
        finally:
            con.close()
        return [_decode(r) for r in rows]

    def start_run(
        self,
        run_id: str,
        phenomenon: str,
        config: Mapping[str, Any],
        seed: int,
        preset: str | None = None,
        device: str | None = None,
        versions: Mapping[str, str] | None = None,
        sweep_id: str | None = None,
    ) -> dict[str, Any]:
        """Insert the run or mark an existing unfinished one as running again (a resume)."""
        now = time.time()
        with self.transaction() as con:
            con.execute(
                "INSERT INTO runs (run_id, phenomenon, preset, seed, config, status, device, versions, sweep_id,"
                " created, started, attempts) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, 1)"
                " ON CONFLICT(run_id) DO UPDATE SET status='running', started=excluded.started, error=NULL,"
                " device=excluded.device, versions=excluded.versions, attempts=attempts+1",
                (
                    run_id,
                    phenomenon,
                    preset,
                    int(seed),
                    canonical_json(dict(config)),
                    device,
                    json.dumps(dict(versions or {})),
                    sweep_id,
                    now,
                    now,
                ),
            )
        return self.get(run_id)  # type: ignore[return-value]

    def finish_run(
        self,
        run_id: str,
        passed: bool | None,
        verdict: Mapping[str, Any] | None,
        result: Mapping[str, Any] | None,
        duration: float,
    ) -> None:
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status='finished', passed=?, verdict=?, result=?, finished=?, duration=?,"
                " error=NULL WHERE run_id=?",
                (
                    None if passed is None else int(bool(passed)),
                    canonical_json(verdict) if verdict else None,
                    canonical_json(result) if result is not None else None,
                    time.time(),
                    duration,
                    run_id,
                ),
            )

    def fail_run(self, run_id: str, error: str, status: str = "failed") -> None:
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}")
        # a finished run is never downgraded (e.g. by a second process that crashed on the same config)
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status=?, error=?, finished=? WHERE run_id=? AND status != 'finished'",
                (status, error, time.time(), run_id),
            )

    def save_result(self, run_id: str, result: Mapping[str, Any]) -> None:
        """Store a run's measured data before it is judged and plotted (a plotting bug loses nothing)."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET result=? WHERE run_id=?", (canonical_json(dict(result)), run_id))

    def reset_run(self, run_id: str) -> None:
        """Forget a run's measurements, verdict and figures (for a forced re-run); its sweeps keep it."""
        with self.transaction() as con:
            con.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            con.execute("DELETE FROM artifacts WHERE run_id=?", (run_id,))
            con.execute(
                "UPDATE runs SET status='running', passed=NULL, verdict=NULL, result=NULL, error=NULL, finished=NULL,"
                " duration=NULL WHERE run_id=?",
                (run_id,),
            )

    def write_record(self, run_id: str) -> Path:
        """Write the run's row and metrics to ``runs/<id>/run.json`` (atomically): the folder alone can
        rebuild the run's index entry if the database is lost."""
        row = self.get(run_id)
        if row is None:
            raise StoreError(f"no run {run_id!r} in {self.root}")
        row["metrics"] = {k: [s, v] for k, (s, v) in self.metrics(run_id).items()}
        row["artifacts"] = self.artifacts(run_id)
        path = self.run_dir(run_id) / "run.json"
        tmp = path.with_name(f"run.json.{os.getpid()}.tmp")
        tmp.write_text(canonical_json(row))
        os.replace(tmp, path)
        return path

    def record_failed(
        self,
        run_id: str,
        phenomenon: str,
        config: Mapping[str, Any],
        seed: int,
        error: str,
        preset: str | None = None,
        sweep_id: str | None = None,
    ) -> None:
        """Store a trial that failed before or outside a local run (e.g. on a remote worker)."""
        self.start_run(run_id, phenomenon, config, seed, preset=preset, sweep_id=sweep_id)
        self.fail_run(run_id, error)

    def delete(self, run_id: str) -> None:
        with self.transaction() as con:
            for table in ("runs", "metrics", "artifacts", "sweep_runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))

    # ---- metrics ----------------------------------------------------------------------------
    def log_metrics(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        rows = [(run_id, name, int(step), _finite_or_none(v)) for name, v in metrics.items()]
        self.log_many(rows)

    def log_many(self, rows: Iterable[tuple[str, str, int, float | None]]) -> None:
        rows = list(rows)
        if not rows:
            return
        with self.transaction() as con:
            con.executemany("INSERT OR REPLACE INTO metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)", rows)

    def metrics(self, run_id: str, name: str | None = None) -> dict[str, tuple[list[int], list[float]]]:
        """``{name: (steps, values)}`` for the run, ordered by step."""
        con = self._connect()
        try:
            q = "SELECT name, step, value FROM metrics WHERE run_id=?"
            args: list[Any] = [run_id]
            if name:
                q += " AND name=?"
                args.append(name)
            rows = con.execute(q + " ORDER BY name, step", args).fetchall()
        finally:
            con.close()
        out: dict[str, tuple[list[int], list[float]]] = {}
        for r in rows:
            s, v = out.setdefault(r["name"], ([], []))
            s.append(r["step"])
            v.append(float("nan") if r["value"] is None else r["value"])
        return out

    # ---- artifacts --------------------------------------------------------------------------
    def add_artifact(self, run_id: str, name: str, path: str | Path) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, name, path) VALUES (?, ?, ?)", (run_id, name, str(path))
            )

    def artifacts(self, run_id: str) -> dict[str, str]:
        con = self._connect()
        try:
            rows = con.execute("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY name", (run_id,)).fetchall()
        finally:
            con.close()
        return {r["name"]: r["path"] for r in rows}

    # ---- sweeps -----------------------------------------------------------------------------
    def add_sweep(self, sweep_id: str, phenomenon: str, spec: Mapping[str, Any], run_ids: Iterable[str]) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT OR IGNORE INTO sweeps (sweep_id, phenomenon, spec, created) VALUES (?, ?, ?, ?)",
                (sweep_id, phenomenon, canonical_json(dict(spec)), time.time()),
            )
            con.executemany(
                "INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id) VALUES (?, ?)", [(sweep_id, r) for r in run_ids]
            )

    def sweep(self, sweep_id: str) -> dict[str, Any] | None:
        con = self._connect()
        try:
            row = con.execute("SELECT * FROM sweeps WHERE sweep_id LIKE ?", (sweep_id + "%",)).fetchone()
            if row is None:
                return None
            runs = [
                r["run_id"]
                for r in con.execute("SELECT run_id FROM sweep_runs WHERE sweep_id=?", (row["sweep_id"],)).fetchall()
            ]
        finally:
            con.close()
        return {
            "sweep_id": row["sweep_id"],
            "phenomenon": row["phenomenon"],
            "spec": json.loads(row["spec"]),
            "created": row["created"],
            "run_ids": runs,
        }

    def list_sweeps(self) -> list[dict[str, Any]]:
        con = self._connect()
        try:
            rows = con.execute("SELECT sweep_id FROM sweeps ORDER BY created").fetchall()
        finally:
            con.close()
        return [s for r in rows if (s := self.sweep(r["sweep_id"])) is not None]


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for key in ("config", "verdict", "result", "versions"):
        if d.get(key):
            d[key] = json.loads(d[key])
    if d.get("passed") is not None:
        d["passed"] = bool(d["passed"])
    return d
