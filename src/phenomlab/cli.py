"""The ``phenomlab`` command line: list, run, runs, show (and sweep/compare/report when installed).

Exit codes: 0 the verdict passed, 1 it did not (or the run failed), 2 bad input.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import PhenomlabError, TrainingDiverged

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproduce, measure and sweep the phenomena of deep learning science.",
)
console = Console()
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def _guard(fn: F) -> F:
    """Turn user errors into one line on stderr and exit 2 instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PhenomlabError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except TrainingDiverged as exc:
            err.print(f"[bold red]run failed:[/] {exc} (stored as failed)", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted: finished work is stored; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x,y"]`` -> ``{"a": "1", "b": "x,y"}``; values are parsed later by field type."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise PhenomlabError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise PhenomlabError(f"--set expects key=value, got {item!r}")
        out[key] = value.strip()
    return out


def _store(out: Path | None) -> Any:
    from .store.sqlite import RunStore

    return RunStore(out)


@app.command("list")
@_guard
def list_cmd(
    config: Annotated[str | None, typer.Option("--config", help="show the config fields of this phenomenon")] = None,
) -> None:
    """The catalogue of phenomena with their status (implemented or not)."""
    from .phenomena import registry

    if config:
        mod = registry.get(config)
        t = Table(title=f"{config}: config (defaults = quick preset)")
        for col in ("key", "type", "default", "description"):
            t.add_column(col)
        for name, tp, default, help_ in mod.Config.describe():
            t.add_row(name, tp, repr(default), help_)
        console.print(t)
        for preset, over in mod.PRESETS.items():
            console.print(f"preset [bold]{preset}[/]: {over or '(defaults)'}")
        return
    t = Table(title="phenomlab catalogue")
    t.add_column("id", no_wrap=True)
    for col in ("tier", "status", "phenomenon", "source"):
        t.add_column(col)
    for e in registry.CATALOG:
        status = "[green]implemented[/]" if e.implemented else "[dim]not yet[/]"
        t.add_row(e.id, str(e.tier), status, e.title, e.source)
    console.print(t)


@app.command()
@_guard
def run(
    pid: Annotated[str, typer.Argument(metavar="ID", help="phenomenon id (see `phenomlab list`)")],
    preset: Annotated[str, typer.Option(help="quick (minutes on a laptop CPU) or paper")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config value: key=value")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: CUDA if present)")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "--store", help="run store directory (default ./phenomlab-runs)")
    ] = None,
    force: Annotated[bool, typer.Option(help="recompute even if the run is stored")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Reproduce one phenomenon and print its verdict (exit 0 if it passed, 1 if not)."""
    from .phenomena import registry
    from .phenomena.lifecycle import run_phenomenon
    from .phenomena.registry import make_config
    from .seeding import resolve_device
    from .store.ids import run_id

    registry.entry(pid)
    resolve_device(device)
    overrides = parse_sets(set_)
    cfg = make_config(pid, preset, overrides)
    store = _store(out)
    rid = run_id(pid, cfg.to_dict(), seed)
    row = store.get(rid)
    if row is not None and row["status"] in ("running", "interrupted") and not force:
        err.print(f"resuming run {rid} from its checkpoints")
    elif not quiet and (row is None or row["status"] != "finished" or force):
        err.print(f"running {pid} (preset {preset}, seed {seed}) as run {rid}")
    result = run_phenomenon(
        pid, preset=preset, seed=seed, device=device, store=store, force=force, progress=not quiet, config=cfg
    )
    if result.cached:
        console.print(f"run {result.run_id}: read from the store (finished earlier; --force recomputes)")
    _print_result(result)
    raise typer.Exit(0 if result.passed else 1)


def _print_result(result: Any) -> None:
    v = result.verdict
    colour = "green" if v.passed else "red"
    console.print(
        f"[bold]{result.phenomenon}[/] seed {result.seed}  run {result.run_id}"
        + (f"  ({result.duration:.1f} s)" if result.duration else "")
    )
    console.print(f"[bold {colour}]{'PASSED' if v.passed else 'NOT REPRODUCED'}[/]: {v.summary}", highlight=False)
    for c in v.checks:
        console.print(f"  [{'green' if c.passed else 'red'}]{c}[/]", highlight=False)
    for f in result.figures:
        console.print(f"figure: {f}", highlight=False)


@app.command()
@_guard
def runs(
    phenomenon: Annotated[str | None, typer.Option(help="only this phenomenon")] = None,
    status: Annotated[str | None, typer.Option(help="running, finished, failed or interrupted")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--store", help="run store directory")] = None,
) -> None:
    """Table of the runs in the store."""
    import datetime

    rows = _store(out).list_runs(phenomenon, status)
    t = Table(title=f"runs ({len(rows)})")
    t.add_column("run", no_wrap=True, min_width=16)
    t.add_column("phenomenon", no_wrap=True)
    for col in ("preset", "seed", "status", "verdict", "seconds", "created"):
        t.add_column(col)
    for r in rows:
        verdict = "-" if r["passed"] is None else ("[green]pass[/]" if r["passed"] else "[red]fail[/]")
        dur = f"{r['duration']:.1f}" if r.get("duration") else "-"
        created = datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")
        t.add_row(r["run_id"], r["phenomenon"], r["preset"] or "-", str(r["seed"]), r["status"], verdict, dur, created)
    console.print(t)


def resolve_run(store: Any, ref: str) -> dict[str, Any]:
    matches = store.find(ref)
    if not matches:
        raise PhenomlabError(f"no run {ref!r} in {store.root} (see `phenomlab runs`)")
    if len(matches) > 1:
        raise PhenomlabError(f"run id prefix {ref!r} is ambiguous: {', '.join(m['run_id'] for m in matches[:5])}")
    return matches[0]


@app.command()
@_guard
def show(
    ref: Annotated[str, typer.Argument(metavar="RUN", help="run id (a unique prefix is enough)")],
    out: Annotated[Path | None, typer.Option("--out", "--store", help="run store directory")] = None,
) -> None:
    """Verdict, metrics summary and figure paths of one stored run."""
    from .phenomena.lifecycle import load_result

    store = _store(out)
    row = resolve_run(store, ref)
    console.print(
        f"[bold]{row['phenomenon']}[/] run {row['run_id']}  seed {row['seed']}  preset {row['preset']}"
        f"  status {row['status']}"
    )
    console.print(f"config: {row['config']}", highlight=False)
    if row["status"] != "finished":
        if row.get("error"):
            console.print(f"[red]error:[/] {row['error'].splitlines()[0]}", highlight=False)
    else:
        _print_result(load_result(store, row))
    metrics = store.metrics(row["run_id"])
    if metrics:
        t = Table(title="metrics")
        for col in ("name", "points", "first", "last", "min", "max"):
            t.add_column(col)
        for name, (_, vals) in metrics.items():
            finite = [v for v in vals if not math.isnan(v)]
            if not finite:
                continue
            t.add_row(
                name, str(len(vals)), f"{vals[0]:.4g}", f"{vals[-1]:.4g}", f"{min(finite):.4g}", f"{max(finite):.4g}"
            )
        console.print(t)
    if row["status"] != "finished":
        raise typer.Exit(1)


@app.command()
@_guard
def sweep(
    pid: Annotated[str, typer.Argument(metavar="ID", help="phenomenon id")],
    grid: Annotated[list[str] | None, typer.Option("--grid", help="key=v1,v2,... (repeatable)")] = None,
    seeds: Annotated[str, typer.Option(help="seeds: 0-4, or 0,2,7")] = "0",
    preset: Annotated[str, typer.Option(help="quick or paper")] = "quick",
    set_: Annotated[list[str] | None, typer.Option("--set", help="fixed override for every trial: key=value")] = None,
    executor: Annotated[str, typer.Option(help="local or ray")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address ('auto' joins a running one)")] = None,
    workers: Annotated[int, typer.Option(help="parallel local processes / CPUs of a local Ray")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ...")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--store", help="run store directory")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="run a sweep of more than 1,000 trials")] = False,
) -> None:
    """Run a phenomenon over a grid x seeds; stored runs are skipped, failures do not stop the rest."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .sweep.api import sweep as run_sweep

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
            out=out,
            base=parse_sets(set_),
            on_done=on_done,
            confirm=yes,
            on_start=on_start,
        )
    console.print(
        f"sweep {res.sweep_id}: {counts['finished']} run, {counts['cached']} read from the store, "
        f"{counts['failed']} failed; verdict passed in {counts['passed']}/{len(res.trials)}"
    )
    console.print(f"compare: phenomlab compare --sweep {res.sweep_id}   report: phenomlab report {res.sweep_id}")
    raise typer.Exit(1 if counts["failed"] else 0)


