"""The catalogue's acceptance run: every implemented phenomenon's ``quick`` preset for several seeds.

For each (id, seed) the run is computed afresh (never read back from a store), and the
script prints the verdict, the wall and CPU time of the run next to the catalogue's budget, and the
summary line that decided it. One JSON line per run goes to ``--json`` for docs/BENCHMARKS.md.

    python benchmarks/quick_presets.py                              # all implemented ids, seeds 0-2
    python benchmarks/quick_presets.py --ids grokking,edge-of-stability --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/quick_presets.py --threads 1   # an upper bound on 2-core times

Exit status 0 when every run passed its signature, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

import phenomlab
from phenomlab.phenomena import registry

#: quick-preset budgets on 2 CPU cores, seconds (../shared/CATALOG.md, Tier 1)
BUDGET_S = {
    "grokking": 120,
    "double-descent": 180,
    "double-descent-epoch": 180,
    "neural-collapse": 120,
    "lottery-ticket": 180,
    "low-rank-bias": 180,
    "probabilistic-stability": 180,
    "effective-depth": 180,
    "collapse-transfer": 180,
    "ssl-clustering": 240,
    "sgd-fluctuation": 30,
    "edge-of-stability": 180,
    "ntk-mup": 240,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", default="", help="comma-separated ids (default: every implemented Tier 1 id)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--json", default="", help="append one JSON line per run to this file")
    ap.add_argument(
        "--out",
        default="",
        help="keep the runs in this store (recomputed even if stored); default: a throw-away store per run",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ids = [i for i in args.ids.split(",") if i] or [i for i in registry.implemented() if i in BUDGET_S]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    ok = True
    for pid in ids:
        registry.get(pid)  # unknown ids fail before any work
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                w, c = time.perf_counter(), time.process_time()
                try:
                    res = phenomlab.run(pid, seed=seed, out=args.out or tmp, force=True)
                    passed, summary = bool(res.passed), res.verdict.summary if res.verdict else ""
                    run_id = res.run_id
                    checks = [str(ch) for ch in res.verdict.checks] if res.verdict else []
                except Exception as exc:  # a diverged or broken run is a failed acceptance line, not a crash
                    passed, summary, checks, run_id = False, f"{type(exc).__name__}: {exc}", [], None
                wall, cpu = time.perf_counter() - w, time.process_time() - c
            budget = BUDGET_S.get(pid)
            ok &= passed
            line = (
                f"{pid:24s} seed {seed}  {'PASSED' if passed else 'NOT REPRODUCED':14s} wall {wall:6.1f} s  "
                f"cpu {cpu:6.1f} s  budget {budget} s{'' if budget is None or wall <= budget else '  OVER'}  "
                f"run {run_id}"
            )
            print(line, flush=True)
            print(f"    {summary}", flush=True)
            for ch in checks:
                print(f"      {ch}", flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    rec = {
                        "id": pid,
                        "seed": seed,
                        "run_id": run_id,
                        "passed": passed,
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "budget_s": budget,
                        "threads": torch.get_num_threads(),
                        "summary": summary,
                        "date": time.strftime("%Y-%m-%d"),
                    }
                    fh.write(json.dumps(rec) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
