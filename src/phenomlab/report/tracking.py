"""Export stored runs to experiment trackers (TensorBoard event files, an MLflow file store), or stream them.

TensorBoard: a run becomes one TensorBoard run (a sub-folder named by its run id): every stored metric series as
scalars at its steps, each verdict check's measured value as a scalar under ``verdict/``, the config and the verdict
as text, and its figures as images.

MLflow: a run becomes one MLflow run in experiment ``phenomlab`` of a local file store (``mlflow ui
--backend-store-uri DIR``): metric series with their steps, each verdict check's value as metric ``verdict/<check>``,
the flattened config as params, phenomenon, seed, preset, status and verdict as tags (``phenomlab.*``), figures and
``verdict.json`` as artifacts. Exporting a run again replaces its earlier MLflow run. MLflow >= 3 keeps the file
store only behind ``MLFLOW_ALLOW_FILE_STORE=true``, which the exporter sets for its own process when unset.

Streaming (``phenomlab run --log tensorboard|mlflow``): :func:`stream` returns a metric sink that writes each record
while the run trains, and :meth:`MetricStream.finish` adds the verdict, config and figures when it ends.

Both trackers are optional extras (``pip install tensorboard mlflow-skinny``, the ``tracking`` extra).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import PhenomlabError
from ..store.files import inside

TRACKERS = ("tensorboard", "mlflow")
MLFLOW_EXPERIMENT = "phenomlab"
#: MLflow caps a param value at 6,000 characters (mlflow.utils.validation)
_MLFLOW_PARAM_MAX = 6000


def export(tracker: str, store: Any, rows: Iterable[Mapping[str, Any]], log_dir: str | Path) -> list[str]:
    """Write each run in ``rows`` to ``tracker`` (one of :data:`TRACKERS`) under ``log_dir``; return where each went."""
    if tracker == "tensorboard":
        return [str(f) for f in export_tensorboard(store, rows, log_dir)]
    if tracker == "mlflow":
        return export_mlflow(store, rows, log_dir)
    raise PhenomlabError(f"unknown tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")


def _summary_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PhenomlabError("TensorBoard export needs the tensorboard package: pip install tensorboard") from None
    try:
        return SummaryWriter(log_dir=str(folder))
    except OSError as exc:
        raise PhenomlabError(f"cannot write TensorBoard logs to {folder}: {exc.strerror or exc}") from None


def export_tensorboard(store: Any, rows: Iterable[Mapping[str, Any]], log_dir: str | Path) -> list[Path]:
    """Write each run in ``rows`` (store records) to ``log_dir/<run_id>``, replacing an earlier export of it
    (TensorBoard would show every point of two event files twice); return those folders."""
    out = []
    for row in rows:
        folder = Path(log_dir) / row["run_id"]
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        with _summary_writer(folder) as writer:
            for name, (steps, values) in store.metrics(row["run_id"]).items():
                for step, value in zip(steps, values, strict=True):
                    writer.add_scalar(name, value, global_step=step)
            _tensorboard_summary(writer, store, row)
        out.append(folder)
    return out


def _tensorboard_summary(writer: Any, store: Any, row: Mapping[str, Any]) -> None:
    """Verdict values as scalars, run/config/verdict as text, figures as images."""
    rid = row["run_id"]
    verdict = row.get("verdict") or {}
    for c in verdict.get("checks", []):
        if c.get("value") is not None and math.isfinite(c["value"]):
            writer.add_scalar(f"verdict/{c['name']}", c["value"], global_step=0)
    writer.add_text("run", _headline(row), global_step=0)
    writer.add_text("config", "```\n" + json.dumps(row["config"], indent=1) + "\n```", global_step=0)
    if verdict:
        writer.add_text("verdict", _verdict_markdown(verdict), global_step=0)
    for name, path in store.artifacts(rid).items():
        _add_figure(writer, name, Path(path), store.root / "runs" / rid)


def _headline(row: Mapping[str, Any]) -> str:
    return f"{row['phenomenon']} seed {row['seed']} preset {row.get('preset')} status {row['status']}"


def _verdict_markdown(verdict: Mapping[str, Any]) -> str:
    lines = [f"**{'PASSED' if verdict.get('passed') else 'NOT REPRODUCED'}**: {verdict.get('summary', '')}"]
    lines += [
        f"- {'PASS' if c['passed'] else 'FAIL'} {c['name']} = {c['value']} ({c['op']} {c['threshold']})"
        for c in verdict.get("checks", [])
    ]
    return "\n".join(lines)


def _add_figure(writer: Any, name: str, path: Path, run_dir: Path) -> None:
    # only the run's own PNGs, as the HTML report does
    if not (inside(path, run_dir) and path.is_file() and path.suffix == ".png"):
        return
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    writer.add_image(f"figures/{name}", img, global_step=0, dataformats="HWC")


def _mlflow_client(log_dir: str | Path) -> tuple[Any, str]:
    """An MLflow client on the file store at ``log_dir`` and the id of its ``phenomlab`` experiment."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise PhenomlabError("MLflow export needs the mlflow package: pip install mlflow-skinny") from None
    root = Path(log_dir).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PhenomlabError(f"cannot write an MLflow store at {root}: {exc.strerror or exc}") from None
    client = MlflowClient(tracking_uri=root.as_uri())
    exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    return client, exp.experiment_id if exp is not None else client.create_experiment(MLFLOW_EXPERIMENT)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)[:_MLFLOW_PARAM_MAX] if not isinstance(v, str) else v[:_MLFLOW_PARAM_MAX]
    return out


