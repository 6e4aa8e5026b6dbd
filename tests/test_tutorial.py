"""docs/tutorial/tutorial.py runs as written (issue 17 item 7), so the tutorial never rots."""

import runpy
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial" / "tutorial.py"


def test_tutorial_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PHENOMLAB_TUTORIAL_STORE", str(tmp_path))
    ns = runpy.run_path(str(TUTORIAL), run_name="__main__")
    assert ns["result"].verdict.passed  # part 1 reproduces grokking
    assert 0 < ns["sharpness"] and 0 <= ns["nc"].nc1
    assert len(ns["sweep"].outcomes) == 4 and not ns["sweep"].failed
    assert [o.status for o in ns["sweep"].outcomes].count("cached") == 1  # part 1's run is read back
    out = capsys.readouterr().out
    assert "verdict: PASSED" in out and "run status by (weight decay, seed)" in out
