"""The run store: one SQLite file (WAL mode) with runs, metrics and artifacts, plus a folder per run.

Crash safety: every write is one transaction; WAL lets readers and several writer processes share
the file (writers wait on a busy timeout instead of failing). Metrics are keyed by
(run, name, step), so re-logging a step after a resume replaces rather than duplicates.

Recovery: each run's folder holds ``run.json``, a copy of its row, metrics, figures and sweeps written
atomically at every change of state, so ``phenomlab store rebuild`` can rebuild the index from the folders
when the database is lost. A damaged database is reported as :class:`~phenomlab.errors.StoreDamaged` (one
line naming the file), never read as if it were empty. Read-only users (``RunStore(root, readonly=True)``)
open the database read-only and never create a store. docs/RELIABILITY.md states what is promised.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import AmbiguousId, PhenomlabError, StoreDamaged, StoreError
from .files import check_sqlite_file, damaged_message, inside, write_atomic
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

TABLES = ("runs", "metrics", "artifacts", "sweeps", "sweep_runs")
STATUSES = ("running", "finished", "failed", "interrupted")
DB_NAME = "store.sqlite"
RECORD_NAME = "run.json"
RECORD_VERSION = 1
LOCK_NAME = ".lock"


def default_root() -> Path:
    """``$PHENOMLAB_HOME`` if set (and not empty: that would be the working directory), else ``./phenomlab-runs``."""
    return Path(os.environ.get("PHENOMLAB_HOME") or "phenomlab-runs")


def store_argument(
    store: str | os.PathLike[str] | None, out: str | os.PathLike[str] | None
) -> str | os.PathLike[str] | None:
    """The run store a Python call names as ``store=`` or by its deprecated old name ``out=`` (one FutureWarning;
    both at once is an error), as the CLI's ``--store`` / hidden ``--out``."""
    if out is None:
        return store
    if store is not None:
        raise PhenomlabError("give the run store as store= only (out= is its deprecated old name)")
    warnings.warn("out= is deprecated; use store=", FutureWarning, stacklevel=3)
    return out


def has_run_records(root: Path) -> bool:
    """Whether any run folder under ``root`` holds a ``run.json`` (a store's content, with or without its index)."""
    return next((root / "runs").glob(f"*/{RECORD_NAME}"), None) is not None


