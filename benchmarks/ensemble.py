"""Ensemble trainer vs a plain sequential loop on the double-descent width sweep.

Trains the quick-preset main sweep of ``phenomlab.phenomena.double_descent`` (its widths x its inits per width,
one-hidden-layer MLPs, Adam) twice in the same process (the numbers in docs/BENCHMARKS.md were measured on the
earlier 24-width 1..512 preset):

* ``ensemble``: :func:`phenomlab.train.ensemble.train_ensemble` on stacked, width-bucketed weights;
* ``sequential``: :func:`phenomlab.train.train` on each :class:`phenomlab.models.MLP` in turn,

with the same initialisations (same seeds), the same number of steps and the same minibatches, and
reports the speed-up (wall and CPU time) and both test-error-vs-width curves with the largest
curve difference next to the seed-to-seed spread. ``--backends`` also times one training step of
batched matmuls (what the trainer uses) against ``torch.func.vmap`` + per-member functional calls.

Run with the same threads on both sides (the script sets ``torch.set_num_threads(--threads)``, default 1;
also export ``OMP_NUM_THREADS=1``)::

    OMP_NUM_THREADS=1 python benchmarks/ensemble.py              # full quick preset (minutes)
    OMP_NUM_THREADS=1 python benchmarks/ensemble.py --steps 2000 --backends
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any, cast

import torch
import torch.nn.functional as F

from phenomlab.models import MLP
from phenomlab.models.ensemble import MLPEnsemble, per_member_loss
from phenomlab.phenomena import RunContext, build_config
from phenomlab.phenomena import double_descent as dd
from phenomlab.train import TrainConfig, make_optimizer, train
from phenomlab.train.ensemble import train_ensemble


class Clock:
    def __enter__(self) -> Clock:
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def vmap_step_time(ens: MLPEnsemble, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """CPU seconds per Adam step when each bucket is run with vmap over a per-member function."""
    from torch.func import vmap

    def member_loss(
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
        mask: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
    ) -> torch.Tensor:
        h = torch.relu(xb @ w1 + b1) * mask
        return F.cross_entropy(h @ w2 + b2, yb)

    fn = vmap(member_loss, in_dims=(0, 0, 0, 0, 0, None, None))
    params = [p.detach().clone().requires_grad_() for p in ens.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    n, bs = len(y), 64

    def step(i: int) -> None:
        idx = torch.arange(i * bs, (i + 1) * bs) % n
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        total = 0
        for j, bucket in enumerate(ens.buckets):
            w1, w2 = params[4 * j], params[4 * j + 1]
            b1, b2 = params[4 * j + 2], params[4 * j + 3]
            total = total + fn(w1, b1, w2, b2, bucket.mask, xb, yb).sum()
        total.backward()  # type: ignore[union-attr]
        opt.step()

    for i in range(3):
        step(i)
    c = time.process_time()
    for i in range(steps):
        step(i)
    return (time.process_time() - c) / steps


def bmm_step_time(ens: MLPEnsemble, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """CPU seconds per Adam step of the trainer's batched-matmul forward/backward on the same buckets."""
    import copy

    e = copy.deepcopy(ens)
    opt = torch.optim.Adam(e.parameters(), lr=1e-3)
    n, bs = len(y), 64

    def step(i: int) -> None:
        idx = torch.arange(i * bs, (i + 1) * bs) % n
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        torch.cat([per_member_loss(o, yb) for o in e.bucket_outputs(xb)]).sum().backward()
        opt.step()

    for i in range(3):
        step(i)
    c = time.process_time()
    for i in range(steps):
        step(i)
    return (time.process_time() - c) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the quick preset's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--backends", action="store_true", help="also time batched matmul vs vmap per step")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument(
        "--fused-sequential",
        action="store_true",
        help="give the sequential side the fused Adam kernel the ensemble trainer uses",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    over = {"steps": args.steps} if args.steps else {}
    cfg = cast(dd.Config, build_config(dd.Config, dd.PRESETS, "quick", over))
    ctx = RunContext(seed=args.seed)
    ds = dd.load_data(cfg, ctx)
    widths = dd.widths_of(cfg)
    k = cfg.seeds_per_width
    members = [w for w in widths for _ in range(k)]
    seeds = [ctx.seed_for("init", w, s) for w in widths for s in range(k)]
    tcfg = TrainConfig(
        steps=cfg.steps,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        batch_size=cfg.batch_size or None,
        eval_every=cfg.steps,
        loss=cfg.loss,
    )
    batch_seed = ctx.seed_for("batches")
    x, y = ds.train()
    d_in = x[0].numel()
    print(
        f"sweep: {len(widths)} widths {widths[0]}..{widths[-1]} x {k} seeds = {len(members)} MLPs, "
        f"{tcfg.steps} {tcfg.optimizer} steps, batch {tcfg.batch_size}, n_train={len(y)}; "
        f"torch threads = {torch.get_num_threads()}"
    )

    with Clock() as t_ens:
        ens = MLPEnsemble(d_in, ds.n_classes, members, depth=cfg.depth, seeds=seeds)
        h = train_ensemble(ens, (x, y), tcfg, eval_sets={"test": ds.test()}, seed=batch_seed)
    ens_err = h.last("test_err")
    print(f"ensemble   ({len(ens.buckets)} buckets): wall {t_ens.wall:7.1f} s   cpu {t_ens.cpu:7.1f} s")

    seq_err = []
    with Clock() as t_seq:
        for w, s in zip(members, seeds, strict=True):
            torch.manual_seed(s)
            model = MLP(d_in, ds.n_classes, w, cfg.depth)
            opt = make_optimizer(model.parameters(), tcfg, fused=True) if args.fused_sequential else None
            hs = train(model, (x, y), tcfg, eval_sets={"test": ds.test()}, seed=batch_seed, optimizer=opt)
            seq_err.append(1.0 - hs.last("test_acc"))
    label = f"train() x {len(members)}" + (", fused Adam" if args.fused_sequential else "")
    print(f"sequential ({label}):  wall {t_seq.wall:7.1f} s   cpu {t_seq.cpu:7.1f} s")
    print(f"speed-up: wall {t_seq.wall / t_ens.wall:.2f}x   cpu {t_seq.cpu / t_ens.cpu:.2f}x")

    def curve(v: list[float]) -> list[float]:
        return [statistics.fmean(v[i * k : (i + 1) * k]) for i in range(len(widths))]

    ce, cs = curve(ens_err), curve(seq_err)
    spread = [statistics.stdev(ens_err[i * k : (i + 1) * k]) if k > 1 else 0.0 for i in range(len(widths))]
    print("\n width  ensemble  sequential   diff   seed-std")
    for w, a, b, s in zip(widths, ce, cs, spread, strict=True):
        print(f"{w:6d}  {100 * a:7.2f}%  {100 * b:8.2f}%  {100 * (a - b):+6.2f}  {100 * s:6.2f}")
    max_diff = max(abs(a - b) for a, b in zip(ce, cs, strict=True))
    member_diff = max(abs(a - b) for a, b in zip(ens_err, seq_err, strict=True))
    # the standard error of a k-seed mean is std/sqrt(k): the yardstick for two curves of the same models
    sem = [s / math.sqrt(k) for s in spread]
    print(
        f"\nmax |curve difference| = {100 * max_diff:.2f} points; seed-to-seed std per width: median "
        f"{100 * statistics.median(spread):.2f}, max {100 * max(spread):.2f} points (std of a {k}-seed mean: "
        f"median {100 * statistics.median(sem):.2f}); max per-member difference {100 * member_diff:.2f} points"
    )
    figures: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "fused_sequential": args.fused_sequential,
        "widths": widths,
        "members": len(members),
        "steps": tcfg.steps,
        "ensemble_wall": t_ens.wall,
        "ensemble_cpu": t_ens.cpu,
        "sequential_wall": t_seq.wall,
        "sequential_cpu": t_seq.cpu,
        "speedup_wall": t_seq.wall / t_ens.wall,
        "speedup_cpu": t_seq.cpu / t_ens.cpu,
        "ensemble_curve": ce,
        "sequential_curve": cs,
        "seed_std": spread,
        "max_curve_diff": max_diff,
        "max_member_diff": member_diff,
    }

    if args.backends:
        n = 200
        t_bmm = bmm_step_time(ens, x, y, n)
        t_vmap = vmap_step_time(ens, x, y, n)
        print(
            f"\nper step (same buckets, Adam, batch 64): batched matmul {1e3 * t_bmm:.2f} ms cpu, "
            f"vmap {1e3 * t_vmap:.2f} ms cpu ({t_vmap / t_bmm:.2f}x)"
        )
        figures.update(bmm_step_ms=1e3 * t_bmm, vmap_step_ms=1e3 * t_vmap)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
