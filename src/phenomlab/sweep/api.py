"""``phenomlab.sweep``: expand a grid x seeds, skip stored runs, run the rest, return a DataFrame."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import PhenomlabError
from ..phenomena import registry
from ..seeding import resolve_device
from ..store.sqlite import RunStore, store_argument
from .executors import Outcome, Progress, run_local, run_ray
from .grid import (
    MAX_TRIALS,
    Trial,
    check_size,
    expand,
    parse_grid,
    parse_seed_ranges,
    seed_list,
    sweep_id,
)

EXECUTORS = ("local", "ray")


@dataclass
class SweepResult:
    sweep_id: str
    phenomenon: str
    trials: list[Trial]
    outcomes: list[Outcome]
    store: RunStore

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def rows(self) -> list[dict[str, Any]]:
        return [r for t in self.trials if (r := self.store.get(t.run_id)) is not None]

    def frame(self) -> Any:
        """One row per run: seed, status, passed, the config values that vary, and the verdict numbers."""
        return runs_frame(self.rows())

    def compare(self) -> Any:
        from .compare import aggregate, to_frame

        return to_frame(aggregate(self.rows()))


def runs_frame(rows: Iterable[Mapping[str, Any]]) -> Any:
    """Stored runs as a pandas DataFrame (config values and verdict numbers as columns)."""
    import pandas as pd

    from .compare import run_scalars

    recs = []
    for r in rows:
        rec = {
            "run_id": r["run_id"],
            "phenomenon": r["phenomenon"],
            "seed": r["seed"],
            "status": r["status"],
            "passed": r.get("passed"),
            "duration": r.get("duration"),
        }
        rec.update({f"config.{k}": (str(v) if isinstance(v, list) else v) for k, v in r["config"].items()})
        rec.update(run_scalars(r) if r["status"] == "finished" else {})
        recs.append(rec)
    return pd.DataFrame.from_records(recs)


def plan(
    pid: str,
    grid: Mapping[str, Sequence[Any]] | Iterable[str] | None,
    seeds: str | int | Sequence[int] = "0",
    preset: str = "quick",
    base: Mapping[str, Any] | None = None,
    max_trials: int | None = MAX_TRIALS,
) -> tuple[str, list[Trial]]:
    """The sweep id and its validated trials, without running anything.

    The number of trials is counted from the grid and seed sizes first: above ``max_trials`` (``None``: no
    limit) :class:`~phenomlab.sweep.grid.TooManyTrials` is raised before any trial is built.
    """
    registry.get(pid)
    g = parse_grid(grid)
    ranges = parse_seed_ranges(seeds)
    check_size(g, ranges, max_trials)
    s = seed_list(ranges)
    trials = expand(pid, g, s, preset, base)
    if len({t.run_id for t in trials}) != len(trials):
        raise PhenomlabError("the grid repeats a configuration (two values parse to the same config)")
    return sweep_id(pid, preset, g, s, base), trials


def sweep(
    pid: str,
    grid: Mapping[str, Sequence[Any]] | Iterable[str] | None = None,
    seeds: str | int | Sequence[int] = "0",
    preset: str = "quick",
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    device: str | None = None,
    store: str | Path | None = None,
    base: Mapping[str, Any] | None = None,
    on_done: Progress | None = None,
    max_trials: int | None = MAX_TRIALS,
    confirm: bool = False,
    on_start: Callable[[str, Sequence[Trial]], None] | None = None,
    force: bool = False,
    *,
    out: str | Path | None = None,
) -> SweepResult:
    """Run phenomenon ``pid`` over ``grid`` (``{"weight_decay": [0, 0.5]}`` or ``["weight_decay=0,0.5"]``) x ``seeds``.

    ``seeds`` is ``"0-4"``, ``"0,3,7"``, one int (that seed) or a list of ints. Runs already finished in the
    store are skipped; a failing trial is stored as failed and the others go on. A sweep of more than
    ``max_trials`` trials (default 1,000) is refused before anything is built unless ``confirm=True``.
    ``executor="ray"`` sends each trial to Ray (``address="auto"`` joins a cluster). ``on_start(sweep_id,
    trials)`` is called once the trials are planned, ``on_done(trial, outcome)`` as each one ends.
    ``force=True`` recomputes trials the store already has finished (their sweep memberships are kept).
    ``store`` is the run store (default ``$PHENOMLAB_HOME``, else ``./phenomlab-runs``); ``out=`` its deprecated
    old name.
    """
    if executor not in EXECUTORS:
        raise PhenomlabError(f"unknown executor {executor!r}; choose one of {EXECUTORS}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PhenomlabError(f"workers must be an integer >= 1, got {workers!r}")
    if force and executor != "local":
        raise PhenomlabError("force is supported by the local executor only")
    if executor == "local":
        resolve_device(device)  # a bad device fails the sweep once, not each trial
    sid, trials = plan(pid, grid, seeds, preset, base, max_trials=None if confirm else max_trials)
    if force:
        trials = [replace(t, force=True) for t in trials]
    run_store = RunStore(store_argument(store, out))
    run_store.add_sweep(
        sid,
        pid,
        {
            "grid": {k: list(map(str, v)) for k, v in parse_grid(grid).items()},
            "seeds": sorted({t.seed for t in trials}),
            "preset": preset,
            "base": {k: str(v) for k, v in (base or {}).items()},
        },
        [t.run_id for t in trials],
    )
    if on_start:
        on_start(sid, trials)
    if executor == "local":
        outcomes = run_local(trials, run_store, workers=workers, device=device, sweep_id=sid, on_done=on_done)
    else:
        outcomes = run_ray(
            trials, run_store, address=address, workers=workers, device=device, sweep_id=sid, on_done=on_done
        )
    return SweepResult(sid, pid, trials, outcomes, run_store)
