"""The one run lifecycle: cached, resumed, started, measured, judged, failed.

Every way of running a phenomenon (``phenomlab.run``, ``phenomlab run``, the local and Ray sweep executors) goes
through :func:`run_phenomenon`. Order of events for run id ``r`` = hash(phenomenon, full config, seed):

1. take ``r``'s lock (a second process on the same config waits, then reads the first one's result);
2. finished and not forced: read back (**cached**);
3. measured earlier but not judged (e.g. a plotting bug): judge the stored data without training again;
4. otherwise **start** (or **resume** from the run's checkpoints) ``run``; its data is stored *before*
   ``signature`` and ``plot`` are called (**measured**), so nothing measured is lost to a bug in either;
5. ``signature`` and ``plot`` (**judged**) and the run is finished; :func:`replot` repeats step 5 from the store.

A diverged run is stored as failed and :class:`TrainingDiverged` propagates; Ctrl-C marks it interrupted.
A run carried out in a scratch store elsewhere (a Ray worker) comes in through :func:`export_run` and
:func:`import_run`, under the same lock and rules; a run whose process died is stored by :func:`record_failure`.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .._version import versions
from ..errors import ConfigError, InsufficientMemory, PhenomlabError, TrainingDiverged
from ..probes import threads
from ..seeding import deterministic, resolve_device, seed_everything
from ..store.files import write_atomic
from ..store.ids import canonical_json
from ..store.ids import run_id as make_run_id
from ..store.repair import index_record
from ..store.sqlite import RunStore
from . import registry
from .config import PhenomenonConfig, canonical_config
from .context import RunContext
from .verdict import Result, Verdict

Announce = Callable[[str], None]


MAX_SEED = 2**63 - 1  # the run store keeps seeds as SQLite INTEGERs (signed 64-bit)


def check_seed(seed: Any) -> int:
    """``seed`` as an int, or :class:`ConfigError` for a negative, fractional, boolean, non-numeric or too large
    (> ``MAX_SEED``) seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if seed > MAX_SEED:
        raise ConfigError(f"seed must be at most 2**63 - 1, got {seed}")
    return seed


