"""Every phenomenon on an accelerator: does it run there, and does it reach the CPU's verdict?

For each (id, seed) the preset is run afresh on ``--device`` and, with ``--against cpu``, on the CPU too, each in
its own process and scratch store. A run that raises is recorded with its traceback (the device bugs this looks
for: a tensor made on the CPU meeting one on the GPU, ``.numpy()`` on a GPU tensor). For runs on both devices the
record compares the verdicts and each check's value (GPU kernels round differently and draw other random numbers
from device generators, so values may move; a verdict that flips is what matters).

    python benchmarks/device_check.py --preset smoke --workers 12 --json out.jsonl      # every id on CUDA
    python benchmarks/device_check.py --ids grokking --preset quick --against cpu

Exit status 0 when no run raised, 1 otherwise (a verdict that fails is not an error here).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

import phenomlab
from phenomlab.phenomena import registry


def one_run(pid: str, preset: str, seed: int, device: str, threads: int) -> dict:
    """Run ``pid``'s ``preset`` afresh on ``device``; the verdict's checks, or the error with its traceback."""
    torch.set_num_threads(threads)
    rec: dict = {"id": pid, "preset": preset, "seed": seed, "device": device}
    with tempfile.TemporaryDirectory() as tmp:
        w = time.perf_counter()
        try:
            res = phenomlab.run(pid, preset=preset, seed=seed, device=device, store=tmp, force=True)
            rec |= {
                "status": "ran",
                "passed": bool(res.passed),
                "checks": {c.name: [c.value, c.passed] for c in res.verdict.checks} if res.verdict else {},
            }
        except Exception as exc:  # the point of the script: record what broke, run the rest
            rec |= {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        rec["wall_s"] = round(time.perf_counter() - w, 1)
    return rec


def compare(acc: dict, cpu: dict) -> dict:
    """How the accelerator run's verdict and check values differ from the CPU run's."""
    if acc.get("status") != "ran" or cpu.get("status") != "ran":
        return {"comparable": False}
    flipped = [n for n, (_, ok) in acc["checks"].items() if n in cpu["checks"] and cpu["checks"][n][1] != ok]
    rel = {}
    for name, (v, _) in acc["checks"].items():
        w = cpu["checks"].get(name, [None])[0]
        if v is not None and w is not None:
            rel[name] = abs(v - w) / max(abs(w), 1e-12)
    return {
        "comparable": True,
        "same_verdict": acc["passed"] == cpu["passed"],
        "flipped_checks": flipped,
        "max_rel_diff": max(rel.values(), default=0.0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", default="", help="comma-separated ids (default: every implemented one)")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--against", default="", help="also run on this device and compare (e.g. cpu)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--json", default="", help="append one JSON line per id and seed")
    args = ap.parse_args(argv)

    ids = [i for i in args.ids.split(",") if i] or registry.implemented()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    # roles, not device names, key the runs: --device cpu --against cpu checks the script itself
    devices = {"device": args.device} | ({"against": args.against} if args.against else {})
    jobs = [(pid, seed, role) for pid in ids for seed in seeds for role in devices]
    done: dict[tuple[str, int], dict[str, dict]] = {}
    errors = 0
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = {
            pool.submit(one_run, pid, args.preset, seed, devices[role], args.threads): (pid, seed, role)
            for pid, seed, role in jobs
        }
        for fut in as_completed(futs):
            pid, seed, role = futs[fut]
            rec, dev = fut.result(), devices[role]
            errors += rec["status"] == "error"
            state = rec.get("error") or ("passed" if rec["passed"] else "verdict failed")
            print(f"{pid:26s} seed {seed} {dev:6s} {rec['wall_s']:7.1f} s  {state}", flush=True)
            runs = done.setdefault((pid, seed), {})
            runs[role] = rec
            if len(runs) == len(devices):
                out = {"id": pid, "seed": seed, "preset": args.preset, "runs": runs}
                if args.against:
                    out["compare"] = compare(runs["device"], runs["against"])
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(out) + "\n")
    for (pid, seed), runs in sorted(done.items()):
        for rec in runs.values():
            if rec["status"] == "error":
                print(f"\n=== {pid} seed {seed} on {rec['device']}\n{rec['traceback']}", flush=True)
    print(f"{len(jobs)} runs, {errors} raised", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
