import csv
import io
import json
import math

import pytest
from rich.console import Console

from phenomlab.report.tables import Tabular, jsonable, render


def _table() -> Tabular:
    long = "a phenomenon title long enough that an 80-column terminal cannot hold it on one line"
    return Tabular("t", ["id", "value", "title"], [["quick-preset-run-0123456789", 0.123456, long], ["b", None, "x"]])


def _print(fmt: str, width: int = 80) -> str:
    con = Console(file=io.StringIO(), width=width, force_terminal=False)
    render(_table(), fmt, con)
    return con.file.getvalue()


def test_terminal_table_folds_instead_of_truncating():
    out = _print("table")
    assert "…" not in out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "quick-preset-run-0123456789" in out  # ids are never cut
    assert "0.1235" in out and "-" in out


def test_csv_and_json_parse_back():
    rows = list(csv.reader(io.StringIO(_print("csv"))))
    assert rows[0] == ["id", "value", "title"] and rows[1][0] == "quick-preset-run-0123456789"
    assert float(rows[1][1]) == 0.123456 and rows[2][1] == ""
    recs = json.loads(_print("json"))
    assert recs[0]["value"] == 0.123456 and recs[1]["value"] is None


def test_json_has_no_nan():
    assert jsonable({"a": [math.nan, 1.0, (math.inf, 2)]}) == {"a": [None, 1.0, [None, 2]]}


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        render(_table(), "xml", Console(file=io.StringIO()))