@contextlib.contextmanager
def run_lock(run_dir: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Exclusive lock on one run folder across processes (released when the holder exits, even on kill -9);
    ``on_wait()`` is called once if another process holds it and this one has to wait."""
    with open(run_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_result(store: RunStore, row: Mapping[str, Any]) -> Result:
    """A :class:`Result` rebuilt from a stored run row (old config key names read as the new ones)."""
    verdict = Verdict.from_dict(row["verdict"]) if row.get("verdict") else None
    arts = store.artifacts(row["run_id"])
    return Result(
        phenomenon=row["phenomenon"],
        config=_stored_config(row["phenomenon"], row["config"]),
        seed=row["seed"],
        data=row.get("result") or {},
        run_id=row["run_id"],
        verdict=verdict,
        figures=list(arts.values()),
        cached=True,
        duration=row.get("duration"),
        run_dir=str(store.root / "runs" / row["run_id"]),
    )


def _stored_config(pid: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config under the phenomenon's field names: old key names are renamed, unless the phenomenon
    still declares them (then renaming would hide its own fields from ``signature`` and ``plot``)."""
    renamed = canonical_config(config)
    with contextlib.suppress(PhenomlabError):
        names = set(registry.get(pid).Config.field_names())
        if set(config) <= names and not set(renamed) <= names:
            return dict(config)
    return renamed


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
    announce: Announce | None = None,
    on_log: Callable[[str, int, Mapping[str, float]], None] | None = None,
) -> Result:
    """Run ``pid`` with a config built from ``preset`` + ``overrides`` and seed ``seed`` (see the module docstring).

    ``force=True`` recomputes a stored run (its sweep memberships are kept). ``announce(line)`` receives one line
    when the run is started, resumed, or waits for another process holding the same run. ``on_log(run_id, step,
    metrics)`` receives each metric record as it is stored while the run trains (a tracker streaming it).
    """
    seed = check_seed(seed)
    mod = registry.get(pid)
    cfg = config if config is not None else registry.make_config(pid, preset, overrides)
    cfg.validate()
    asked = resolve_device(device)
    cpu_only = getattr(mod, "RUNS_ON_CPU", False) and asked.type != "cpu"
    dev = torch.device("cpu") if cpu_only else asked  # stored as run where it ran, not where it was asked to
    store = store if store is not None else RunStore(out)
    cfg_dict = cfg.to_dict()
    rid = make_run_id(pid, cfg_dict, seed)
    run_dir = store.run_dir(rid)
    say = announce or (lambda line: None)

    with run_lock(run_dir, on_wait=lambda: say(f"waiting for another process running the same run {rid}")):
        row = store.get(rid)
        if row is not None and row["status"] == "finished" and not force:
            # the id does not hash the device (a run is one experiment wherever it ran), but its numbers do depend
            # on it: a read-back from another kind of device is said
            stored = str(row.get("device") or "cpu").split(":")[0]
            if stored != dev.type:
                say(f"run {rid} was computed on {stored}, not {dev.type}: --force recomputes it on {dev}")
            return _cached(store, row, sweep_id)
        previous = None
        if force and row is not None:
            # a finished run is set aside, not deleted: a forced re-run that fails or is interrupted puts it back
            previous = _set_aside(store, rid, run_dir) if row["status"] == "finished" else None
            store.reset_run(rid)
            _clear(run_dir)
            row = None
        measured = row.get("result") if row is not None else None
        resumed = row is not None and any(run_dir.glob("*.ckpt"))
        # seconds of earlier attempts that ended in Python (a kill -9 leaves none): a run's duration is its total
        prior = float(row.get("duration") or 0.0) if row is not None else 0.0
        if measured is not None:
            say(f"judging run {rid} from its stored measurements")
        elif resumed:
            say(f"resuming run {rid} from its checkpoints")
        else:
            say(f"running {pid} (preset {preset}, seed {seed}) as run {rid}")
        if cpu_only and measured is None:
            say(f"{pid} runs on the CPU: it is not ported to accelerators (device {asked} does not apply)")
        t0 = time.perf_counter() - prior
        try:
            # inside the try: a Ctrl-C between the row's insert and the training (start_run still writes the
            # record) must leave the run interrupted, not "running" forever
            store.start_run(
                rid, pid, cfg_dict, seed, preset=preset, device=str(dev), versions=versions(), sweep_id=sweep_id
            )
            if measured is None:
                sink = None if on_log is None else (lambda step, metrics: on_log(rid, step, metrics))
                ctx = RunContext(
                    seed=seed, device=dev, run_dir=run_dir, store=store, run_id=rid, progress=progress, on_log=sink
                )
                seed_everything(seed)
                # a reproduction owns its process: its probes may run small kernels on one thread (probes.threads);
                # on CUDA its kernels are the deterministic ones, so a seed gives one set of numbers there too
                with threads(), deterministic(dev):
                    measured = mod.run(cfg, ctx)
                store.save_result(rid, measured)  # also writes runs/<id>/run.json
            # the measurements are stored, so the run can only be judged from here on, never retrained: its
            # checkpoints and partial results are dead weight (hundreds of MB for the NTK rows)
            _drop_resume_files(run_dir)
            result = Result(phenomenon=pid, config=cfg_dict, seed=seed, data=measured, run_id=rid, run_dir=str(run_dir))
            _judge(mod, result, store, time.perf_counter() - t0)
            shutil.rmtree(run_dir / PREVIOUS, ignore_errors=True)
            return result
        except TrainingDiverged as exc:
            _fail(store, rid, str(exc), previous=previous, t0=t0)
            raise
        except KeyboardInterrupt:
            _fail(store, rid, "interrupted by the user", status="interrupted", previous=previous, t0=t0)
            raise
        except PhenomlabError as exc:
            _fail(store, rid, str(exc), previous=previous, t0=t0)
            raise
        except Exception as exc:
            if _out_of_memory(exc):
                msg = f"the config needs more memory than this machine has: {_oom_line(exc)}"
                _fail(store, rid, msg, previous=previous, t0=t0)
                raise InsufficientMemory(msg) from None
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            _fail(store, rid, error, previous=previous, t0=t0)
            raise
        except BaseException as exc:
            # SystemExit from a library (rich turns a closed stdout into one), GeneratorExit: still no run left
            # "running" behind an error Python sees
            _fail(store, rid, f"stopped by {type(exc).__name__}: {exc}", "interrupted", previous=previous, t0=t0)
            raise


