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
    result = phenomlab.run("grokking", seed=0, store=str(root), **TINY)
    log_dir = tmp_path / "tb"
    for _ in range(2):  # a second export replaces the first (two event files would show every point twice)
        r = CliRunner().invoke(
            app, ["export", result.run_id[:8], "--to", "tensorboard", "--log-dir", str(log_dir), "--store", str(root)]
        )
        assert r.exit_code == 0, r.output
    assert len(list((log_dir / result.run_id).glob("events.out.tfevents.*"))) == 1
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


def _mlflow_client(log_dir):
    pytest.importorskip("mlflow")
    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=log_dir.resolve().as_uri())
    return client, client.get_experiment_by_name("phenomlab").experiment_id


def _assert_mlflow_run(client, mlflow_run, store, result):
    """Every stored metric with its steps, every verdict value, the config params, tags and figures."""
    rid = mlflow_run.info.run_id
    assert mlflow_run.data.tags["phenomlab.run_id"] == result.run_id
    assert mlflow_run.data.tags["phenomlab.verdict"] == ("PASSED" if result.passed else "NOT REPRODUCED")
    assert mlflow_run.info.status == "FINISHED"
    metrics = store.metrics(result.run_id)
    assert metrics
    for name, (steps, values) in metrics.items():
        hist = sorted(client.get_metric_history(rid, name), key=lambda m: m.step)
        assert [m.step for m in hist] == steps
        assert [m.value for m in hist] == pytest.approx(values, rel=1e-12)
    for c in result.verdict.checks:
        if c.value is not None:
            assert mlflow_run.data.metrics[f"verdict/{c.name}"] == pytest.approx(c.value, rel=1e-12)
    assert mlflow_run.data.params["steps"] == "60" and mlflow_run.data.params["p"] == "11"
    figures = [a.path for a in client.list_artifacts(rid, "figures")]
    assert "figures/accuracy.png" in figures
    assert {a.path for a in client.list_artifacts(rid)} >= {"verdict.json", "figures"}


def test_export_to_mlflow_reads_back_and_replaces(tmp_path):
    pytest.importorskip("mlflow")
    root = tmp_path / "store"
    result = phenomlab.run("grokking", seed=0, store=str(root), **TINY)
    log_dir = tmp_path / "mlruns"
    args = ["export", result.run_id[:8], "--to", "mlflow", "--log-dir", str(log_dir), "--store", str(root)]
    for _ in range(2):  # exporting again replaces the earlier MLflow run
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
    client, eid = _mlflow_client(log_dir)
    runs = client.search_runs([eid])
    assert len(runs) == 1
    _assert_mlflow_run(client, runs[0], RunStore(root), result)


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow"])
def test_run_streams_metrics_while_training(tmp_path, tracker):
    if tracker == "mlflow":
        pytest.importorskip("mlflow")
    from phenomlab.phenomena.lifecycle import run_phenomenon
    from phenomlab.report.tracking import MetricStream

    root, log_dir = tmp_path / "store", tmp_path / "logs"
    store = RunStore(root)
    stream = MetricStream(tracker, log_dir, store)
    seen = []

    def spy(run_id, step, metrics):
        seen.append(step)
        stream(run_id, step, metrics)

    result = run_phenomenon("grokking", overrides=TINY, seed=0, store=store, on_log=spy)
    stream.finish(store.get(result.run_id))
    stream.close()
    assert seen and max(seen) == 60  # each training (grokking has two) streamed its evaluations
    if tracker == "mlflow":
        client, eid = _mlflow_client(log_dir)
        (only,) = client.search_runs([eid])
        _assert_mlflow_run(client, only, store, result)
        return
    acc = EventAccumulator(str(log_dir / result.run_id), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    for name, (steps, values) in store.metrics(result.run_id).items():
        events = acc.Scalars(name)
        assert [e.step for e in events] == steps
        assert [e.value for e in events] == pytest.approx(values, rel=1e-6)
    assert "figures/accuracy" in acc.Tags()["images"]
    assert "verdict/text_summary" in acc.Tags()["tensors"]


def test_run_log_cli(tmp_path):
    root, log_dir = tmp_path / "store", tmp_path / "tb"
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    args = [
        "run",
        "grokking",
        *sets,
        "--store",
        str(root),
        "--quiet",
        "--log",
        "tensorboard",
        "--log-dir",
        str(log_dir),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code in (0, 1), r.output
    (folder,) = [p for p in log_dir.iterdir() if p.is_dir()]
    acc = EventAccumulator(str(folder))
    acc.Reload()
    assert acc.Tags()["scalars"]
    r = CliRunner().invoke(app, [*args[:-4], "--log", "wandb"])
    assert r.exit_code == 2 and "unknown tracker" in r.output
