"""The ``phenomlab`` command line: list, run, runs, show, sweep, compare, report, export, store check|rebuild.

Exit codes: 0 the verdict passed, 1 it did not (or the run failed), 2 bad input or an unusable store
(one line on stderr, never a traceback). Every command that reads or writes runs takes ``--store DIR``
(default ``$PHENOMLAB_HOME``, else ``./phenomlab-runs``); ``--out`` is kept as a hidden old name of it.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from .errors import PhenomlabError, TrainingDiverged
from .report.tables import Tabular

STORE_EPILOG = "Run store: --store DIR, else $PHENOMLAB_HOME, else ./phenomlab-runs."


#: click's UsageError, found through a public subclass: typer >= 0.2x vendors its own copy of click
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage errors (unknown option or command, missing argument, bad value) as the one ``error:`` line every
    other bad input gets, instead of a usage block and a framed message."""

    def _one_line(self, e: Exception, group_ctx: Any = None) -> NoReturn:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group prints its help: not an error
            raise e
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            where = ctx.command_path
        elif group_ctx is not None:  # some parse errors carry no context: name the subcommand being parsed
            where = " ".join(filter(None, (group_ctx.command_path, group_ctx.invoked_subcommand)))
        else:
            where = "phenomlab"
        if ctx is not None and getattr(e, "possibilities", None):
            # click suggests every option, hidden ones too: never point a user at a deprecated name like --out
            hidden = {
                o for p in ctx.command.params if getattr(p, "hidden", False) for o in (*p.opts, *p.secondary_opts)
            }
            e.possibilities = [o for o in e.possibilities if o not in hidden]  # type: ignore[attr-defined]
        raise _error(f"{e.format_message()} (see '{where} --help')", e.exit_code)  # type: ignore[attr-defined]

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _UsageError as e:
            self._one_line(e)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as e:
            self._one_line(e, ctx)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproduce, measure and sweep the phenomena of deep learning science. " + STORE_EPILOG,
)
store_app = typer.Typer(
    no_args_is_help=True,
    help="Check the run store, or rebuild its index from the run folders. " + STORE_EPILOG,
)
app.add_typer(store_app, name="store")
console = Console()
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        from ._version import versions

        v = versions()
        console.print(f"phenomlab {v['phenomlab']} (torch {v['torch']}, Python {v['python']})", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the versions and exit"),
    ] = False,
) -> None:
    """Reproduce, measure and sweep the phenomena of deep learning science."""


StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help="run store directory (default: $PHENOMLAB_HOME, else ./phenomlab-runs)"),
]
LegacyOut = Annotated[Path | None, typer.Option("--out", hidden=True, help="old name of --store")]
FormatOpt = Annotated[str, typer.Option("--format", help="table (folds at the terminal width), csv or json")]
PhenomenonOpt = Annotated[str | None, typer.Option("--phenomenon", help="every stored run of this phenomenon")]

#: OSErrors about the machine (disk full, permissions, missing folders): one line, exit 2
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def _error(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False)
    return typer.Exit(code)