def needs_run(row: Mapping[str, Any] | None) -> bool:
    """Whether :func:`run_phenomenon` would train for a run whose stored row is ``row`` (``None``: not stored).

    ``False`` when the run is finished (it is read back) or its measurements are stored (it is only judged).
    """
    return row is None or (row["status"] != "finished" and row.get("result") is None)


class RunFailed(RuntimeError):
    """A run that failed in another process or store; its error is stored with it."""


def export_run(store: RunStore, rid: str) -> dict[str, Any] | None:
    """Everything stored about run ``rid`` (row, metrics, figure bytes) as plain data, for :func:`import_run`.

    A run computed in a scratch store on another machine (a Ray worker) travels to the driver this way.
    """
    row = store.get(rid)
    if row is None:
        return None
    figures = {
        name: (Path(p).name, Path(p).read_bytes()) for name, p in store.artifacts(rid).items() if Path(p).is_file()
    }
    return {"row": row, "metrics": store.metrics(rid), "figures": figures}


def import_run(store: RunStore, record: Mapping[str, Any], sweep_id: str | None = None) -> Result:
    """Store a run that :func:`run_phenomenon` carried out in another store (see :func:`export_run`).

    Under the run's lock, as for a local run: a run already finished here is read back (``cached``) and the
    record is dropped; otherwise the record's metrics, figures, measurements and ending are stored. A record
    of a failed or interrupted run is stored as such and :class:`RunFailed` is raised with its error.
    """
    row = record["row"]
    rid = row["run_id"]
    run_dir = store.run_dir(rid)
    with run_lock(run_dir):
        here = store.get(rid)
        if here is not None and here["status"] == "finished":
            return _cached(store, here, sweep_id)
        store.start_run(
            rid,
            row["phenomenon"],
            row["config"],
            row["seed"],
            preset=row.get("preset"),
            device=row.get("device"),
            versions=row.get("versions"),
            sweep_id=sweep_id,
        )
        store.log_many(
            (rid, name, int(s), None if v != v else float(v))
            for name, (steps, values) in record.get("metrics", {}).items()
            for s, v in zip(steps, values, strict=True)
        )
        for name, (filename, data) in record.get("figures", {}).items():
            path = run_dir / Path(filename).name
            path.write_bytes(data)
            store.add_artifact(rid, name, path)
        if row.get("result") is not None:
            store.save_result(rid, row["result"])
        if row["status"] == "finished":
            store.finish_run(rid, row["passed"], row["verdict"], row["result"], row.get("duration") or 0.0)
            store.write_record(rid)
            result = load_result(store, store.get(rid) or row)
            result.cached = False
            return result
        error = row.get("error") or f"run ended with status {row['status']!r} in another process"
        _fail(store, rid, error, status="interrupted" if row["status"] == "interrupted" else "failed")
        raise RunFailed(error.splitlines()[0])


def record_failure(
    store: RunStore,
    pid: str,
    config: Mapping[str, Any],
    seed: int,
    error: str,
    preset: str | None = None,
    sweep_id: str | None = None,
) -> None:
    """Store a run that failed outside :func:`run_phenomenon` (its process died, or a remote task was lost).

    Under the run's lock; a finished run is left as it is.
    """
    rid = make_run_id(pid, dict(config), seed)
    with run_lock(store.run_dir(rid)):
        here = store.get(rid)
        if here is not None and here["status"] == "finished":
            return
        if here is None:
            store.start_run(rid, pid, config, seed, preset=preset, sweep_id=sweep_id)
        _fail(store, rid, error)