@app.command()
@_guard
def compare(
    refs: Annotated[list[str] | None, typer.Argument(metavar="RUN...", help="run ids (prefixes)")] = None,
    sweep_ref: Annotated[str | None, typer.Option("--sweep", help="a sweep id")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--store", help="run store directory")] = None,
    csv: Annotated[Path | None, typer.Option(help="also write the table as CSV")] = None,
) -> None:
    """Aggregate runs across seeds: mean and 95% bootstrap CI per metric, verdict pass rate."""
    from .sweep.compare import aggregate, to_frame

    store = _store(out)
    if sweep_ref:
        sw = store.sweep(sweep_ref)
        if sw is None:
            raise PhenomlabError(f"no sweep {sweep_ref!r} in {store.root}")
        rows = [r for rid in sw["run_ids"] if (r := store.get(rid)) is not None]
    elif refs:
        rows = [resolve_run(store, ref) for ref in refs]
    else:
        raise PhenomlabError("name runs to compare, or --sweep SWEEP")
    groups = aggregate(rows)
    for g in groups:
        pr = g["pass_rate"]
        t = Table(
            title=f"{g['phenomenon']}  {g['label']}  seeds {g['seeds']}  pass rate "
            f"{'n/a' if math.isnan(pr) else f'{pr:.0%}'}  ({g['failed']} failed)"
        )
        for col in ("metric", "mean", "95% CI", "n"):
            t.add_column(col)
        for name, st in g["metrics"].items():
            t.add_row(name, f"{st['mean']:.4g}", f"[{st['lo']:.4g}, {st['hi']:.4g}]", str(st["n"]))
        console.print(t)
    if csv:
        to_frame(groups).to_csv(csv, index=False)
        console.print(f"wrote {csv}")


@app.command()
@_guard
def report(
    ref: Annotated[str | None, typer.Argument(metavar="[RUN|SWEEP]", help="run or sweep id")] = None,
    out: Annotated[Path, typer.Option(help="directory for the HTML report")] = Path("phenomlab-report"),
    all_: Annotated[bool, typer.Option("--all", help="the whole store as an index page")] = False,
    store_dir: Annotated[Path | None, typer.Option("--store", help="run store directory")] = None,
) -> None:
    """Write a static HTML report (figures embedded, verdict table, config, versions, timings)."""
    from .report.html import render

    page = render(_store(store_dir), out, ref, everything=all_)
    console.print(f"report: {page.resolve()}", highlight=False)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. `phenomlab runs | head`
        sys.exit(0)


if __name__ == "__main__":
    main()
