"""The catalogue's acceptance run: every implemented phenomenon's ``quick`` preset for several seeds.

For each (id, seed) the run is computed afresh (never read back from a store), and the
script prints the verdict, the wall and CPU time of the run next to the catalogue's budget, and the
summary line that decided it. One JSON line per run goes to ``--json`` for docs/BENCHMARKS.md.

    python benchmarks/quick_presets.py                              # all implemented ids, seeds 0-2
    python benchmarks/quick_presets.py --ids grokking,edge-of-stability --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/quick_presets.py --threads 1   # an upper bound on 2-core times
    python benchmarks/quick_presets.py --seeds 0 --recent-first --budget-minutes 35   # CI's slow step
    python benchmarks/quick_presets.py --workers 3   # three runs at once, one process and 1 thread each on 2 cores

``--recent-first`` orders the ids by the last commit that touched their module (the phenomena a submission changed
run first); ``--budget-minutes`` skips a run that would end past the time box (by its catalogue budget).

Exit status 0 when every run passed its signature (rows that docs/CATALOG.md marks "not reproduced at quick
scale" are expected to fail and do not count), 1 otherwise. The last lines tally the runs and name each unexpected
failure with its failing checks, so the tail of a CI log says what failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

import phenomlab
from phenomlab.phenomena import registry

#: quick-preset budgets on 2 CPU cores, seconds (docs/CATALOG.md; 240 s for rows without one)
BUDGET_S = {
    "grokking": 120,
    "double-descent": 240,
    "double-descent-epoch": 240,
    "neural-collapse": 240,
    "lottery-ticket": 240,
    "low-rank-bias": 240,
    "probabilistic-stability": 240,
    "effective-depth": 240,
    "collapse-transfer": 240,
    "ssl-clustering": 240,
    "sgd-fluctuation": 60,
    "edge-of-stability": 240,
    "ntk-mup": 240,
    "hyper-singan": 600,
}


ROOT = Path(__file__).resolve().parents[1]


def last_touched(pid: str) -> int:
    """Commit time of the last change to the phenomenon's module (0 outside a git checkout)."""
    path = ROOT / "src" / "phenomlab" / "phenomena" / (pid.replace("-", "_") + ".py")
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%ct", "--", str(path)], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return 0
    return int(out) if out.isdigit() else 0


def one_run(pid: str, seed: int, out: str, threads: int) -> dict:
    """Run ``pid``'s quick preset afresh for ``seed`` and return its acceptance record (verdict, times, checks)."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        w, c = time.perf_counter(), time.process_time()
        try:
            res = phenomlab.run(pid, seed=seed, store=out or tmp, force=True)
            passed, summary = bool(res.passed), res.verdict.summary if res.verdict else ""
            run_id = res.run_id
            checks = [str(ch) for ch in res.verdict.checks] if res.verdict else []
        except Exception as exc:  # a diverged or broken run is a failed acceptance line, not a crash
            passed, summary, checks, run_id = False, f"{type(exc).__name__}: {exc}", [], None
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {
        "id": pid,
        "seed": seed,
        "run_id": run_id,
        "passed": passed,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "budget_s": BUDGET_S.get(pid, 240),
        "threads": torch.get_num_threads(),
        "summary": summary,
        "checks": checks,
        "date": time.strftime("%Y-%m-%d"),
    }


def report(rec: dict, json_path: str) -> None:
    budget, wall = rec["budget_s"], rec["wall_s"]
    print(
        f"{rec['id']:24s} seed {rec['seed']}  {'PASSED' if rec['passed'] else 'NOT REPRODUCED':14s} "
        f"wall {wall:6.1f} s  cpu {rec['cpu_s']:6.1f} s  budget {budget} s{'' if wall <= budget else '  OVER'}  "
        f"run {rec['run_id']}",
        flush=True,
    )
    print(f"    {rec['summary']}", flush=True)
    for ch in rec["checks"]:
        print(f"      {ch}", flush=True)
    if json_path:
        with open(json_path, "a") as fh:
            fh.write(json.dumps({k: v for k, v in rec.items() if k != "checks"}) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", default="", help="comma-separated ids (default: every implemented id)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs at once, each in its own process (with --threads 0: cores // workers threads each)",
    )
    ap.add_argument("--json", default="", help="append one JSON line per run to this file")
    ap.add_argument(
        "--out",
        default="",
        help="keep the runs in this store (recomputed even if stored); default: a throw-away store per run",
    )
    ap.add_argument("--recent-first", action="store_true", help="most recently changed phenomena first")
    ap.add_argument("--budget-minutes", type=float, default=0.0, help="time box: skip runs that would end past it")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    ids = [i for i in args.ids.split(",") if i] or registry.implemented()
    for pid in ids:
        registry.get(pid)  # unknown ids fail before any work
    if args.recent_first:
        ids.sort(key=last_touched, reverse=True)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else 0)
    expected_fail = set(registry.NOT_REPRODUCED)  # kept equal to docs/CATALOG.md's marks by a test
    todo = deque((pid, seed) for pid in ids for seed in seeds)
    records: list[dict] = []
    skipped: list[tuple[str, int]] = []
    start = time.perf_counter()

    def admissible(pid: str, seed: int) -> bool:
        # a run started now ends about its budget later, however many others run beside it
        budget = BUDGET_S.get(pid, 240)
        if args.budget_minutes and time.perf_counter() - start + budget > 60 * args.budget_minutes:
            print(f"{pid:24s} seed {seed}  skipped (time box of {args.budget_minutes:g} min)", flush=True)
            skipped.append((pid, seed))
            return False
        return True

    if args.workers == 1:
        for pid, seed in todo:
            if admissible(pid, seed):
                records.append(one_run(pid, seed, args.out, threads))
                report(records[-1], args.json)
        return summarize(records, skipped, expected_fail)
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        running: set = set()
        while todo or running:
            while todo and len(running) < args.workers:
                pid, seed = todo.popleft()
                if admissible(pid, seed):
                    running.add(pool.submit(one_run, pid, seed, args.out, threads))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                records.append(fut.result())
                report(records[-1], args.json)
    return summarize(records, skipped, expected_fail)


def summarize(records: list[dict], skipped: list[tuple[str, int]], expected_fail: set[str]) -> int:
    """Print the closing tally (the last lines are what a CI log shows first) and return the exit status.

    A failure counts only for rows the catalogue marks reproduced; a pass of a row it marks not reproduced is
    named too, since the catalogue may then be out of date.
    """
    unexpected = [r for r in records if not r["passed"] and r["id"] not in expected_fail]
    surprising = [r for r in records if r["passed"] and r["id"] in expected_fail]
    expected = sum(not r["passed"] and r["id"] in expected_fail for r in records)
    print(
        f"\n{len(records)} runs: {len(records) - len(unexpected) - expected} passed, {expected} failed as the "
        f"catalogue expects (not reproduced at quick scale), {len(unexpected)} failed unexpectedly; "
        f"{len(skipped)} skipped by the time box",
        flush=True,
    )
    for r in unexpected:
        failed = [c for c in r["checks"] if c.lstrip().startswith("FAIL")] or [r["summary"]]
        print(f"UNEXPECTED FAILURE  {r['id']} seed {r['seed']}: {'; '.join(failed)}", flush=True)
    for r in surprising:
        print(f"passed though marked not reproduced  {r['id']} seed {r['seed']}", flush=True)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