def _guard(fn: F) -> F:
    """Turn user errors into one line on stderr and exit 2 instead of a traceback; print deprecated config
    keys as one warning line each; merge the hidden ``--out`` into ``--store``."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        legacy = kwargs.get("legacy_out")
        if legacy is not None:
            if kwargs.get("store") not in (None, legacy):
                raise _error("give the run store once: --store (or its old name --out), not both")
            kwargs["store"], kwargs["legacy_out"] = legacy, None
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning(warnings.showwarning)
                return fn(*args, **kwargs)
        except PhenomlabError as exc:
            raise _error(str(exc)) from None
        except TrainingDiverged as exc:
            err.print(f"[bold red]run failed:[/] {escape(str(exc))} (stored as failed)", highlight=False)
            raise typer.Exit(1) from None
        except MemoryError:
            raise _error("out of memory: the machine has not enough memory for this command") from None
        except OSError as exc:
            if exc.errno not in _USER_ERRNOS:
                raise
            where = f": {exc.filename}" if exc.filename else ""
            raise _error(f"{exc.strerror or exc}{where}") from None
        except KeyboardInterrupt:
            err.print("interrupted: finished work is stored; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(original: Callable[..., None]) -> Callable[..., None]:
    seen: set[str] = set()

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        config = sys.modules.get("phenomlab.phenomena.config")  # loaded by whatever issued the warning
        if config is None or not issubclass(category, config.ConfigKeyDeprecated):
            original(message, category, *args, **kwargs)
            return
        text = str(message)
        if text not in seen:  # the config may be built more than once per command
            seen.add(text)
            err.print(f"warning: {text}", highlight=False, markup=False)

    return show


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x,y"]`` -> ``{"a": "1", "b": "x,y"}``; values are parsed later by field type.

    A key given twice (also as its old, deprecated name) is refused rather than silently using one value.
    """
    from .phenomena.config import DEPRECATED_KEYS

    out: dict[str, str] = {}
    given: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise PhenomlabError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise PhenomlabError(f"--set expects key=value, got {item!r}")
        canon = DEPRECATED_KEYS.get(key, key)
        if canon in given:
            raise PhenomlabError(f"--set gives {canon!r} twice ({given[canon]} and {item.strip()}); give it once")
        given[canon] = item.strip()
        out[key] = value.strip()
    return out


def open_store(path: Path | None, write: bool = False) -> Any:
    """The run store at ``path``; reading never creates one (a missing store is a one-line error)."""
    from .store.sqlite import RunStore

    if not write:
        return RunStore(path, readonly=True)
    RunStore(path, readonly=True)  # exists and is whole; only then open it for writing
    return RunStore(path)


def resolve_run(store: Any, ref: str) -> dict[str, Any]:
    """The run whose id is ``ref`` or uniquely starts with it (a one-line error otherwise)."""
    return store.resolve_run(ref)


#: where ``export`` and ``run --log`` write by default, per tracker
DEFAULT_LOG_DIR = {"tensorboard": "phenomlab-tb", "mlflow": "phenomlab-mlflow"}


def phenomenon_runs(store: Any, phenomenon: str, status: str | None = None) -> list[dict[str, Any]]:
    """The stored runs of ``phenomenon``; an id neither stored nor in the catalogue is a typo (one-line error)."""
    from .phenomena import registry

    rows = store.list_runs(phenomenon, status)
    if not rows:
        registry.entry(phenomenon)
    return rows


def selected_runs(
    store: Any, refs: list[str] | None, sweep_ref: str | None, verb: str, phenomenon: str | None = None
) -> list[dict[str, Any]]:
    """The runs of sweep ``sweep_ref``, else every run of ``phenomenon``, else the runs named by ``refs`` (id
    prefixes); ``verb`` names the command."""
    if sum(x is not None for x in (refs or None, sweep_ref, phenomenon)) > 1:
        raise PhenomlabError(f"{verb}: name runs, --sweep or --phenomenon, not several")
    if sweep_ref:
        sw = store.sweep(sweep_ref)
        if sw is None:
            raise PhenomlabError(f"no sweep {sweep_ref!r} in {store.root}")
        return [r for rid in sw["run_ids"] if (r := store.get(rid)) is not None]
    if phenomenon:
        rows = phenomenon_runs(store, phenomenon)
        if not rows:
            raise PhenomlabError(f"no runs of {phenomenon!r} in {store.root} (see `phenomlab runs`)")
        return rows
    if refs:
        return [_run_or_hint(store, ref, verb) for ref in refs]
    raise PhenomlabError(f"name runs to {verb}, --sweep SWEEP or --phenomenon ID")


def _run_or_hint(store: Any, ref: str, verb: str) -> dict[str, Any]:
    """``resolve_run``, but a phenomenon id given where a run id belongs gets pointed to ``--phenomenon``."""
    from .phenomena import registry

    try:
        return resolve_run(store, ref)
    except PhenomlabError:
        if registry.known(ref):
            raise PhenomlabError(
                f"{ref!r} is a phenomenon, not a run id: `phenomlab {verb} --phenomenon {ref}` takes all its runs"
            ) from None
        raise