class RunStore:
    """SQLite index + metrics under ``root/store.sqlite``; per-run files under ``root/runs/<run_id>/``.

    ``readonly=True`` (the read commands: show, runs, compare, report) requires an existing store, creates
    nothing and opens the database read-only. A writable store refuses to create a new, empty index next to
    run folders that hold records (the index was lost: every run would be recomputed); ``new_index=True`` is
    :func:`~phenomlab.store.repair.rebuild`'s way past that check.
    """

    def __init__(self, root: str | Path | None = None, *, readonly: bool = False, new_index: bool = False) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.path = self.root / DB_NAME
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                where = "no such directory" if not self.root.is_dir() else f"no {DB_NAME} in it"
                raise StoreError(
                    f"no run store at {self.root} ({where}); give the store with --store or $PHENOMLAB_HOME"
                )
            check_sqlite_file(self.path)
            self._ro_flags = "mode=ro"
            try:
                self._check_tables(create=False)
            except StoreError as exc:
                if not any(m in str(exc) for m in ("unable to open", "readonly database")) or os.access(
                    self.root, os.W_OK
                ):
                    raise
                # a WAL database in a folder this user cannot write (read-only media, a chmod 555 folder, another
                # user's store) without its -shm file opens only as immutable; safe while no write is pending in
                # the -wal file, else the owner is writing and an immutable read could see a torn state
                wal = self.path.with_name(DB_NAME + "-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise StoreError(
                        f"{self.root} is read-only to you and another process is writing it ({wal.name} is not "
                        "empty): read it when that finishes, or read a copy"
                    ) from None
                self._ro_flags = "mode=ro&immutable=1"
                self._check_tables(create=False)
            return
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the run store {self.root} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "runs").mkdir(exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"output directory {self.root} is not writable: {exc.strerror or exc}") from None
        if not self.path.exists():
            if not new_index and has_run_records(self.root):
                raise StoreError(
                    f"{self.root} has run folders but no {DB_NAME} (deleted?): `phenomlab store rebuild --store "
                    f"{self.root}` re-indexes them; a new empty index would recompute every run"
                )
            self._create()
        check_sqlite_file(self.path)
        self._check_tables(create=True)

    # ---- opening ------------------------------------------------------------------------------
    def _create(self) -> None:
        """Create the database under a temporary name and link it into place, so no process ever sees a
        half-made (e.g. zero-byte) store.sqlite, and two processes creating a store at once both succeed."""
        tmp = self.root / f".{DB_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            con = sqlite3.connect(tmp, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=WAL")  # stored in the file: every later connection uses WAL
                con.executescript(SCHEMA)
            finally:
                con.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:  # another process made it first: use theirs
                pass
            except OSError:  # a file system without hard links: a rename, which a racing creator may replace
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot create the run store {self.path}: {exc}") from None
        finally:
            for p in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                p.unlink(missing_ok=True)

    def _check_tables(self, create: bool) -> None:
        with self._db() as con:
            have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if set(TABLES) <= have:
            return
        if not create:
            raise StoreError(f"{self.path} is not a phenomlab run store (tables {sorted(set(TABLES) - have)} missing)")
        with self._db() as con:
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            con = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?{self._ro_flags}", uri=True, timeout=60.0, isolation_level=None
            )
        else:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=60000")
        con.row_factory = sqlite3.Row
        return con

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection, closed afterwards; SQLite errors become one-line :class:`StoreError`s."""
        try:
            con = self._connect()
            try:
                yield con
            finally:
                con.close()
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
                raise  # IntegrityError, ProgrammingError, ...: a bug, not the state of the file
            raise self._translate(exc) from None

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        msg = str(exc)
        low = msg.lower()
        if "malformed" in low or "not a database" in low:
            return StoreDamaged(damaged_message(self.path, msg))
        if "readonly" in low or "read-only" in low:
            return StoreError(f"the run store {self.root} is read-only ({msg}); give a writable one with --store")
        if "full" in low:
            return StoreError(f"no space left for the run store {self.path} ({msg})")
        if "locked" in low or "busy" in low:
            return StoreError(f"the run store {self.path} stayed locked by another process for 60 s ({msg})")
        return StoreError(f"cannot use the run store {self.path}: {msg}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db() as con:
            # IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._db() as con:
            return con.execute(sql, tuple(args)).fetchall()

    def integrity_check(self, max_errors: int = 20) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: ``["ok"]`` or up to ``max_errors`` descriptions of damage."""
        return [r[0] for r in self._query(f"PRAGMA integrity_check({int(max_errors)})")]

    def run_dir(self, run_id: str) -> Path:
        d = self.root / "runs" / run_id
        if not self.readonly:
            d.mkdir(parents=True, exist_ok=True)
        return d

    # ---- runs -------------------------------------------------------------------------------
    def get(self, run_id: str) -> dict[str, Any] | None:
        """The run's row with JSON columns decoded, or None."""
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return self._decode(rows[0]) if rows else None

    def find(self, prefix: str) -> list[dict[str, Any]]:
        """Runs whose id starts with ``prefix`` (so users can type a short id); ``%`` and ``_`` match themselves."""
        rows = self._query(
            "SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY created", (_like_prefix(prefix),)
        )
        return [self._decode(r) for r in rows]

    def resolve_run(self, ref: str) -> dict[str, Any]:
        """The one run whose id is ``ref`` or starts with it; :class:`PhenomlabError` for none,
        :class:`AmbiguousId` listing the candidates for several."""
        if not ref.strip():
            raise PhenomlabError("the run id is empty (see `phenomlab runs`)")
        exact = self.get(ref)
        if exact is not None:
            return exact
        matches = self.find(ref)
        if not matches:
            raise PhenomlabError(f"no run {ref!r} in {self.root} (see `phenomlab runs`)")
        if len(matches) > 1:
            raise AmbiguousId(_ambiguous("run", ref, [m["run_id"] for m in matches]))
        return matches[0]

    def list_runs(self, phenomenon: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        if status is not None and status not in STATUSES:
            raise PhenomlabError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
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
        return [self._decode(r) for r in self._query(q + " ORDER BY created", args)]

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
        # the record lets `store rebuild` restore the run with its config even if it never finishes;
        # it is rewritten with the measurements later, so a failure to write it here is not fatal
        self._try_write_record(run_id)
        return self.get(run_id)  # type: ignore[return-value]

    def finish_run(
        self,
        run_id: str,
        passed: bool | None,
        verdict: Mapping[str, Any] | None,
        result: Mapping[str, Any] | None,
        duration: float,
    ) -> None:
        """Mark the run finished with its verdict and data; its record is rewritten (a full disk raises)."""
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
        self.write_record(run_id)

    def fail_run(self, run_id: str, error: str, status: str = "failed", duration: float | None = None) -> None:
        """Mark the run failed or interrupted with its error; ``duration``: seconds spent on it so far (all
        attempts), which a resume adds to."""
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}")
        # a finished run is never downgraded (e.g. by a second process that crashed on the same config)
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status=?, error=?, finished=?, duration=COALESCE(?, duration)"
                " WHERE run_id=? AND status != 'finished'",
                (status, error, time.time(), duration, run_id),
            )
        self._try_write_record(run_id)

    def save_result(self, run_id: str, result: Mapping[str, Any]) -> None:
        """Store a run's measured data before it is judged and plotted (a plotting bug loses nothing).

        The record in the run folder is rewritten too: when it cannot be (a full disk), :class:`StoreError`
        is raised so the run stops here instead of failing later with less said."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET result=? WHERE run_id=?", (canonical_json(dict(result)), run_id))
        self.write_record(run_id)

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

    def record(self, run_id: str) -> dict[str, Any]:
        """What ``run.json`` holds: the run's row, metrics ``{name: [steps, values]}``, artifacts (paths
        relative to the run folder) and the sweeps it belongs to."""
        row = self.get(run_id)
        if row is None:
            raise StoreError(f"no run {run_id!r} in {self.root}")
        row["record_version"] = RECORD_VERSION
        row["metrics"] = {k: [s, v] for k, (s, v) in self.metrics(run_id).items()}
        row["artifacts"] = {
            r["name"]: r["path"]
            for r in self._query("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY name", (run_id,))
        }
        row["sweeps"] = [
            {
                "sweep_id": s["sweep_id"],
                "phenomenon": s["phenomenon"],
                "spec": json.loads(s["spec"]),
                "created": s["created"],
            }
            for s in self._query(
                "SELECT s.* FROM sweeps s JOIN sweep_runs r ON r.sweep_id = s.sweep_id WHERE r.run_id=?"
                " ORDER BY s.created",
                (run_id,),
            )
        ]
        return row

    def write_record(self, run_id: str) -> Path:
        """Write the run's record to ``runs/<id>/run.json`` (atomically): the folder alone can
        rebuild the run's index entry if the database is lost. :class:`StoreError` if it cannot be written."""
        text = canonical_json(self.record(run_id))
        path = self.run_dir(run_id) / RECORD_NAME
        write_atomic(path, text)
        return path

    def _try_write_record(self, run_id: str) -> None:
        with contextlib.suppress(StoreError, OSError):
            self.write_record(run_id)

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
        q = "SELECT name, step, value FROM metrics WHERE run_id=?"
        args: list[Any] = [run_id]
        if name:
            q += " AND name=?"
            args.append(name)
        out: dict[str, tuple[list[int], list[float]]] = {}
        for r in self._query(q + " ORDER BY name, step", args):
            s, v = out.setdefault(r["name"], ([], []))
            s.append(r["step"])
            v.append(float("nan") if r["value"] is None else r["value"])
        return out

    # ---- artifacts --------------------------------------------------------------------------
    def add_artifact(self, run_id: str, name: str, path: str | Path) -> None:
        """Register a file of the run; a file inside the run folder is stored relative to it, so a store
        keeps its figures when it is moved or read from another working directory."""
        p = Path(path)
        folder = self.root / "runs" / run_id
        stored = os.path.relpath(p.resolve(), folder.resolve()) if inside(p, folder) else str(p)
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO artifacts (run_id, name, path) VALUES (?, ?, ?)", (run_id, name, stored)
            )

    def artifacts(self, run_id: str) -> dict[str, str]:
        """``{name: path}``; relative stored paths are resolved against the run folder."""
        folder = self.root / "runs" / run_id
        out = {}
        for r in self._query("SELECT name, path FROM artifacts WHERE run_id=? ORDER BY name", (run_id,)):
            p = Path(r["path"])
            if not p.is_absolute():
                # stores written before paths were kept relative to the run folder hold cwd-relative ones
                p = folder / p if (folder / p).exists() or not p.exists() else p
            out[r["name"]] = str(p)
        return out

    # ---- sweeps -----------------------------------------------------------------------------
    def add_sweep(self, sweep_id: str, phenomenon: str, spec: Mapping[str, Any], run_ids: Iterable[str]) -> None:
        run_ids = list(run_ids)
        with self.transaction() as con:
            con.execute(
                "INSERT OR IGNORE INTO sweeps (sweep_id, phenomenon, spec, created) VALUES (?, ?, ?, ?)",
                (sweep_id, phenomenon, canonical_json(dict(spec)), time.time()),
            )
            con.executemany(
                "INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id) VALUES (?, ?)", [(sweep_id, r) for r in run_ids]
            )
        # runs that already have a record get their new sweep in it (so `store rebuild` restores sweeps)
        for rid in run_ids:
            if (self.root / "runs" / rid / RECORD_NAME).exists():
                self._try_write_record(rid)

    def sweep(self, ref: str) -> dict[str, Any] | None:
        """The sweep whose id is ``ref`` or uniquely starts with it (None if none; :class:`AmbiguousId`
        listing the candidates if several)."""
        if not ref.strip():
            raise PhenomlabError("the sweep id is empty")
        rows = self._query("SELECT * FROM sweeps WHERE sweep_id = ?", (ref,))
        if not rows:
            rows = self._query(
                "SELECT * FROM sweeps WHERE sweep_id LIKE ? ESCAPE '\\' ORDER BY created", (_like_prefix(ref),)
            )
        if not rows:
            return None
        if len(rows) > 1:
            raise AmbiguousId(_ambiguous("sweep", ref, [r["sweep_id"] for r in rows]))
        row = rows[0]
        runs = [r["run_id"] for r in self._query("SELECT run_id FROM sweep_runs WHERE sweep_id=?", (row["sweep_id"],))]
        return {
            "sweep_id": row["sweep_id"],
            "phenomenon": row["phenomenon"],
            "spec": json.loads(row["spec"]),
            "created": row["created"],
            "run_ids": runs,
        }

    def list_sweeps(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT sweep_id FROM sweeps ORDER BY created")
        return [s for r in rows if (s := self.sweep(r["sweep_id"])) is not None]

    def _decode(self, row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for key in ("config", "verdict", "result", "versions"):
            if d.get(key):
                try:
                    d[key] = json.loads(d[key])
                except ValueError:
                    raise StoreDamaged(
                        damaged_message(self.path, f"the {key} of run {d.get('run_id')} is not valid JSON")
                    ) from None
        if d.get("passed") is not None:
            d["passed"] = bool(d["passed"])
        return d


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching ``prefix`` literally (its ``%``, ``_`` and ``\\`` are escaped) then anything."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _ambiguous(kind: str, ref: str, ids: list[str]) -> str:
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    return f"{kind} id prefix {ref!r} is ambiguous: it matches {len(ids)} {kind}s ({shown}); type more of the id"


def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if v == v and v not in (float("inf"), float("-inf")) else None
