"""What does training three seeds together cost, relative to one seed? (issue 17 item 5)

For the MLPs of the quick presets (digits-sized input 64, two hidden layers of ``width``, 10 classes, Adam,
minibatches of ``batch``), ``steps`` optimiser steps are timed for:

* ``one``: :func:`phenomlab.train.train` on one :class:`phenomlab.models.MLP` (the per-seed run's training);
* ``seq3``: the same for three seeds, one after the other;
* ``ensemble3``: the three seeds stacked in one :class:`phenomlab.models.ensemble.MLPEnsemble` trained by
  :func:`phenomlab.train.ensemble.train_ensemble` (batched matmuls; shared minibatches, so a lower bound on any
  stacked seed batching, which would also need per-seed data and batch orders);
* ``vmap3``: the three seeds through ``torch.func.vmap`` of ``functional_call`` (stacked parameters, Adam);
* ``procs3``: three processes at once, each running ``one`` on one thread (what ``phenomlab run ID --seeds 0-2``
  does), wall time against ``one`` run with ``--threads-one`` threads (a single run's default on this machine).

The first four run on ``--threads`` threads in this process; ratios are against ``one`` measured in the same run.
Each time is the best of ``--repeats`` measurements (the machine is shared; the minimum is the least disturbed).

    python benchmarks/seed_batching.py                       # widths 32, 128, 512 at batch 64 and 256
    python benchmarks/seed_batching.py --widths 128 --batches 128 --steps 2000

``--presets grokking,memorization`` instead times whole quick presets as a user runs them: the wall time of
``phenomlab run ID --seed 0`` (torch's default threads) against ``phenomlab run ID --seeds 0-2``, each a fresh
process on a fresh store (Python start-up included in both).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from phenomlab.models import MLP
from phenomlab.models.ensemble import MLPEnsemble
from phenomlab.train import TrainConfig, train
from phenomlab.train.ensemble import train_ensemble

N_TRAIN, IN_DIM, CLASSES, DEPTH = 1024, 64, 10, 2


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N_TRAIN, IN_DIM, generator=g), torch.randint(0, CLASSES, (N_TRAIN,), generator=g)


def cfg(steps: int, batch: int) -> TrainConfig:
    return TrainConfig(steps=steps, lr=1e-3, optimizer="adam", batch_size=batch, eval_every=steps)


def mlp(width: int, seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(IN_DIM, CLASSES, width=width, depth=DEPTH)


def time_one(width: int, batch: int, steps: int, seed: int = 0, threads: int = 0) -> float:
    if threads:
        torch.set_num_threads(threads)
    model, d = mlp(width, seed), data(seed)
    t = time.perf_counter()
    train(model, d, cfg(steps, batch), seed=seed)
    return time.perf_counter() - t


def time_ensemble(width: int, batch: int, steps: int) -> float:
    ens = MLPEnsemble(IN_DIM, CLASSES, [width] * 3, depth=DEPTH, seeds=[0, 1, 2])
    t = time.perf_counter()
    train_ensemble(ens, data(0), cfg(steps, batch), seed=0)
    return time.perf_counter() - t


def time_vmap(width: int, batch: int, steps: int) -> float:
    models = [mlp(width, s) for s in range(3)]
    params, _ = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    base = mlp(width, 0).to("meta")
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    xs, ys = zip(*(data(s) for s in range(3)), strict=True)
    x, y = torch.stack(xs), torch.stack(ys)

    def loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, p, (xb,)), yb)

    batched = vmap(loss)
    t = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, N_TRAIN, (3, batch), generator=torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        batched(params, x.gather(1, idx[..., None].expand(-1, -1, IN_DIM)), y.gather(1, idx)).sum().backward()
        opt.step()
    return time.perf_counter() - t


def time_procs(width: int, batch: int, steps: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=ctx) as pool:
        # start the three interpreters (torch imported) before the clock: a pool spawns workers on demand
        list(pool.map(time.sleep, [2.0] * 3))
        list(pool.map(time_one, [32] * 3, [32] * 3, [10] * 3, [0, 1, 2], [1] * 3))
        t = time.perf_counter()
        list(pool.map(time_one, [width] * 3, [batch] * 3, [steps] * 3, [0, 1, 2], [1] * 3))
        return time.perf_counter() - t


def time_command(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys of the command and its children) of one CLI call on a fresh store."""
    with tempfile.TemporaryDirectory() as store:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([*args, "--quiet", "--store", store], check=False, capture_output=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_presets(ids: list[str], json_path: str) -> None:
    cli = [str(Path(sys.executable).parent / "phenomlab")]
    for pid in ids:
        load = os.getloadavg()[0]
        one, one_cpu = time_command([*cli, "run", pid, "--seed", "0"])
        three, three_cpu = time_command([*cli, "run", pid, "--seeds", "0-2"])
        row = {"id": pid, "one_s": round(one, 1), "seeds3_s": round(three, 1), "ratio": round(three / one, 2)}
        # 3 seeds need three seeds' CPU time on the machine's cores: the wall ratio cannot go below this bound
        bound = three_cpu / (os.cpu_count() or 1) / one
        row |= {"one_cpu_s": round(one_cpu, 1), "seeds3_cpu_s": round(three_cpu, 1), "cpu_bound": round(bound, 2)}
        row |= {"load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        if json_path:
            with open(json_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def best(repeats: int, fn: Callable[..., float], *args: Any) -> float:
    return min(fn(*args) for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,128,512")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="threads of the in-process timings")
    ap.add_argument("--threads-one", type=int, default=os.cpu_count() or 1, help="threads of procs3's reference")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many measurements")
    ap.add_argument("--no-procs", action="store_true", help="skip procs3 (it needs the machine's cores to itself)")
    ap.add_argument("--json", default="", help="append one JSON line per configuration")
    ap.add_argument("--presets", default="", help="comma-separated ids: time whole quick presets instead")
    args = ap.parse_args()
    if args.presets:
        print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
        time_presets(args.presets.split(","), args.json)
        return
    print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, steps {args.steps}, threads {args.threads}")
    for width in map(int, args.widths.split(",")):
        for batch in map(int, args.batches.split(",")):
            torch.set_num_threads(args.threads)
            time_one(width, batch, 20)  # warm-up

            one = best(args.repeats, time_one, width, batch, args.steps)
            row = {
                "width": width,
                "batch": batch,
                "one_s": round(one, 3),
                "seq3_x": sum(best(args.repeats, time_one, width, batch, args.steps, s) for s in range(3)) / one,
                "ensemble3_x": best(args.repeats, time_ensemble, width, batch, args.steps) / one,
                "vmap3_x": best(args.repeats, time_vmap, width, batch, args.steps) / one,
            }
            if not args.no_procs:
                one_default = best(args.repeats, time_one, width, batch, args.steps, 0, args.threads_one)
                row["procs3_x"] = best(args.repeats, time_procs, width, batch, args.steps) / one_default
                torch.set_num_threads(args.threads)
            row = {k: round(v, 2) if isinstance(v, float) and k != "one_s" else v for k, v in row.items()}
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({**row, "steps": args.steps, "load": os.getloadavg()[0]}) + "\n")


if __name__ == "__main__":
    main()