@app.command("list", epilog=STORE_EPILOG)
@_guard
def list_cmd(
    config: Annotated[str | None, typer.Option("--config", help="show the config fields of this phenomenon")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """The catalogue of phenomena with their status: reproduced or not at quick scale (docs/CATALOG.md)."""
    from .phenomena import registry

    _check_format(fmt)
    if config:
        mod = registry.get(config)
        rows = [[name, tp, default, help_] for name, tp, default, help_ in mod.Config.describe()]
        render(
            Tabular(f"{config}: config (defaults = quick preset)", ["key", "type", "default", "description"], rows), fmt
        )
        if fmt == "table":
            for preset, over in mod.PRESETS.items():
                console.print(f"preset [bold]{preset}[/]: {escape(str(over or '(defaults)'))}")
        return
    rows = [[e.id, e.tier, e.status, e.title, e.source] for e in registry.CATALOG]
    colour = {"reproduced": "green", "not reproduced": "yellow"}
    styles = {"status": lambda v: colour.get(v, "dim")}
    columns = ["id", "tier", "status", "phenomenon", "source"]
    if fmt == "table" and console.width < 100:
        # 80 columns cannot hold five columns of prose: the source goes under the phenomenon's title
        rows = [[i, t, st, f"{title} ({src})"] for i, t, st, title, src in rows]
        columns = columns[:4]
    render(Tabular("phenomlab catalogue", columns, rows, styles, whole=("id",)), fmt)


def _check_format(fmt: str) -> None:
    from .report.tables import FORMATS

    if fmt not in FORMATS:
        raise PhenomlabError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")


def render(tables: Any, fmt: str) -> None:
    from .report.tables import render as render_tables

    render_tables(tables, fmt, console)


@app.command(epilog=STORE_EPILOG)
@_guard
def run(
    pid: Annotated[str, typer.Argument(metavar="ID", help="phenomenon id (see `phenomlab list`)")],
    preset: Annotated[str, typer.Option(help="smoke (the pipeline only), quick (minutes on a CPU) or paper")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config value: key=value")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (a non-negative integer; default 0)")] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="several seeds, e.g. 0-2 or 0,3,7: a verdict per seed and the pass rate (in parallel)"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="with --seeds: parallel processes (default: one a seed, at most one a core)")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu (default: the catalogue's numbers are the CPU's), cuda, cuda:1, auto")
    ] = None,
    store: StoreOpt = None,
    legacy_out: LegacyOut = None,
    force: Annotated[bool, typer.Option(help="recompute even if the run is stored")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    log: Annotated[
        str | None, typer.Option("--log", help="also stream metrics while training to: tensorboard or mlflow")
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option("--log-dir", help="the tracker's folder (default phenomlab-tb / phenomlab-mlflow)")
    ] = None,
) -> None:
    """Reproduce one phenomenon and print its verdict (exit 0 if it passed, 1 if not).

    With --seeds, run several seeds (as a sweep without a grid, one process per seed up to one per core unless
    --workers says otherwise, each with cores // processes torch threads) and print each seed's verdict and the pass
    rate (exit 0 only if every seed passed). A seed's numbers equal those of --seed S run on as many threads; on
    another thread count float rounding differs and training can amplify it (docs/BENCHMARKS.md, "Several seeds at
    once")."""
    from .phenomena.lifecycle import run_phenomenon

    if log_dir is not None and log is None:
        raise PhenomlabError("--log-dir is the folder of --log: add --log tensorboard or --log mlflow")
    if seeds is not None:
        if seed is not None:
            raise PhenomlabError("give --seed or --seeds, not both")
        if log is not None:
            raise PhenomlabError("--log streams one run: use it with --seed, not --seeds")
        _run_seeds(pid, preset, parse_sets(set_), seeds, workers, device, store, force)
    if workers is not None:
        raise PhenomlabError("--workers goes with --seeds")
    seed = 0 if seed is None else seed
    stream = None
    if log is not None:
        from .phenomena import registry
        from .report.tracking import MetricStream
        from .store.sqlite import RunStore

        # bad input must not leave a new store and log folder behind
        registry.make_config(pid, preset, parse_sets(set_)).validate()

        stream = MetricStream(log, log_dir or Path(DEFAULT_LOG_DIR.get(log, "phenomlab-logs")), RunStore(store))
    try:
        result = run_phenomenon(
            pid,
            preset=preset,
            overrides=parse_sets(set_),
            seed=seed,
            device=device,
            out=store,
            store=stream.store if stream is not None else None,
            force=force,
            progress=not quiet,
            announce=lambda line: err.print(line, highlight=False, markup=False),
            on_log=stream,
        )
        if stream is not None:
            where = stream.finish(stream.store.get(result.run_id))
            err.print(f"{log}: run {result.run_id[:8]} logged to {stream.log_dir} ({where})", markup=False)
    finally:
        if stream is not None:
            stream.close()
    if result.cached:
        console.print(f"run {result.run_id}: read from the store (finished earlier; --force recomputes)")
    _print_result(result)
    _note_not_reproduced(pid, preset, bool(result.passed))
    raise typer.Exit(0 if result.passed else 1)


