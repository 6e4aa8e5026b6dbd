"""Executors that run the trials of a sweep: local processes (default) or Ray tasks.

Every trial goes through the one run lifecycle (:mod:`phenomlab.phenomena.lifecycle`): cached runs are
read back, measured-but-unjudged runs are judged, interrupted runs resume, failures are stored as failed
and the other trials go on. Trials that need no training are settled by the driver itself, so a finished
sweep starts no worker.

Local: each worker process takes one trial at a time from the driver and writes it into the store (SQLite
WAL takes concurrent writers; the lifecycle's per-run lock keeps two processes off the same run). A worker
holds no queued trials and dies with its driver (``PR_SET_PDEATHSIG`` on Linux, a ``getppid`` watch
everywhere), marking its run interrupted, so killing a driver leaves no worker running trials into the store.
Ray: each trial is a Ray task that runs in a scratch store on its worker and returns the run's export; the
driver alone writes it into the store (:func:`~phenomlab.phenomena.lifecycle.import_run`), so workers need
no shared file system.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ..errors import PhenomlabError
from ..phenomena import lifecycle
from ..phenomena.verdict import Result
from ..store.sqlite import RunStore
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


def _attempt(run_id: str, settle: Callable[[], Result]) -> Outcome:
    """The outcome of ``settle()`` (a lifecycle call, which stores the run however it ends); a trial's own
    failure is returned, never raised, so the sweep goes on. KeyboardInterrupt propagates."""
    t0 = time.perf_counter()
    try:
        r = settle()
    except lifecycle.RunFailed as exc:
        return Outcome(run_id, "failed", None, str(exc), time.perf_counter() - t0)
    except Exception as exc:
        return Outcome(run_id, "failed", None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    if r.cached:
        return Outcome(run_id, "cached", r.passed)
    return Outcome(run_id, "finished", r.passed, duration=r.duration or time.perf_counter() - t0)


def _run_trial(trial: Trial, store: RunStore, device: str | None, sweep_id: str | None) -> Outcome:
    return _attempt(
        trial.run_id,
        lambda: lifecycle.run_phenomenon(
            trial.phenomenon,
            preset=trial.preset,
            overrides=trial.overrides,
            seed=trial.seed,
            device=device,
            store=store,
            force=trial.force,
            sweep_id=sweep_id,
        ),
    )


def _settle_stored(
    trials: Sequence[Trial], store: RunStore, sweep_id: str | None, on_done: Progress | None
) -> tuple[list[Outcome], Progress, list[Trial]]:
    """Settle in this process the trials that need no training (finished: read back; measured: judged).

    Returns the outcomes so far, ``report(trial, outcome)`` that adds one (and calls ``on_done``), and the
    trials still to run."""
    outcomes: list[Outcome] = []

    def report(t: Trial, o: Outcome) -> None:
        outcomes.append(o)
        if on_done:
            on_done(t, o)

    rest = []
    for t in trials:
        if t.force or lifecycle.needs_run(store.get(t.run_id)):
            rest.append(t)
        else:  # no training happens, so the device is never used
            report(t, _run_trial(t, store, "cpu", sweep_id))
    return outcomes, report, rest


def _fail_lost(store: RunStore, t: Trial, error: str, sweep_id: str | None) -> Outcome:
    """A trial whose process or task died without storing its ending: stored as failed."""
    lifecycle.record_failure(store, t.phenomenon, t.config, t.seed, error, preset=t.preset, sweep_id=sweep_id)
    return Outcome(t.run_id, "failed", None, error)


# ---- local ----------------------------------------------------------------------------------

#: seconds between a worker's checks that its driver is alive (where PR_SET_PDEATHSIG is unavailable)
PARENT_POLL_S = 1.0
#: seconds an orphaned worker has to mark its run interrupted before it exits regardless
ORPHAN_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1

_in_trial = False
_stopping = False  # a KeyboardInterrupt was raised into the current trial (at most one per trial)
_orphaned = False  # the driver died: exit after the current trial is marked interrupted


def run_local(
    trials: Sequence[Trial],
    store: RunStore,
    workers: int = 1,
    device: str | None = None,
    sweep_id: str | None = None,
    on_done: Progress | None = None,
) -> list[Outcome]:
    """Run ``trials`` with ``workers`` processes (1 = in this process). Each worker gets
    ``cpu_count // workers`` torch threads so workers do not oversubscribe the cores."""
    if workers < 1:
        raise PhenomlabError(f"--workers must be >= 1, got {workers}")
    outcomes, report, rest = _settle_stored(trials, store, sweep_id, on_done)
    if workers == 1:
        for t in rest:
            report(t, _run_trial(t, store, device, sweep_id))
    elif rest:
        _run_pool(rest, store, workers, device, sweep_id, report)
    return outcomes


