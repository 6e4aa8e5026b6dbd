"""benchmarks/quick_presets.py's closing tally: which failures count, and that the log's last lines name them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quick_presets.py"


def _module():
    spec = importlib.util.spec_from_file_location("quick_presets", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(pid: str, seed: int, passed: bool, checks: list[str]) -> dict:
    return {"id": pid, "seed": seed, "passed": passed, "summary": "s", "checks": checks}


def test_a_reproduced_row_failing_is_named_last_and_fails_the_run(capsys):
    qp = _module()
    records = [
        _rec("grokking", 0, True, ["PASS  a = 1 (need >= 0.5)"]),
        _rec("rowx", 0, False, ["PASS  a = 1 (need >= 0.5)", "FAIL  width_gain = 0.0466 (need >= 0.05)"]),
        _rec("rowy", 0, False, ["FAIL  b = 0 (need >= 1)"]),
        _rec("rowz", 0, True, []),
    ]
    status = qp.summarize(records, [("late", 0)], expected_fail={"rowy", "rowz"})
    out = capsys.readouterr().out.strip().splitlines()
    assert status == 1
    assert "4 runs: 2 passed, 1 failed as the catalogue expects" in out[-3]
    assert "1 failed unexpectedly; 1 skipped by the time box" in out[-3]
    assert out[-2] == "UNEXPECTED FAILURE  rowx seed 0: FAIL  width_gain = 0.0466 (need >= 0.05)"
    assert out[-1] == "passed though marked not reproduced  rowz seed 0"


def test_only_expected_failures_pass_the_run(capsys):
    qp = _module()
    records = [_rec("rowy", 1, False, ["FAIL  b = 0 (need >= 1)"]), _rec("grokking", 1, True, [])]
    assert qp.summarize(records, [], expected_fail={"rowy"}) == 0
    assert "0 failed unexpectedly" in capsys.readouterr().out
    # a run that raised has no checks: its error line stands in for them
    crashed = [_rec("grokking", 2, False, [])]
    crashed[0]["summary"] = "RuntimeError: diverged"
    assert qp.summarize(crashed, [], expected_fail=set()) == 1
    assert capsys.readouterr().out.strip().endswith("grokking seed 2: RuntimeError: diverged")