def _note_not_reproduced(pid: str, preset: str, passed: bool) -> None:
    from .phenomena import registry

    if preset == "smoke" and not passed:
        console.print(
            "note: the smoke preset runs seconds of training to check the pipeline; its verdict says nothing about "
            f"the phenomenon (use --preset quick). Training ran, was stored and judged: the pipeline works for {pid}",
            markup=False,
            highlight=False,
        )
    if preset == "quick" and not registry.entry(pid).reproduced:
        console.print(
            f"note: the catalogue marks {pid} not reproduced at quick scale: its quick verdict fails on some or all "
            f"of seeds 0-2 (docs/CATALOG.md, docs/phenomena/{pid}.md)",
            markup=False,
            highlight=False,
        )


def _run_seeds(
    pid: str,
    preset: str,
    overrides: dict[str, Any],
    seeds: str,
    workers: int | None,
    device: str | None,
    store: Path | None,
    force: bool,
) -> NoReturn:
    from .phenomena.lifecycle import load_result
    from .sweep.api import sweep as run_sweep
    from .sweep.grid import MAX_TRIALS, TooManyTrials, count_seeds, parse_seed_ranges

    # bad seeds fail here, before any work; more processes than cores would only share them (and each loads torch).
    # Counted, not listed: "0-99999999999999999999" as a list took 24 GB before the size check could refuse it.
    n_workers = workers if workers is not None else min(count_seeds(parse_seed_ranges(seeds)), os.cpu_count() or 1)

    def on_start(sid: str, trials: Any) -> None:
        err.print(f"{pid}: {len(trials)} seeds as sweep {sid} ({n_workers} process(es))", markup=False)

    def on_done(trial: Any, o: Any) -> None:
        what = {True: "passed", False: "not reproduced", None: o.status}[o.passed]
        err.print(f"  seed {trial.seed}: {what}", markup=False, highlight=False)

    try:
        res = run_sweep(
            pid,
            None,
            seeds,
            preset,
            workers=n_workers,
            device=device,
            store=store,
            base=overrides,
            on_done=on_done,
            on_start=on_start,
            force=force,
        )
    except TooManyTrials:
        raise PhenomlabError(
            f"`run --seeds` takes at most {MAX_TRIALS:,} seeds; `phenomlab sweep {pid} --seeds {seeds} --yes` runs more"
        ) from None
    passed = 0
    for t in sorted(res.trials, key=lambda t: t.seed):
        row = res.store.get(t.run_id)
        if row is None or row["status"] != "finished":
            error = ((row or {}).get("error") or "no run stored").splitlines()[0]
            console.print(f"[bold]{pid}[/] seed {t.seed}  run {t.run_id}  [red]FAILED[/]: {escape(error)}")
            continue
        result = load_result(res.store, row)
        passed += bool(result.passed)
        _print_result(result, checks=not result.passed)
    console.print(f"{pid}: passed on {passed} of {len(res.trials)} seeds ({seeds})  sweep {res.sweep_id}")
    _note_not_reproduced(pid, preset, passed == len(res.trials))
    raise typer.Exit(0 if passed == len(res.trials) else 1)


