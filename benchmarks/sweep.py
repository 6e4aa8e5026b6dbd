"""Local executor with N worker processes vs sequential, on the same grid (issue: sweeps).

Run: python benchmarks/sweep.py [--workers 2] [--seeds 0-3]
Prints wall times and the speed-up (sequential / parallel), measured in this run. Each side uses a
fresh store, so nothing is read back from an earlier run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import phenomlab

# a small grokking grid: 2 weight decays x 2 learning rates x seeds, about a second or two per run
BASE = {"p": "31", "embed_dim": "16", "width": "64", "steps": "400", "eval_every": "20"}
GRID = {"weight_decay": ["0.5", "1"], "lr": ["0.01", "0.02"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--seeds", default="0-3")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        seq = phenomlab.sweep("grokking", GRID, args.seeds, store=f"{d}/seq", base=BASE, workers=1)
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        par = phenomlab.sweep("grokking", GRID, args.seeds, store=f"{d}/par", base=BASE, workers=args.workers)
        t_par = time.perf_counter() - t0
    n = len(seq.trials)
    assert {o.status for o in seq.outcomes} == {o.status for o in par.outcomes} == {"finished"}
    print(f"grid: {n} trials (grokking, {GRID}, seeds {args.seeds})")
    print(f"sequential (1 process, torch default threads): {t_seq:.1f} s")
    print(f"local executor, {args.workers} workers (1 thread each):  {t_par:.1f} s")
    print(f"speed-up: {t_seq / t_par:.2f}x on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