class _Worker:
    """A worker process and the driver's end of its pipe; ``trial`` is the one it is running (or None)."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), *args), daemon=True)
        self.proc.start()
        child.close()
        self.trial: Trial | None = None

    def receive(self) -> Outcome | None:
        """The outcome the worker sent, or None when it died without sending one."""
        with contextlib.suppress(EOFError, OSError):
            if self.conn.poll():
                return self.conn.recv()
        return None


def _run_pool(
    trials: Sequence[Trial], store: RunStore, workers: int, device: str | None, sweep_id: str | None, report: Progress
) -> None:
    import multiprocessing as mp
    from multiprocessing.connection import wait as wait_any

    ctx = mp.get_context("spawn")
    args = (str(store.root), device, sweep_id, max(1, (os.cpu_count() or 1) // workers))
    todo = deque(trials)
    pool: list[_Worker] = []
    try:
        for _ in range(min(workers, len(todo))):
            pool.append(_Worker(ctx, args))
        while todo or any(w.trial is not None for w in pool):
            for w in pool:
                if w.trial is None and todo:
                    w.trial = todo.popleft()
                    w.conn.send(w.trial)
            busy = [w for w in pool if w.trial is not None]
            ready = set(wait_any([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for i, w in enumerate(pool):
                if w.trial is None or not ready & {w.conn, w.proc.sentinel}:
                    continue
                t, w.trial = w.trial, None
                o = w.receive()
                if o is None:
                    w.proc.join(1)
                    o = _fail_lost(store, t, f"worker process died (exit code {w.proc.exitcode})", sweep_id)
                    if todo:
                        pool[i] = _Worker(ctx, args)
                report(t, o)
    finally:
        _stop(pool)


def _stop(pool: Sequence[_Worker]) -> None:
    """Stop the workers: a running trial is interrupted (stored as interrupted, resumable), idle ones exit."""
    for w in pool:
        if w.trial is not None and w.proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGINT)
        with contextlib.suppress(OSError):
            w.conn.send(None)
    for w in pool:
        w.proc.join(30)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join()
        w.conn.close()


def _worker_main(
    conn: Any, parent: int, store_root: str, device: str | None, sweep_id: str | None, threads: int
) -> None:
    """A local worker: runs the trials its driver sends, one at a time, until told to stop or the driver dies."""
    import torch

    # the driver decides when a trial stops (it forwards Ctrl-C); outside a trial SIGINT is ignored
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    torch.set_num_threads(threads)
    store = RunStore(store_root)
    while True:
        try:
            trial = conn.recv()
        except (EOFError, OSError):
            return
        if trial is None:
            return
        o = _interruptible_trial(trial, store, device, sweep_id)
        if _orphaned:
            os._exit(1)
        conn.send(o)


def _interruptible_trial(trial: Trial, store: RunStore, device: str | None, sweep_id: str | None) -> Outcome:
    global _in_trial, _stopping
    _stopping = False
    try:
        _in_trial = True
        signal.signal(signal.SIGINT, _interrupt)
        return _run_trial(trial, store, device, sweep_id)
    except KeyboardInterrupt:  # the lifecycle stored the run as interrupted
        return Outcome(trial.run_id, "interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _in_trial = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # one KeyboardInterrupt per trial: a second one (Ctrl-C reaches the whole process group and the driver
    # forwards it too) must not land inside the lifecycle's handling of the first
    global _stopping
    if _in_trial and not _stopping:
        _stopping = True
        raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM: the driver died (PR_SET_PDEATHSIG, or the getppid watch) or stops its daemonic workers at exit
    global _orphaned
    _orphaned = True
    if not _in_trial:
        os._exit(1)
    # the lifecycle marks the run interrupted; a trial stuck in native code is cut short all the same
    timer = threading.Timer(ORPHAN_GRACE_S, os._exit, (1,))
    timer.daemon = True
    timer.start()
    _interrupt(signum, frame)


def _die_with(parent: int) -> None:
    """Exit when process ``parent`` (the driver) dies, even by SIGKILL."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="phenomlab-watch-driver").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)


# ---- Ray ------------------------------------------------------------------------------------


def _remote_trial(trial: Trial, device: str | None, threads: int | None) -> dict[str, Any]:
    """On a Ray worker: run the trial through the lifecycle in a scratch store and return the run's export
    (``record``), or ``error`` when it failed before anything was stored."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="phenomlab-trial-") as scratch:
        store = RunStore(scratch)
        error = _run_trial(trial, store, device, None).error
        return {"record": lifecycle.export_run(store, trial.run_id), "error": error}


def _ingest(store: RunStore, t: Trial, fetch: Callable[[], dict[str, Any]], sweep_id: str | None) -> Outcome:
    """The driver's side: store what a Ray task returned (or the task's loss) through the lifecycle."""
    try:
        payload = fetch()
    except Exception as exc:  # the task died twice, or Ray lost it
        return _fail_lost(store, t, f"ray task failed: {type(exc).__name__}: {exc}", sweep_id)
    record = payload["record"]
    if record is None:
        return _fail_lost(store, t, payload["error"] or "the trial stored nothing", sweep_id)
    return _attempt(t.run_id, lambda: lifecycle.import_run(store, record, sweep_id))


def run_ray(
    trials: Sequence[Trial],
    store: RunStore,
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

    outcomes, report, rest = _settle_stored(trials, store, sweep_id, on_done)
    if not rest:
        return outcomes
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
    remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_remote_trial)
    refs: dict[Any, Trial] = {}
    try:
        refs = {remote.remote(t, device, 1): t for t in rest}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                t = refs.pop(ref)
                report(t, _ingest(store, t, lambda r=ref: ray.get(r), sweep_id))
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return outcomes