def _print_result(result: Any, checks: bool = True) -> None:
    v = result.verdict
    colour = "green" if v.passed else "red"
    console.print(
        f"[bold]{result.phenomenon}[/] seed {result.seed}  run {result.run_id}"
        + (f"  ({result.duration:.1f} s)" if result.duration else "")
    )
    console.print(
        f"[bold {colour}]{'PASSED' if v.passed else 'NOT REPRODUCED'}[/]: {escape(str(v.summary))}", highlight=False
    )
    for c in v.checks if checks else ():
        console.print(f"  [{'green' if c.passed else 'red'}]{escape(str(c))}[/]", highlight=False)
    for f in result.figures:
        gone = "" if Path(f).exists() else " (missing: `phenomlab show RUN --replot` draws it again)"
        console.print(f"figure: {f}{gone}", highlight=False, markup=False)


@app.command(epilog=STORE_EPILOG)
@_guard
def runs(
    phenomenon: Annotated[str | None, typer.Option(help="only this phenomenon")] = None,
    status: Annotated[str | None, typer.Option(help="running, finished, failed or interrupted")] = None,
    store: StoreOpt = None,
    legacy_out: LegacyOut = None,
    fmt: FormatOpt = "table",
) -> None:
    """Table of the runs in the store."""
    import datetime

    from .store.sqlite import STATUSES

    _check_format(fmt)

    if status is not None and status not in STATUSES:
        raise PhenomlabError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
    st = open_store(store)
    rows = phenomenon_runs(st, phenomenon, status) if phenomenon else st.list_runs(None, status)
    verdict = {None: None, True: "pass", False: "fail"}
    table = Tabular(
        f"runs ({len(rows)})",
        ["run_id", "phenomenon", "preset", "seed", "status", "verdict", "seconds", "created"],
        [
            [
                r["run_id"],
                r["phenomenon"],
                r["preset"],
                r["seed"],
                r["status"],
                verdict[None if r["passed"] is None else bool(r["passed"])],
                round(r["duration"], 1) if r.get("duration") else None,
                datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M"),
            ]
            for r in rows
        ],
        {"verdict": lambda v: {"pass": "green", "fail": "red"}.get(v, "")},
        whole=("run_id",),
    )
    render(table, fmt)


@app.command(epilog=STORE_EPILOG)
@_guard
def show(
    ref: Annotated[str, typer.Argument(metavar="RUN", help="run id (a unique prefix is enough)")],
    replot: Annotated[
        bool,
        typer.Option(
            "--replot",
            help="judge and plot the run again from its stored measurements (e.g. after a fix to its plot)",
        ),
    ] = False,
    store: StoreOpt = None,
    legacy_out: LegacyOut = None,
    fmt: FormatOpt = "table",
) -> None:
    """Verdict, metrics summary and figure paths of one stored run (exit 1 if it has not finished).

    --format csv prints the metrics summary; --format json the run, its verdict and the summary."""
    from .phenomena.lifecycle import replot as replot_run

    _check_format(fmt)
    st = open_store(store, write=replot)
    row = resolve_run(st, ref)
    result = None
    if replot:
        result = replot_run(st, row["run_id"])
        row = st.get(row["run_id"])
    metrics = Tabular("metrics", ["name", "points", "first", "last", "min", "max"])
    for name, (_, vals) in st.metrics(row["run_id"]).items():
        if finite := [v for v in vals if not math.isnan(v)]:
            metrics.rows.append([name, len(vals), vals[0], vals[-1], min(finite), max(finite)])
    if fmt != "table":
        _show_machine_readable(row, metrics, fmt)
    else:
        _show_table(row, metrics, result, st)
    if row["status"] != "finished":
        raise typer.Exit(1)
    if replot:
        raise typer.Exit(0 if row["passed"] else 1)