def replot(store: RunStore, rid: str) -> Result:
    """Judge and plot a stored run again from its stored data (after a fix to ``signature`` or ``plot``)."""
    row = store.get(rid)
    if row is None:
        raise PhenomlabError(f"no run {rid!r} in {store.root}")
    if row.get("result") is None:
        raise PhenomlabError(f"run {rid} has no stored measurements to re-plot (status {row['status']})")
    mod = registry.get(row["phenomenon"])
    result = load_result(store, row)
    result.cached, result.verdict, result.figures = False, None, []
    with run_lock(store.run_dir(rid)):
        _judge(mod, result, store, row.get("duration") or 0.0)
    return result


def _judge(mod: Any, result: Result, store: RunStore, duration: float) -> None:
    """``signature`` and ``plot`` on stored data; the run is finished with its verdict and figures."""
    rid, run_dir = result.run_id, Path(result.run_dir or ".")
    assert rid is not None
    result.verdict = mod.signature(result)
    result.figures = [str(p) for p in mod.plot(result, run_dir)]
    for p in result.figures:
        store.add_artifact(rid, Path(p).stem, p)
    result.duration = duration
    store.finish_run(rid, result.verdict.passed, result.verdict.to_dict(), result.data, duration)  # + run.json


_OOM_MARKERS = ("not enough memory", "defaultcpuallocator", "out of memory", "can't allocate memory")


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: MemoryError, or torch's RuntimeError from the CPU or CUDA allocator."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)
    )


def _oom_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    hits = [ln for ln in lines if any(m in ln.lower() for m in _OOM_MARKERS)]
    return (hits or lines or [type(exc).__name__])[0]


def _cached(store: RunStore, row: Mapping[str, Any], sweep_id: str | None) -> Result:
    """A finished run read back, and counted as a member of ``sweep_id``."""
    if sweep_id:
        store.add_sweep(sweep_id, row["phenomenon"], {}, [row["run_id"]])
    return load_result(store, row)


#: where a forced re-run keeps the finished run it replaces (its record and figures) until it finishes
PREVIOUS = ".previous"


def _set_aside(store: RunStore, rid: str, run_dir: Path) -> dict[str, Any]:
    """The finished run's record, its figures moved into ``run_dir/PREVIOUS`` (kept there across a crash)."""
    record = store.record(rid)
    keep = run_dir / PREVIOUS
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir()
    for path in store.artifacts(rid).values():
        p = Path(path)
        if p.is_file() and p.resolve().parent == run_dir.resolve():
            p.rename(keep / p.name)
    write_atomic(keep / "run.json", canonical_json(record))
    return record


def _restore(store: RunStore, rid: str, run_dir: Path, record: Mapping[str, Any]) -> None:
    """Put back the finished run that a failed forced re-run replaced: its index rows, figures and run.json."""
    keep = run_dir / PREVIOUS
    _clear(run_dir)  # the failed re-run's files
    for p in keep.iterdir():
        if p.name != "run.json":
            p.rename(run_dir / p.name)
    store.delete(rid)
    index_record(store, rid, record)
    store.write_record(rid)
    shutil.rmtree(keep, ignore_errors=True)


def _fail(
    store: RunStore,
    rid: str,
    error: str,
    status: str = "failed",
    previous: Mapping[str, Any] | None = None,
    t0: float | None = None,
) -> None:
    """Store the run as failed, or put back the finished run a forced re-run was replacing (``previous``):
    a finished run is never downgraded by a later failure on its id. ``t0``: the run's start on the
    ``perf_counter`` clock, earlier attempts included (its duration so far is stored)."""
    # the store itself may be what failed (a full disk): the original error must still reach the caller
    if previous is not None:
        try:
            _restore(store, rid, store.run_dir(rid), previous)
            return
        except Exception:  # then at least the failure is stored; the old record stays in PREVIOUS
            pass
    with contextlib.suppress(Exception):
        duration = None if t0 is None else time.perf_counter() - t0
        store.fail_run(rid, error, status=status, duration=duration)  # also rewrites run.json when it can


def _drop_resume_files(run_dir: Path) -> None:
    for p in [*run_dir.glob("*.ckpt"), *run_dir.glob("*.part.pt")]:
        p.unlink(missing_ok=True)


def _clear(run_dir: Path) -> None:
    # keep the lock file: a process waiting on it must lock the same file as the one holding it
    for p in run_dir.iterdir():
        if p.name in (".lock", PREVIOUS):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
