"""Small file helpers of the run store: atomic writes, the SQLite header check, path containment."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from ..errors import StoreDamaged, StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never a part.

    The data goes to a temporary file in the same folder, is flushed to disk, then renamed over ``path``
    (rename is atomic on POSIX). On any failure (e.g. a full disk) the temporary file is removed and the
    error is raised as a :class:`StoreError` naming the file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_sqlite_file(path: Path) -> None:
    """Raise :class:`StoreDamaged` if ``path`` is not a whole SQLite database file (cheap: reads 100 bytes).

    Catches an empty file (SQLite would silently treat it as a new, empty database), an overwritten header,
    and a file shorter than the size its header records (a truncated copy). A non-empty write-ahead log
    next to it may hold the missing pages, so the size check is skipped then; a mismatch is looked at twice,
    since another process may be folding its log into the file at that moment.
    """
    problem = _sqlite_file_problem(path)
    if problem is not None and problem[1]:  # could be a writer's checkpoint in progress: look again
        time.sleep(0.1)
        problem = _sqlite_file_problem(path)
    if problem is not None:
        raise StoreDamaged(damaged_message(path, problem[0]))


def _sqlite_file_problem(path: Path) -> tuple[str, bool] | None:
    """(what is wrong, whether a concurrent checkpoint could explain it), or None."""
    wal = path.with_name(path.name + "-wal")

    def wal_has_pages() -> bool:
        try:
            return wal.stat().st_size > 0
        except OSError:
            return False

    busy = wal_has_pages()
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read the run store {path}: {exc.strerror or exc}") from None
    if size == 0:
        return "the file is empty (0 bytes)", False
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return "it is not an SQLite database: its header is missing or overwritten", False
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    n_pages = int.from_bytes(head[28:32], "big")
    # the in-header page count is valid only while the change counter equals "version-valid-for"
    header_size_valid = head[24:28] == head[92:96]
    if header_size_valid and n_pages and size < n_pages * page_size and not busy and not wal_has_pages():
        return f"it is truncated: {size} bytes, its header records {n_pages * page_size}", True
    return None


def damaged_message(path: Path, reason: str) -> str:
    root = path.parent
    return (
        f"the run store {path} is damaged ({reason}); `phenomlab store check --store {root}` lists the problems, "
        f"`phenomlab store rebuild --store {root}` re-indexes the runs from their folders"
    )


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` (after resolving ``..`` and symbolic links) lies inside ``folder``."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False