def _mlflow_metrics(series: Mapping[str, tuple[list[int], list[float]]]) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(name, float(v), now, int(step))
        for name, (steps, values) in series.items()
        for step, v in zip(steps, values, strict=True)
        if v is not None and math.isfinite(v)
    ]


def _mlflow_log_batch(client: Any, mlflow_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = ()) -> None:
    # MLflow accepts at most 1,000 metrics and 100 params in one batch
    metrics, params = list(metrics), list(params)
    for i in range(0, len(metrics), 1000):
        client.log_batch(mlflow_id, metrics=metrics[i : i + 1000])
    for i in range(0, len(params), 100):
        client.log_batch(mlflow_id, params=params[i : i + 100])


def _mlflow_start(client: Any, experiment_id: str, row: Mapping[str, Any]) -> str:
    """A new MLflow run for phenomlab run ``row`` (an earlier export of the same run is deleted first)."""
    rid = row["run_id"]
    for old in client.search_runs([experiment_id], filter_string=f"tags.`phenomlab.run_id` = '{rid}'"):
        client.delete_run(old.info.run_id)
    tags = {
        "phenomlab.run_id": rid,
        "phenomlab.phenomenon": str(row["phenomenon"]),
        "phenomlab.seed": str(row["seed"]),
        "phenomlab.preset": str(row.get("preset")),
    }
    return client.create_run(
        experiment_id, run_name=f"{row['phenomenon']} seed {row['seed']} {rid[:8]}", tags=tags
    ).info.run_id


def _mlflow_finish(client: Any, mlflow_id: str, store: Any, row: Mapping[str, Any]) -> None:
    """Verdict (values, tags, note, verdict.json), config params and figures; then mark the MLflow run ended."""
    from mlflow.entities import Metric, Param

    rid = row["run_id"]
    verdict = row.get("verdict") or {}
    now = int(time.time() * 1000)
    checks = [
        Metric(f"verdict/{c['name']}", float(c["value"]), now, 0)
        for c in verdict.get("checks", [])
        if c.get("value") is not None and math.isfinite(c["value"])
    ]
    params = [Param(k, v) for k, v in _flatten(row["config"]).items()]
    _mlflow_log_batch(client, mlflow_id, checks, params)
    client.set_tag(mlflow_id, "phenomlab.status", str(row["status"]))
    if verdict:
        client.set_tag(mlflow_id, "phenomlab.verdict", "PASSED" if verdict.get("passed") else "NOT REPRODUCED")
        client.set_tag(mlflow_id, "mlflow.note.content", _verdict_markdown(verdict))
        client.log_text(mlflow_id, json.dumps(verdict, indent=1), "verdict.json")
    run_dir = store.root / "runs" / rid
    for path in map(Path, store.artifacts(rid).values()):
        if inside(path, run_dir) and path.is_file() and path.suffix == ".png":
            client.log_artifact(mlflow_id, str(path), artifact_path="figures")
    client.set_terminated(mlflow_id, status="FINISHED" if row["status"] == "finished" else "FAILED")


