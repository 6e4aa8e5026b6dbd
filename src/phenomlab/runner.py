"""Run one phenomenon through the store: cached when finished, resumed when interrupted."""

from __future__ import annotations

import platform
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import TrainingDiverged
from .phenomena import registry
from .phenomena.base import PhenomenonConfig, Result, RunContext, Verdict, build_config
from .seeding import resolve_device, seed_everything
from .store.ids import run_id as make_run_id
from .store.sqlite import RunStore


def versions() -> dict[str, str]:
    import numpy
    import torch

    from . import __version__

    return {
        "phenomlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def make_config(pid: str, preset: str = "quick", overrides: Mapping[str, Any] | None = None) -> PhenomenonConfig:
    """The validated config of ``pid`` for ``preset`` with ``overrides`` (strings parsed by field type)."""
    mod = registry.get(pid)
    return build_config(mod.Config, mod.PRESETS, preset, overrides)


def load_result(store: RunStore, row: Mapping[str, Any]) -> Result:
    """A :class:`Result` rebuilt from a stored run row."""
    verdict = Verdict.from_dict(row["verdict"]) if row.get("verdict") else None
    arts = store.artifacts(row["run_id"])
    return Result(
        phenomenon=row["phenomenon"],
        config=row["config"],
        seed=row["seed"],
        data=row.get("result") or {},
        run_id=row["run_id"],
        verdict=verdict,
        figures=list(arts.values()),
        cached=True,
        duration=row.get("duration"),
        run_dir=str(store.root / "runs" / row["run_id"]),
    )


def run_phenomenon(
    pid: str,
    preset: str = "quick",
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | None = None,
    out: str | Path | None = None,
    store: RunStore | None = None,
    force: bool = False,
    progress: bool = False,
    sweep_id: str | None = None,
    config: PhenomenonConfig | None = None,
) -> Result:
    """Run ``pid`` with a config built from ``preset`` + ``overrides`` and seed ``seed``.

    A finished run with the same id (phenomenon, full config, seed) is read from the store, not
    recomputed (``force=True`` recomputes). An unfinished one resumes from its checkpoints.
    Training that diverges is stored as failed and :class:`TrainingDiverged` propagates.
    """
    mod = registry.get(pid)
    cfg = config if config is not None else build_config(mod.Config, mod.PRESETS, preset, overrides)
    cfg.validate()
    dev = resolve_device(device)
    store = store if store is not None else RunStore(out)
    cfg_dict = cfg.to_dict()
    rid = make_run_id(pid, cfg_dict, seed)

    row = store.get(rid)
    if row is not None and row["status"] == "finished" and not force:
        if sweep_id:
            store.add_sweep(sweep_id, pid, {}, [rid])
        return load_result(store, row)
    if force and row is not None:
        store.delete(rid)
        import shutil

        shutil.rmtree(store.root / "runs" / rid, ignore_errors=True)

    store.start_run(rid, pid, cfg_dict, seed, preset=preset, device=str(dev), versions=versions(), sweep_id=sweep_id)
    run_dir = store.run_dir(rid)
    ctx = RunContext(seed=seed, device=dev, run_dir=run_dir, store=store, run_id=rid, progress=progress)
    seed_everything(seed)
    t0 = time.perf_counter()
    try:
        data = mod.run(cfg, ctx)
        result = Result(phenomenon=pid, config=cfg_dict, seed=seed, data=data, run_id=rid, run_dir=str(run_dir))
        verdict = mod.signature(result)
        result.verdict = verdict
        figures = [str(p) for p in mod.plot(result, run_dir)]
        for p in figures:
            store.add_artifact(rid, Path(p).stem, p)
        result.figures = figures
        result.duration = time.perf_counter() - t0
        store.finish_run(rid, verdict.passed, verdict.to_dict(), data, result.duration)
        return result
    except TrainingDiverged as exc:
        store.fail_run(rid, str(exc))
        raise
    except KeyboardInterrupt:
        store.fail_run(rid, "interrupted by the user", status="interrupted")
        raise
    except Exception as exc:
        store.fail_run(rid, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        raise