def _show_table(row: dict[str, Any], metrics: Tabular, replotted: Any, st: Any) -> None:
    from .phenomena.lifecycle import load_result

    if replotted is not None:
        console.print(f"run {row['run_id']}: judged and plotted again from its stored measurements")
    console.print(
        f"[bold]{row['phenomenon']}[/] run {row['run_id']}  seed {row['seed']}  preset {row['preset']}"
        f"  status {row['status']}"
    )
    console.print(f"config: {row['config']}", highlight=False, markup=False)
    if row["status"] != "finished":
        if row.get("error"):
            console.print(f"[red]error:[/] {escape(row['error'].splitlines()[0])}", highlight=False)
        if row.get("result") is not None:
            console.print(
                f"its measurements are stored: `phenomlab show {row['run_id']} --replot` judges and plots them",
                markup=False,
            )
    else:
        _print_result(replotted if replotted is not None else load_result(st, row))
    if metrics.rows:
        render(metrics, "table")


def _show_machine_readable(row: dict[str, Any], metrics: Tabular, fmt: str) -> None:
    if fmt == "csv":
        render(metrics, "csv")
        return
    import json

    from .report.tables import jsonable

    keys = ("run_id", "phenomenon", "preset", "seed", "status", "passed", "duration", "config", "verdict", "error")
    out = {k: row.get(k) for k in keys} | {"figures": row.get("figures"), "metrics": metrics.records()}
    console.out(json.dumps(jsonable(out), indent=1, default=str), highlight=False)


