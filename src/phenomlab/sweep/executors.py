"""Executors that run the trials of a sweep: local processes (default) or Ray tasks.

Local: each worker process runs trials through the store directly (SQLite WAL takes concurrent
writers). Ray: each trial is a Ray task that runs in a scratch store on its worker and returns its
result, metrics and figures; the driver alone writes them into the store, so workers need no shared
file system. In both, a failing trial is stored as failed and the others go on; Ctrl-C leaves
finished trials stored and the interrupted ones resumable.
"""

from __future__ import annotations

import base64
import os
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import PhenomlabError
from .grid import Trial


@dataclass
class Outcome:
    """How one trial ended: ``finished`` (``passed`` set), ``cached``, ``failed`` (``error`` set) or
    ``interrupted``."""

    run_id: str
    status: str
    passed: bool | None = None
    error: str | None = None
    duration: float = 0.0


Progress = Callable[[Trial, Outcome], None]


def _run_trial(trial: Trial, store_root: str, device: str | None, sweep_id: str | None, threads: int | None) -> Outcome:
    """Run one trial in this process against the store at ``store_root``; never raises for a trial's own
    failure (it is stored as failed), only for KeyboardInterrupt."""
    import torch

    from ..phenomena.lifecycle import run_phenomenon
    from ..store.sqlite import RunStore

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    store = RunStore(store_root)
    row = store.get(trial.run_id)
    if row is not None and row["status"] == "finished":
        if sweep_id:
            store.add_sweep(sweep_id, trial.phenomenon, {}, [trial.run_id])
        return Outcome(trial.run_id, "cached", row["passed"])
    try:
        r = run_phenomenon(
            trial.phenomenon,
            preset=trial.preset,
            overrides=trial.overrides,
            seed=trial.seed,
            device=device,
            store=store,
            sweep_id=sweep_id,
        )
        return Outcome(trial.run_id, "finished", r.passed, duration=time.perf_counter() - t0)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the trial failed; the sweep goes on
        return Outcome(trial.run_id, "failed", None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


def _worker_init() -> None:
    # the driver decides when workers stop (it forwards Ctrl-C); a terminal's SIGINT to the whole
    # process group must not kill a worker between two store writes
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interruptible_trial(
    trial: Trial, store_root: str, device: str | None, sweep_id: str | None, threads: int | None
) -> Outcome:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run_trial(trial, store_root, device, sweep_id, threads)
    except KeyboardInterrupt:
        return Outcome(trial.run_id, "interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(
    trials: Sequence[Trial],
    store_root: str | Path,
    workers: int = 1,
    device: str | None = None,
    sweep_id: str | None = None,
    on_done: Progress | None = None,
) -> list[Outcome]:
    """Run ``trials`` with ``workers`` processes (1 = in this process). Each worker gets
    ``cpu_count // workers`` torch threads so workers do not oversubscribe the cores."""
    if workers < 1:
        raise PhenomlabError(f"--workers must be >= 1, got {workers}")
    store_root = str(store_root)
    outcomes: list[Outcome] = []
    if workers == 1:
        for t in trials:
            o = _run_trial(t, store_root, device, sweep_id, None)
            outcomes.append(o)
            if on_done:
                on_done(t, o)
        return outcomes
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    pending: dict[Future[Outcome], Trial] = {}
    try:
        for t in trials:
            pending[pool.submit(_interruptible_trial, t, store_root, device, sweep_id, threads)] = t
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                t = pending.pop(fut)
                try:
                    o = fut.result()
                except Exception as exc:  # a worker process died: record it, go on
                    o = Outcome(t.run_id, "failed", None, f"worker died: {type(exc).__name__}: {exc}")
                    _store_failure(store_root, t, o.error or "", sweep_id)
                outcomes.append(o)
                if on_done:
                    on_done(t, o)
    except KeyboardInterrupt:
        for fut in pending:
            fut.cancel()
        # running trials mark themselves interrupted (resumable) when they get SIGINT
        for proc in list(getattr(pool, "_processes", {}).values()):
            try:
                os.kill(proc.pid, signal.SIGINT)
            except (ProcessLookupError, OSError):
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return outcomes


def _store_failure(store_root: str, t: Trial, error: str, sweep_id: str | None) -> None:
    from ..store.sqlite import RunStore

    store = RunStore(store_root)
    row = store.get(t.run_id)
    if row is None or row["status"] != "finished":
        store.record_failed(t.run_id, t.phenomenon, t.config, t.seed, error, preset=t.preset, sweep_id=sweep_id)


# ---- Ray ------------------------------------------------------------------------------------


def _detached_trial(trial_dict: dict[str, Any], device: str | None, threads: int | None) -> dict[str, Any]:
    """Run a trial in a scratch store and return everything the driver needs to store it."""
    import torch

    from .._version import versions
    from ..phenomena.lifecycle import run_phenomenon
    from ..store.sqlite import RunStore

    if threads:
        torch.set_num_threads(threads)
    trial = Trial(**trial_dict)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phenomlab-trial-") as scratch:
        store = RunStore(scratch)
        out: dict[str, Any] = {"trial": trial_dict, "versions": versions(), "host": os.uname().nodename}
        try:
            r = run_phenomenon(
                trial.phenomenon,
                preset=trial.preset,
                overrides=trial.overrides,
                seed=trial.seed,
                device=device,
                store=store,
            )
            out.update(
                status="finished",
                passed=r.passed,
                verdict=r.verdict.to_dict() if r.verdict else None,
                result=r.data,
                duration=r.duration or time.perf_counter() - t0,
                device=str(device or "auto"),
            )
        except Exception as exc:
            out.update(status="failed", error=f"{type(exc).__name__}: {exc}", duration=time.perf_counter() - t0)
        metrics = store.metrics(trial.run_id)
        out["metrics"] = [
            (name, s, v) for name, (steps, vals) in metrics.items() for s, v in zip(steps, vals, strict=True)
        ]
        out["figures"] = {
            name: base64.b64encode(Path(p).read_bytes()).decode()
            for name, p in store.artifacts(trial.run_id).items()
            if Path(p).exists()
        }
    return out


def ingest(store: Any, payload: dict[str, Any], sweep_id: str | None = None) -> Outcome:
    """Write a detached trial's payload into ``store`` (the driver's side of the Ray executor)."""
    t = Trial(**payload["trial"])
    store.start_run(
        t.run_id,
        t.phenomenon,
        t.config,
        t.seed,
        preset=t.preset,
        device=payload.get("device"),
        versions=payload.get("versions"),
        sweep_id=sweep_id,
    )
    store.log_many([(t.run_id, name, int(step), None if v != v else float(v)) for name, step, v in payload["metrics"]])
    run_dir = store.run_dir(t.run_id)
    for name, b64 in payload.get("figures", {}).items():
        path = run_dir / f"{name}.png"
        path.write_bytes(base64.b64decode(b64))
        store.add_artifact(t.run_id, name, path)
    if payload["status"] == "finished":
        store.finish_run(t.run_id, payload["passed"], payload["verdict"], payload["result"], payload["duration"])
        return Outcome(t.run_id, "finished", payload["passed"], duration=payload["duration"])
    store.fail_run(t.run_id, payload.get("error", "failed"))
    return Outcome(t.run_id, "failed", None, payload.get("error"), payload.get("duration", 0.0))


def run_ray(
    trials: Sequence[Trial],
    store: Any,
    address: str | None = None,
    workers: int | None = None,
    device: str | None = None,
    sweep_id: str | None = None,
    on_done: Progress | None = None,
) -> list[Outcome]:
    """Run each trial as a Ray task (1 CPU; a worker that dies is retried once). ``address="auto"`` joins
    a running cluster; ``None`` starts a local Ray with ``workers`` CPUs."""
    try:
        import ray
    except ImportError:
        raise PhenomlabError("the Ray executor needs Ray: pip install 'phenomlab[ray]'") from None

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}},
        }
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), **kwargs)
        started = True
    remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_detached_trial)
    outcomes: list[Outcome] = []
    refs: dict[Any, Trial] = {}
    try:
        for t in trials:
            row = store.get(t.run_id)
            if row is not None and row["status"] == "finished":
                o = Outcome(t.run_id, "cached", row["passed"])
                if sweep_id:
                    store.add_sweep(sweep_id, t.phenomenon, {}, [t.run_id])
                outcomes.append(o)
                if on_done:
                    on_done(t, o)
                continue
            refs[remote.remote(asdict(t), device, 1)] = t
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                t = refs.pop(ref)
                try:
                    o = ingest(store, ray.get(ref), sweep_id)
                except Exception as exc:  # the task died twice, or Ray lost it
                    o = Outcome(t.run_id, "failed", None, f"ray task failed: {type(exc).__name__}: {exc}")
                    store.record_failed(
                        t.run_id, t.phenomenon, t.config, t.seed, o.error or "", preset=t.preset, sweep_id=sweep_id
                    )
                outcomes.append(o)
                if on_done:
                    on_done(t, o)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return outcomes