def export_mlflow(store: Any, rows: Iterable[Mapping[str, Any]], log_dir: str | Path) -> list[str]:
    """Write each run in ``rows`` to the MLflow file store at ``log_dir``; return the MLflow run ids."""
    client, eid = _mlflow_client(log_dir)
    out = []
    for row in rows:
        mlflow_id = _mlflow_start(client, eid, row)
        _mlflow_log_batch(client, mlflow_id, _mlflow_metrics(store.metrics(row["run_id"])))
        _mlflow_finish(client, mlflow_id, store, row)
        out.append(mlflow_id)
    return out


class MetricStream:
    """A metric sink for ``run_phenomenon(..., on_log=stream)``: ``stream(run_id, step, metrics)`` writes each record to
    the tracker as the run trains; ``stream.finish(row)`` adds the verdict, config and figures when the run ended."""

    def __init__(self, tracker: str, log_dir: str | Path, store: Any) -> None:
        if tracker not in TRACKERS:
            raise PhenomlabError(f"unknown tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")
        self.tracker, self.log_dir, self.store = tracker, Path(log_dir), store
        self._open: dict[str, Any] = {}  # phenomlab run id -> TensorBoard SummaryWriter or MLflow run id
        # fail now, not after minutes of training
        self._mlflow: tuple[Any, str] | None = _mlflow_client(log_dir) if tracker == "mlflow" else None
        if tracker == "tensorboard":
            try:
                import tensorboard  # noqa: F401

                self.log_dir.mkdir(parents=True, exist_ok=True)
            except ImportError:
                raise PhenomlabError(
                    "TensorBoard logging needs the tensorboard package: pip install tensorboard"
                ) from None
            except OSError as exc:
                raise PhenomlabError(
                    f"cannot write TensorBoard logs to {self.log_dir}: {exc.strerror or exc}"
                ) from None

    def _target(self, run_id: str) -> Any:
        if run_id not in self._open:
            if self._mlflow is not None:
                client, eid = self._mlflow
                self._open[run_id] = _mlflow_start(client, eid, self.store.get(run_id))
            else:
                self._open[run_id] = _summary_writer(self.log_dir / run_id)
        return self._open[run_id]

    def __call__(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        good = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
        target = self._target(run_id)
        if self._mlflow is not None:
            _mlflow_log_batch(self._mlflow[0], target, _mlflow_metrics({k: ([step], [v]) for k, v in good.items()}))
            return
        for name, value in good.items():
            target.add_scalar(name, value, global_step=step)
        target.flush()  # a dashboard watching the folder shows each evaluation as it happens

    def finish(self, row: Mapping[str, Any]) -> str:
        """Add the ended run's summary and close it; a run that streamed nothing here (read from the store, or
        judged from stored measurements) is exported whole. Returns the folder or MLflow run id."""
        rid = row["run_id"]
        if rid not in self._open:
            return export(self.tracker, self.store, [row], self.log_dir)[0]
        target = self._open.pop(rid)
        if self._mlflow is not None:
            _mlflow_finish(self._mlflow[0], target, self.store, row)
            return str(target)
        # the live events were for watching; the folder keeps one copy of the whole stored run (a resumed run
        # streamed only its last stretch, a re-run would add a second file)
        target.close()
        return str(export_tensorboard(self.store, [row], self.log_dir)[0])

    def close(self) -> None:
        """Close what is still open (a run that failed or was interrupted)."""
        for target in self._open.values():
            if self._mlflow is not None:
                self._mlflow[0].set_terminated(target, status="FAILED")
            else:
                target.close()
        self._open.clear()