@app.command(epilog=STORE_EPILOG)
@_guard
def sweep(
    pid: Annotated[str, typer.Argument(metavar="ID", help="phenomenon id")],
    grid: Annotated[list[str] | None, typer.Option("--grid", help="key=v1,v2,... (repeatable)")] = None,
    seeds: Annotated[str, typer.Option(help="seeds: 0-4, or 0,2,7")] = "0",
    preset: Annotated[str, typer.Option(help="smoke, quick or paper")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="fixed override for every trial: key=value")] = None,
    executor: Annotated[str, typer.Option(help="local or ray")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address ('auto' joins a running one)")] = None,
    workers: Annotated[int, typer.Option(help="parallel local processes / CPUs of a local Ray")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu (default), cuda, cuda:1, auto (CUDA when present)")] = None,
    store: StoreOpt = None,
    legacy_out: LegacyOut = None,
    yes: Annotated[bool, typer.Option("--yes", help="run a sweep of more than 1,000 trials")] = False,
    force: Annotated[bool, typer.Option(help="recompute runs the store has finished (local executor)")] = False,
) -> None:
    """Run a phenomenon over a grid x seeds; stored runs are skipped (unless --force), failures do not stop the rest.

    Exit 0 when every trial ran, whatever its verdict (`phenomlab compare` gives the pass rates), 1 if one failed."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .sweep.api import sweep as run_sweep

    if address is not None and executor != "ray":
        raise PhenomlabError("--address names a Ray cluster: add --executor ray")
    counts = {"finished": 0, "cached": 0, "failed": 0, "interrupted": 0, "passed": 0}
    bar = Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
    )
    task = bar.add_task("sweep", total=None, info="")
    with contextlib.ExitStack() as shown:

        def on_start(sid: str, trials: Any) -> None:
            # the bar appears once the sweep is planned: bad input gets its one line and nothing else
            err.print(f"sweep {sid}: {len(trials)} trials ({executor} executor, {workers} worker(s))")
            bar.update(task, total=len(trials))
            shown.enter_context(bar)

        def on_done(trial: Any, o: Any) -> None:
            counts[o.status] = counts.get(o.status, 0) + 1
            counts["passed"] += bool(o.passed)
            if o.status == "failed":
                bar.console.print(f"[red]failed[/] {trial.label}: {(o.error or '').splitlines()[0]}", highlight=False)
            bar.update(
                task,
                advance=1,
                info=f"{counts['passed']} passed, {counts['failed']} failed, {counts['cached']} from store",
            )

        res = run_sweep(
            pid,
            grid,
            seeds,
            preset,
            executor=executor,
            workers=workers,
            address=address,
            device=device,
            store=store,
            base=parse_sets(set_),
            on_done=on_done,
            confirm=yes,
            on_start=on_start,
            force=force,
        )
    console.print(
        f"sweep {res.sweep_id}: {counts['finished']} run, {counts['cached']} read from the store, "
        f"{counts['failed']} failed; verdict passed in {counts['passed']}/{len(res.trials)}"
    )
    console.print(f"compare: phenomlab compare --sweep {res.sweep_id}   report: phenomlab report {res.sweep_id}")
    raise typer.Exit(1 if counts["failed"] else 0)


@app.command(epilog=STORE_EPILOG)
@_guard
def compare(
    refs: Annotated[list[str] | None, typer.Argument(metavar="RUN...", help="run ids (prefixes)")] = None,
    sweep_ref: Annotated[str | None, typer.Option("--sweep", help="a sweep id (a unique prefix is enough)")] = None,
    phenomenon: PhenomenonOpt = None,
    store: StoreOpt = None,
    legacy_out: LegacyOut = None,
    csv: Annotated[Path | None, typer.Option(help="also write the table as CSV")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Aggregate runs across seeds: mean and 95% bootstrap CI per metric (with >= 3 seeds), verdict pass rate."""
    import json

    from .report.tables import jsonable
    from .store.aggregate import MIN_CI_N, aggregate, to_frame

    _check_format(fmt)

    st = open_store(store)
    rows = selected_runs(st, refs, sweep_ref, "compare", phenomenon)
    groups = aggregate(rows)
    tables = []
    for g in groups:
        pr = g["pass_rate"]
        # "failed" is the run status (an exception, not a failed verdict): said only when it happened
        crashed = f", {g['failed']} run(s) failed" if g["failed"] else ""
        title = (
            f"{g['phenomenon']}  {g['label']}  seeds {g['seeds']}  pass rate "
            f"{'n/a' if math.isnan(pr) else f'{pr:.0%}'} of {g['finished']} finished{crashed}"
        )
        # a bootstrap interval of 2 values says nothing: below MIN_CI_N seeds the values themselves are shown
        body = [
            [name, s["mean"], [s["lo"], s["hi"]] if s["n"] >= MIN_CI_N else None, s["values"], s["n"]]
            for name, s in g["metrics"].items()
        ]
        tables.append(Tabular(title, ["metric", "mean", "95% CI", "values", "n"], body))
    if fmt == "json":
        console.out(json.dumps(jsonable(groups), indent=1, default=str), highlight=False)
    elif fmt == "csv":
        # the tidy frame of --csv: the same columns whatever the number of groups, failed-only groups kept
        console.out(to_frame(groups).to_csv(index=False), end="", highlight=False)
    else:
        render(tables, fmt)
    if csv:
        try:
            to_frame(groups).to_csv(csv, index=False)
        except OSError as exc:
            raise PhenomlabError(f"cannot write the CSV file {csv}: {exc.strerror or exc}") from None
        err.print(f"wrote {csv}", markup=False)  # stderr: stdout may be the JSON or CSV being parsed


@app.command(epilog=STORE_EPILOG)
@_guard
def report(
    ref: Annotated[str | None, typer.Argument(metavar="[RUN|SWEEP]", help="run or sweep id")] = None,
    report_dir: Annotated[Path, typer.Option("--report-dir", help="directory the HTML report is written to")] = Path(
        "phenomlab-report"
    ),
    all_: Annotated[bool, typer.Option("--all", help="the whole store as an index page")] = False,
    catalogue: Annotated[
        bool, typer.Option("--catalogue", help="one page: every stored phenomenon's latest verdict and figure")
    ] = False,
    phenomenon: PhenomenonOpt = None,
    store: StoreOpt = None,
    report_out: Annotated[Path | None, typer.Option("--out", hidden=True, help="old name of --report-dir")] = None,
) -> None:
    """Write a static HTML report (figures embedded, verdict table, config, versions, timings)."""
    from .phenomena import registry
    from .report.html import render

    if report_out is not None:
        err.print("warning: `report --out` is deprecated; use --report-dir (--store names the run store)")
        report_dir = report_out
    if sum((ref is not None, all_, catalogue, phenomenon is not None)) > 1:
        raise PhenomlabError("report: name a run or sweep, --all, --catalogue or --phenomenon, not several")
    st = open_store(store)
    entries = registry.CATALOG if catalogue else None
    if phenomenon is not None:
        phenomenon_runs(st, phenomenon)  # a typo gets its did-you-mean before anything is written
    elif ref is not None and registry.known(ref) and not st.find(ref) and st.sweep(ref) is None:
        raise PhenomlabError(
            f"{ref!r} is a phenomenon, not a run or sweep id: `phenomlab report --phenomenon {ref}` takes all its runs"
        )
    page = render(st, report_dir, ref, everything=all_, catalogue=entries, phenomenon=phenomenon)
    console.print(f"report: {page.resolve()}", highlight=False, markup=False)


@app.command(epilog=STORE_EPILOG)
@_guard
def export(
    refs: Annotated[list[str] | None, typer.Argument(metavar="[RUN...]", help="run ids (prefixes)")] = None,
    to: Annotated[str, typer.Option("--to", help="tracker: tensorboard or mlflow")] = "tensorboard",
    sweep_ref: Annotated[str | None, typer.Option("--sweep", help="every run of this sweep")] = None,
    phenomenon: PhenomenonOpt = None,
    log_dir: Annotated[
        Path | None,
        typer.Option("--log-dir", help="where the tracker's files go (default phenomlab-tb / phenomlab-mlflow)"),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Export runs (metrics, config, verdict, figures) to TensorBoard event files or an MLflow file store.

    View them with `tensorboard --logdir DIR` or `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri DIR`.
    """
    from .report.tracking import TRACKERS, export

    if to not in TRACKERS:
        raise PhenomlabError(f"unknown tracker {to!r}; choose one of {', '.join(TRACKERS)}")
    st = open_store(store)
    rows = selected_runs(st, refs, sweep_ref, "export", phenomenon)
    where = log_dir or Path(DEFAULT_LOG_DIR[to])
    written = export(to, st, rows, where)
    view = (
        f"tensorboard --logdir {where}"
        if to == "tensorboard"
        else f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {where}"
    )
    console.print(f"wrote {len(written)} run(s) to {where}: {view}", markup=False)


@store_app.command("check", epilog=STORE_EPILOG)
@_guard
def store_check(store: StoreOpt = None, legacy_out: LegacyOut = None) -> None:
    """Check the database (SQLite integrity check) against the run folders; exit 1 if there are problems."""
    from .store.repair import check
    from .store.sqlite import DB_NAME, has_run_records

    rep = check(store)
    no_index = not (rep.root / DB_NAME).exists()
    if not rep.root.is_dir() or (no_index and not has_run_records(rep.root)):
        # nothing to check is bad input (exit 2, as in every other command), not a damaged store
        raise PhenomlabError(f"no run store at {rep.root}; give the store with --store or $PHENOMLAB_HOME")
    db = "database ok" if rep.database_ok else "database NOT ok"
    console.print(f"store {rep.root}: {rep.runs} runs, {db}, {len(rep.problems)} problem(s)", markup=False)
    for p in rep.problems:
        console.print(f"[red]problem:[/] {escape(p)}", highlight=False)
    for n in rep.notes:
        console.print(f"note: {n}", highlight=False, markup=False)
    raise typer.Exit(0 if rep.ok else 1)


@store_app.command("rebuild", epilog=STORE_EPILOG)
@_guard
def store_rebuild(store: StoreOpt = None, legacy_out: LegacyOut = None) -> None:
    """Move store.sqlite aside and re-index every run from its folder's run.json (stop runs first)."""
    from .store.repair import rebuild

    rep = rebuild(store)
    if rep.moved_to is not None:
        console.print(f"moved the old database to {rep.moved_to}", markup=False)
    console.print(f"re-indexed {len(rep.indexed)} run(s) into {rep.root / 'store.sqlite'}", markup=False)
    if rep.restored:
        console.print(
            f"restored {len(rep.restored)} run(s) whose run.json was missing or unreadable from the old index "
            f"(their run.json rewritten): {', '.join(rep.restored)}",
            markup=False,
        )
    for s in rep.skipped:
        console.print(f"[red]skipped:[/] {escape(s)}", highlight=False)
    raise typer.Exit(1 if rep.skipped else 0)


def _terminated(signum: int, frame: Any) -> None:
    # `kill`, Slurm and `docker stop` send SIGTERM: stop as Ctrl-C does (the run stored as interrupted, resumable)
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except BrokenPipeError:  # e.g. `phenomlab runs | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
