"""docs/CONTRIBUTING.md's example phenomenon is real: registered as a plugin row, it passes the contract tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_contract import check_contract, check_smoke_run

from phenomlab.phenomena import registry
from phenomlab.phenomena.lifecycle import run_phenomenon
from phenomlab.store.sqlite import RunStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONTRIBUTING.md"


@pytest.fixture
def example(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.splitlines()) <= 60, "the example should stay short"
    (tmp_path / "contributing_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.add(registry.Entry("example-weight-decay", 3, "example", "docs", module="contributing_example"))
    yield "example-weight-decay"
    registry.remove("example-weight-decay")


def test_example_follows_the_contract(example, tmp_path):
    check_contract(example)
    store = RunStore(tmp_path)
    check_smoke_run(example, store, run_phenomenon(example, preset="smoke", store=store))


def test_example_verdict_passes_and_can_fail(example, tmp_path):
    mod = registry.get(example)
    assert run_phenomenon(example, out=tmp_path).passed
    r = run_phenomenon(example, out=tmp_path, overrides={"weight_decay": 0.0})  # no decay: the signature is absent
    assert not r.passed
    assert mod.signature(type(r)(example, {}, 0, {"decayed": 1.0, "control": 1.0})).passed is False
