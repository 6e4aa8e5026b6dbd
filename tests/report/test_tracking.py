"""TensorBoard export read back with TensorBoard's own event reader (issue 17 item 1)."""

import pytest
from typer.testing import CliRunner

import phenomlab
from phenomlab.cli import app
from phenomlab.store.sqlite import RunStore

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = {"p": "11", "embed_dim": "8", "width": "16", "steps": "60", "eval_every": "20"}


def test_export_to_tensorboard_reads_back(tmp_path):
    root = tmp_path / "store"
    result = phenomlab.run("grokking", seed=0, out=str(root), **TINY)
    log_dir = tmp_path / "tb"
    r = CliRunner().invoke(
        app, ["export", result.run_id[:8], "--to", "tensorboard", "--log-dir", str(log_dir), "--store", str(root)]
    )
    assert r.exit_code == 0, r.output
    acc = EventAccumulator(str(log_dir / result.run_id), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    store = RunStore(root)
    metrics = store.metrics(result.run_id)
    assert metrics and set(metrics) <= set(acc.Tags()["scalars"])
    for name, (steps, values) in metrics.items():
        events = acc.Scalars(name)
        assert [e.step for e in events] == steps
        assert [e.value for e in events] == pytest.approx(values, rel=1e-6)  # TensorBoard keeps float32
    checked = [c for c in result.verdict.checks if c.value is not None]
    for c in checked:
        assert acc.Scalars(f"verdict/{c.name}")[0].value == pytest.approx(c.value, rel=1e-6)
    assert "figures/accuracy" in acc.Tags()["images"]
    texts = {t for t in acc.Tags()["tensors"]}
    assert {"config/text_summary", "verdict/text_summary", "run/text_summary"} <= texts


def test_export_bad_input(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["export", "abc", "--to", "wandb", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "unknown tracker" in r.output
    r = runner.invoke(app, ["export", "--store", str(tmp_path)])
    assert r.exit_code == 2
