"""Tables the command line prints, in three formats: a terminal table, CSV or JSON.

A :class:`Tabular` holds plain cells (numbers stay numbers for CSV/JSON); only the terminal rendering formats and
colours them. Terminal tables fold long cells onto more lines instead of cutting them to "qui…", so they stay
readable in an 80-column terminal or a pipe.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("table", "csv", "json")


@dataclass
class Tabular:
    """A titled table: ``rows`` are lists of cells in the order of ``columns``.

    ``styles`` maps a column to a function from a cell to a rich style ("green", "red", "" for none); the
    ``whole`` columns (ids, dates) are never folded in a terminal table: the other columns give way.
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    styles: dict[str, Callable[[Any], str]] = field(default_factory=dict)
    whole: tuple[str, ...] = ()

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def cell_text(v: Any) -> str:
    """A cell as terminal text: floats with 4 significant digits, None as '-', lists joined by ', '."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(cell_text(x) for x in v) + "]"
    return str(v)


def jsonable(v: Any) -> Any:
    """``v`` with NaN/inf replaced by None (JSON has no NaN) and tuples as lists, recursively."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def to_csv(tables: Sequence[Tabular]) -> str:
    """CSV with a header row; several tables (same columns) become one CSV with a leading ``table`` column."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    many = len(tables) > 1
    if tables:
        w.writerow((["table"] if many else []) + tables[0].columns)
    for t in tables:
        for r in t.rows:
            cells = ["" if c is None else cell_text(c) if isinstance(c, (list, tuple)) else c for c in r]
            w.writerow(([t.title] if many else []) + cells)
    return buf.getvalue()


def to_json(tables: Sequence[Tabular]) -> str:
    """One table: a JSON list of records; several: a list of ``{"title", "rows"}`` objects."""
    as_obj = [{"title": t.title, "rows": jsonable(t.records())} for t in tables]
    return json.dumps(as_obj[0]["rows"] if len(as_obj) == 1 else as_obj, indent=1, default=str)


def to_rich(t: Tabular, width: int = 80) -> Any:
    """A rich Table (without its title) whose columns fold instead of truncating, for a terminal ``width``
    characters wide."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    natural = sum(max(len(cell_text(x)) for x in [c, *(r[i] for r in t.rows)]) for i, c in enumerate(t.columns))
    # two spaces between columns when the table fits that way, else one
    pad = (0, 1, 0, 0) if natural + 2 * (len(t.columns) - 1) <= width else (0, 0)
    rt = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=pad)
    for i, col in enumerate(t.columns):
        texts = [col] + [cell_text(r[i]) for r in t.rows]
        # a column is never narrower than its longest cell (ids, dates) or its longest word up to 12 characters:
        # prose wraps between words, and only very long words (ids) fold
        if col in t.whole:
            width = max(map(len, texts))
        else:
            width = min(12, max(len(w) for x in texts for w in x.split() or [""]))
        rt.add_column(col, overflow="fold", min_width=width)
    for r in t.rows:
        cells = []
        for col, v in zip(t.columns, r, strict=True):
            text = escape(cell_text(v))
            style = t.styles[col](v) if col in t.styles else ""
            cells.append(f"[{style}]{text}[/]" if style else text)
        rt.add_row(*cells)
    return rt


def render(tables: Tabular | Sequence[Tabular], fmt: str, console: Any) -> None:
    """Print ``tables`` on ``console`` (a rich Console) as a terminal table, CSV or JSON."""
    if isinstance(tables, Tabular):
        tables = [tables]
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "table":
        from rich.text import Text

        for t in tables:
            # a caption of its own, folded at the terminal's width: as the table's title rich folds it at the
            # table's, which splits "seeds [0, 1, 2]" over two lines above a narrow table
            console.print(Text(t.title, style="table.title"))
            console.print(to_rich(t, console.width))
        return
    text = to_csv(tables) if fmt == "csv" else to_json(tables)
    console.out(text, highlight=False, end="" if text.endswith("\n") else "\n")
