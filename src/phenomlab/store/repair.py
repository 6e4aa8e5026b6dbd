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
    no_record = []
    for rid, row in rows.items():
        folder = root / "runs" / rid
        if not (folder / RECORD_NAME).exists():
            no_record.append(rid)
        for name, path in store.artifacts(rid).items():
            if not inside(path, folder):
                rep.problems.append(f"run {rid}: figure {name!r} points outside its folder ({path})")
            elif not Path(path).exists():
                rep.problems.append(f"run {rid}: figure {name!r} is missing ({path})")
        if row["status"] == "running" and not _lock_held(folder):
            rep.notes.append(
                f"run {rid} is marked running but no process holds it (killed?); running it again resumes it"
            )
    if no_record:
        rep.notes.append(
            f"{len(no_record)} run(s) have no {RECORD_NAME} (stored by an older version or never started): "
            f"a rebuild could not restore them ({', '.join(no_record[:5])}{' ...' if len(no_record) > 5 else ''})"
        )
    for rid in sorted(set(records) - set(rows)):
        rep.problems.append(f"run {rid} has a folder with {RECORD_NAME} but is not in the index (rebuild restores it)")
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
    store = RunStore(root)
    rep = RebuildReport(root, moved)
    for rid, path in sorted(_record_paths(root).items()):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            _index(store, rid, rec)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            rep.skipped.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        rep.indexed.append(rid)
    return rep


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


def _index(store: RunStore, rid: str, rec: Mapping[str, Any]) -> None:
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
