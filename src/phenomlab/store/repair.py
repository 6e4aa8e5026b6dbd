"""Checking a run store and rebuilding its index from the run folders (``phenomlab store check|rebuild``).

The database is an index: every run folder holds ``run.json`` (its row, metrics, figures and sweeps,
written atomically at each change of state, see :meth:`RunStore.write_record`). :func:`rebuild` moves a
damaged ``store.sqlite`` aside and re-indexes every run from those records; :func:`check` lists what is
wrong without changing anything.
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .files import inside
from .ids import canonical_json
from .sqlite import DB_NAME, LOCK_NAME, RECORD_NAME, STATUSES, RunStore, default_root


@dataclass
class CheckReport:
    """``problems`` need a user action (``ok`` is False when there are any); ``notes`` are informational."""

    root: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: int = 0
    database_ok: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RebuildReport:
    root: Path
    moved_to: Path | None
    indexed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def check(root: str | Path | None = None) -> CheckReport:
    """Integrity of the database (SQLite ``integrity_check``) and its agreement with the run folders."""
    root = Path(root) if root is not None else default_root()
    rep = CheckReport(root)
    db = root / DB_NAME
    if not root.is_dir():
        rep.problems.append(f"no run store at {root} (no such directory)")
        return rep
    records = _record_paths(root)
    if not db.exists():
        rep.problems.append(f"{db} is missing" + (f"; {len(records)} run folders can be re-indexed" if records else ""))
        return rep
    store = None
    try:
        store = RunStore(root, readonly=True)  # header, size and tables
        result = store.integrity_check()
    except StoreError as exc:
        rep.problems.append(str(exc))
    else:
        if result != ["ok"]:
            rep.problems += [f"database damaged: {line}" for line in result]
        else:
            rep.database_ok = True
    if store is None or not rep.database_ok:
        rep.notes.append(f"`phenomlab store rebuild --store {root}` re-indexes {len(records)} run folder(s)")
        return rep

    try:
        rows = {r["run_id"]: r for r in store.list_runs()}
    except StoreError as exc:
        rep.problems.append(str(exc))
        rep.database_ok = False
        return rep
    rep.runs = len(rows)
    no_record, bad_record = [], []
    for rid, row in rows.items():
        folder = root / "runs" / rid
        if not (folder / RECORD_NAME).exists():
            no_record.append(rid)
        elif (err := _load_record(folder / RECORD_NAME, rid)[1]) is not None:
            bad_record.append(f"{rid} ({err})")
        for name, path in store.artifacts(rid).items():
            if not inside(path, folder):
                rep.problems.append(f"run {rid}: figure {name!r} points outside its folder ({path})")
            elif not Path(path).exists():
                rep.problems.append(f"run {rid}: figure {name!r} is missing ({path})")
        if row["status"] == "running" and not _lock_held(folder):
            rep.notes.append(
                f"run {rid} is marked running but no process holds it (killed?); running it again resumes it"
            )
    # the index is then such a run's only copy: a problem, which the rebuild mends from the index
    for kind, ids in ((f"no {RECORD_NAME}", no_record), (f"an unreadable {RECORD_NAME}", bad_record)):
        if ids:
            rep.problems.append(
                f"{len(ids)} indexed run(s) have {kind}, so the index is their only copy: {', '.join(ids[:5])}"
                f"{' ...' if len(ids) > 5 else ''} (`phenomlab store rebuild` rewrites it from the index)"
            )
    for rid in sorted(set(records) - set(rows)):
        err = _load_record(records[rid], rid)[1]
        rep.problems.append(
            f"run {rid} has a folder with {RECORD_NAME} but is not in the index "
            + ("(rebuild restores it)" if err is None else f"and its record cannot be read ({err}): it is lost")
        )
    tmps = sorted(p for p in (root / "runs").glob("*/*.tmp"))
    if tmps:
        rep.notes.append(f"{len(tmps)} leftover temporary file(s), e.g. {tmps[0]} (from a killed process; harmless)")
    return rep


def rebuild(root: str | Path | None = None) -> RebuildReport:
    """Move ``store.sqlite`` aside (``store.sqlite.damaged-<time>``, or ``.replaced-<time>`` when it was
    healthy) and index every run folder's ``run.json`` into a new database: config, seed, status, verdict,
    result data, metrics, figures and sweeps. Records that cannot be read are listed in ``skipped``.

    Stop runs writing to the store first: a run that writes to the old database while it is moved aside
    loses that write from the index (its folder keeps it, and a second rebuild picks it up).
    """
    root = Path(root) if root is not None else default_root()
    if not (root / "runs").is_dir():
        raise StoreError(f"no run store at {root} (no runs/ folder to rebuild from)")
    db = root / DB_NAME
    records: dict[str, Any] = {}
    unreadable: dict[str, str] = {}
    for rid, path in sorted(_record_paths(root).items()):
        rec, err = _load_record(path, rid)
        if err is None:
            records[rid] = rec
        else:
            unreadable[rid] = f"{path}: {err}"
    # runs the old index holds but no readable record does: copied from the old index, not dropped
    rescued = _rescue(root, set(records)) if db.exists() else {}
    moved = None
    if db.exists():
        healthy = check(root).database_ok
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = db.with_name(f"{DB_NAME}.{'replaced' if healthy else 'damaged'}-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                p = db.with_name(DB_NAME + suffix)
                if p.exists():
                    p.rename(moved.with_name(moved.name + suffix))
        except OSError as exc:
            raise StoreError(f"cannot move {db} aside: {exc.strerror or exc}") from None
    store = RunStore(root, new_index=True)
    rep = RebuildReport(root, moved)
    for rid, rec in records.items():
        try:
            index_record(store, rid, rec)
        except (ValueError, KeyError, TypeError) as exc:
            rep.skipped.append(f"{root / 'runs' / rid / RECORD_NAME}: {type(exc).__name__}: {exc}")
            continue
        rep.indexed.append(rid)
    for rid, rec in rescued.items():
        index_record(store, rid, rec)
        store.write_record(rid)  # the folder holds a readable copy again
        rep.restored.append(rid)
        unreadable.pop(rid, None)
    rep.skipped += [f"{msg} (in no readable index: lost)" for msg in unreadable.values()]
    return rep


def _load_record(path: Path, rid: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` when ``path`` (a ``run.json``) can restore run ``rid``, else ``(None, why not)``."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(rec, dict) or rec.get("run_id") != rid or rec.get("status") not in STATUSES:
        return None, "not a record of this run"
    return rec, None


def _rescue(root: Path, readable: set[str]) -> dict[str, dict[str, Any]]:
    """Records, read from the current index, of its runs whose ``run.json`` is missing or unreadable ({} when the
    index itself cannot be read)."""
    try:
        old = RunStore(root, readonly=True)
        ids = {r["run_id"] for r in old.list_runs()} - readable
        return {rid: old.record(rid) for rid in sorted(ids)}
    except StoreError:
        return {}


def _record_paths(root: Path) -> dict[str, Path]:
    runs = root / "runs"
    if not runs.is_dir():
        return {}
    return {p.parent.name: p for p in runs.glob(f"*/{RECORD_NAME}")}


def _lock_held(folder: Path) -> bool:
    lock = folder / LOCK_NAME
    if not lock.exists():
        return False
    try:
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _json(v: Any) -> str | None:
    return None if v is None else canonical_json(v)


def index_record(store: RunStore, rid: str, rec: Mapping[str, Any]) -> None:
    """Insert one run record (see :meth:`RunStore.record`) into the database in one transaction."""
    if rec.get("run_id") != rid:
        raise ValueError(f"record names run {rec.get('run_id')!r}, its folder is {rid!r}")
    status = rec["status"]
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    passed = rec.get("passed")
    metrics = []
    for name, (steps, values) in (rec.get("metrics") or {}).items():
        for s, v in zip(steps, values, strict=True):
            metrics.append((rid, name, int(s), None if v is None or not math.isfinite(float(v)) else float(v)))
    with store.transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO runs (run_id, phenomenon, preset, seed, config, status, passed, verdict, result,"
            " error, device, versions, sweep_id, created, started, finished, duration, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                rid,
                rec["phenomenon"],
                rec.get("preset"),
                int(rec["seed"]),
                canonical_json(rec["config"]),
                status,
                None if passed is None else int(bool(passed)),
                _json(rec.get("verdict")),
                _json(rec.get("result")),
                rec.get("error"),
                rec.get("device"),
                json.dumps(rec.get("versions") or {}),
                rec.get("sweep_id"),
                float(rec.get("created") or time.time()),
                rec.get("started"),
                rec.get("finished"),
                rec.get("duration"),
                int(rec.get("attempts") or 0),
            ),
        )
        con.executemany("INSERT OR REPLACE INTO metrics (run_id, name, step, value) VALUES (?, ?, ?, ?)", metrics)
        con.executemany(
            "INSERT OR REPLACE INTO artifacts (run_id, name, path) VALUES (?, ?, ?)",
            [(rid, str(n), str(p)) for n, p in (rec.get("artifacts") or {}).items()],
        )
        for s in rec.get("sweeps") or []:
            con.execute(
                "INSERT OR IGNORE INTO sweeps (sweep_id, phenomenon, spec, created) VALUES (?, ?, ?, ?)",
                (s["sweep_id"], s["phenomenon"], canonical_json(s.get("spec") or {}), float(s.get("created") or 0)),
            )
            con.execute("INSERT OR IGNORE INTO sweep_runs (sweep_id, run_id) VALUES (?, ?)", (s["sweep_id"], rid))
