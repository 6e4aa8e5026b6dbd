"""docs/CATALOG.md and the registry list the same ids, and the doc marks exactly the implemented ones."""

from __future__ import annotations

from pathlib import Path

from phenomlab.phenomena import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "CATALOG.md"


def rows() -> dict[str, str]:
    out = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1] and cells[1] != "id" and not cells[1].startswith("-"):
            out[cells[1]] = cells[2]
    return out


def test_catalog_doc_matches_registry():
    doc = rows()
    assert set(doc) == {e.id for e in registry.CATALOG}
    implemented = set(registry.implemented())
    for pid, status in doc.items():
        assert (pid in implemented) == status.startswith(("implemented", "not reproduced")), (pid, status)
        # `phenomlab list` and `run` tell the user what the doc says
        assert registry.entry(pid).reproduced == (not status.startswith("not reproduced")), (pid, status)
