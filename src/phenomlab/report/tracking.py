"""Export stored runs to experiment trackers: TensorBoard event files.

A run becomes one TensorBoard run (a sub-folder named by its run id): every stored metric series as scalars at its
steps, each verdict check's measured value as a scalar under ``verdict/``, the config and the verdict as text, and
its figures as images. TensorBoard is an optional extra (``pip install tensorboard``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import PhenomlabError
from ..store.files import inside

TRACKERS = ("tensorboard",)


def export_tensorboard(store: Any, rows: Iterable[Mapping[str, Any]], log_dir: str | Path) -> list[Path]:
    """Write each run in ``rows`` (store records) to ``log_dir/<run_id>``; return those folders."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PhenomlabError("TensorBoard export needs the tensorboard package: pip install tensorboard") from None
    out = []
    for row in rows:
        rid = row["run_id"]
        folder = Path(log_dir) / rid
        try:
            writer = SummaryWriter(log_dir=str(folder))
        except OSError as exc:
            raise PhenomlabError(f"cannot write TensorBoard logs to {folder}: {exc.strerror or exc}") from None
        with writer:
            for name, (steps, values) in store.metrics(rid).items():
                for step, value in zip(steps, values, strict=True):
                    writer.add_scalar(name, value, global_step=step)
            verdict = row.get("verdict") or {}
            for c in verdict.get("checks", []):
                if c.get("value") is not None and math.isfinite(c["value"]):
                    writer.add_scalar(f"verdict/{c['name']}", c["value"], global_step=0)
            head = f"{row['phenomenon']} seed {row['seed']} preset {row.get('preset')} status {row['status']}"
            writer.add_text("run", head, global_step=0)
            writer.add_text("config", "```\n" + json.dumps(row["config"], indent=1) + "\n```", global_step=0)
            if verdict:
                lines = [f"**{'PASSED' if verdict.get('passed') else 'NOT REPRODUCED'}**: {verdict.get('summary', '')}"]
                lines += [
                    f"- {'PASS' if c['passed'] else 'FAIL'} {c['name']} = {c['value']} ({c['op']} {c['threshold']})"
                    for c in verdict.get("checks", [])
                ]
                writer.add_text("verdict", "\n".join(lines), global_step=0)
            for name, path in store.artifacts(rid).items():
                _add_figure(writer, name, Path(path), store.root / "runs" / rid)
        out.append(folder)
    return out


def _add_figure(writer: Any, name: str, path: Path, run_dir: Path) -> None:
    # only the run's own PNGs, as the HTML report does
    if not (inside(path, run_dir) and path.is_file() and path.suffix == ".png"):
        return
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    writer.add_image(f"figures/{name}", img, global_step=0, dataformats="HWC")
