"""Benchmarks for phenomlab.probes part A: collapse, spectra (vs WeightWatcher), CKA (vs torch-cka).

Run:  .bench-venv/bin/python benchmarks/spectra_cka_collapse_vs_libraries.py [--only spectra] [--threads single]
The reference libraries (weightwatcher, torch-cka) live only in the benchmark venv; a missing one is
reported as "not installed" and its comparison skipped. Every function returns a list of dict rows and
prints them. Timings are wall-clock minima over ``repeats`` runs after one warm-up run; the machine's
load average is recorded with each row because the shared dev machines are often oversubscribed.

``threads="both"`` (default) times each comparison twice: with the process's default thread settings,
and with every library pinned to one thread (``torch.set_num_threads(1)`` plus threadpoolctl for
numpy/scipy BLAS, if available), so that a speed-up cannot come from one side suffering more from
thread oversubscription than the other.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # torch-cka wraps its loop in tqdm

try:
    import phenomlab  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch
from torch import nn

from phenomlab.probes import threads as probes_threads
from phenomlab.probes.activations import features
from phenomlab.probes.collapse import cdnv, collapse_metrics, nc1, nc2, nc3, nc4
from phenomlab.probes.similarity import cka_matrix
from phenomlab.probes.spectra import layer_spectra

Row = dict[str, Any]


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up (allocator, lazy imports, MKL init)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Minimum wall time of each function over ``repeats`` rounds, one call of each per round, after a warm-up."""
    outs = {k: fn() for k, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, outs


@contextlib.contextmanager
def _threads(mode: str) -> Iterator[None]:
    """``default``: leave thread settings alone; ``single``: torch and BLAS pools pinned to 1 thread;
    ``managed``: as default, with phenomlab's probes inside ``probes.threads()`` (their adaptive policy)."""
    if mode == "default":
        yield
        return
    if mode == "managed":
        with probes_threads():
            yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limiter: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        else:
            limiter = threadpool_limits(1)
        with limiter:
            yield
    finally:
        torch.set_num_threads(old)


def _modes(threads: str) -> list[str]:
    return ["default", "single"] if threads == "both" else [threads]


def _print(rows: list[Row]) -> None:
    for r in rows:
        print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in r.items()))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------------------- collapse


def bench_collapse(
    n: int = 50_000, d: int = 512, c: int = 100, repeats: int = 3, seed: int = 0, threads: str = "both"
) -> list[Row]:
    """NC1-4 + CDNV on random ``n x d`` float32 features with ``c`` classes (goal: < 2 s on 2 cores)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    x = torch.randn(c, d, generator=g)[y] + torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g)
    logits = torch.randn(n, c, generator=g)

    def separate() -> dict[str, Any]:
        return {
            "nc1": nc1(x, y),
            "nc2": nc2(x, y),
            "nc3": nc3(x, y, w),
            "nc4": nc4(x, y, logits),
            "cdnv": cdnv(x, y),
        }

    rows: list[Row] = []
    for mode in _modes(threads):
        with _threads(mode):
            t_all, res = _time(lambda: collapse_metrics(x, y, weight=w, logits=logits), repeats)
            t_sep, res_sep = _time(separate, repeats)
        for variant, t in (("collapse_metrics (one pass)", t_all), ("nc1+nc2+nc3+nc4+cdnv (separate calls)", t_sep)):
            rows.append(
                {
                    "bench": "collapse",
                    "variant": variant,
                    "threads": mode,
                    "shape": f"{n}x{d}, C={c}",
                    "seconds": round(t, 4),
                    "goal_s": 2.0,
                    "meets_goal": t < 2.0,
                    "nc1": res["nc1"],
                    "cdnv": res["cdnv"],
                    "agree": abs(res["nc1"] - res_sep["nc1"]) <= 1e-4 * abs(res_sep["nc1"]),
                    "load": _load(),
                }
            )
    print("bench_collapse")
    _print(rows)
    return rows


# --------------------------------------------------------------------------------------- spectra


def _spectra_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Linear(512, 1024),
        nn.ReLU(),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Linear(1024, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 10),
    )
    # Heavy-tailed (Student-t, 3 dof) entries in two layers give power-law ESD tails, as in trained nets;
    # the others keep their Marchenko-Pastur-like random init.
    gen = np.random.default_rng(seed)
    with torch.no_grad():
        for idx in (2, 6):
            lin = m[idx]
            assert isinstance(lin, nn.Linear)
            lin.weight.copy_(torch.from_numpy(gen.standard_t(3, size=tuple(lin.weight.shape)) * 0.02).float())
    return m


def bench_spectra(repeats: int = 5, threads: str = "both") -> list[Row]:
    """``layer_spectra`` vs ``weightwatcher.WeightWatcher(model=m).analyze()``: alpha per layer and time."""
    m = _spectra_model()
    rows: list[Row] = []
    try:
        import weightwatcher as ww
    except ImportError:
        ww = None
    for mode in _modes(threads):
        with _threads(mode):
            if ww is None:
                t_ours, ours = _time(lambda: layer_spectra(m), repeats)
                rows.append(
                    {"bench": "spectra", "threads": mode, "ours_s": round(t_ours, 4), "weightwatcher": "not installed"}
                )
                continue
            logging.getLogger("weightwatcher").setLevel(logging.ERROR)

            def run_ww() -> Any:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    return ww.WeightWatcher(model=m).analyze()

            # Interleaved (ours, theirs, ours, ...) so that a load change on the shared machine hits both.
            t, outs = _time_interleaved({"ours": lambda: layer_spectra(m), "ww": run_ww}, repeats)
            t_ours, ours, t_ww, details = t["ours"], outs["ours"], t["ww"], outs["ww"]
        ww_alpha = [float(a) for a in details["alpha"].to_numpy()]
        ww_shapes = [(int(nn_), int(mm)) for nn_, mm in zip(details["N"], details["M"], strict=True)]
        our_rows = [r for r in ours if min(r["matrix_shape"]) >= 8]  # WW skips layers with < 8 eigenvalues
        diffs = []
        for r, a_ww, shp in zip(our_rows, ww_alpha, ww_shapes, strict=False):
            diffs.append(abs(r["alpha"] - a_ww))
            rows.append(
                {
                    "bench": "spectra",
                    "threads": mode,
                    "layer": r["name"],
                    "shape": r["matrix_shape"],
                    "ww_NxM": shp,
                    "alpha_ours": round(r["alpha"], 5),
                    "alpha_ww": round(a_ww, 5),
                    "abs_diff": diffs[-1],
                }
            )
        rows.append(
            {
                "bench": "spectra",
                "threads": mode,
                "layer": "ALL",
                "n_layers_compared": len(diffs),
                "layers_ours": len(our_rows),
                "layers_ww": len(ww_alpha),
                "max_alpha_abs_diff": max(diffs) if diffs else float("nan"),
                "ours_s": round(t_ours, 4),
                "ww_s": round(t_ww, 4),
                "ratio_ww_over_ours": round(t_ww / t_ours, 2),
                "goal_ratio": 2.0,
                "load": _load(),
            }
        )
    print("bench_spectra")
    _print(rows)
    return rows


# --------------------------------------------------------------------------------------- CKA


def _cka_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(256, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def bench_cka(n: int = 4096, batch_size: int = 256, repeats: int = 2, threads: str = "both") -> list[Row]:
    """Minibatch CKA between all layer pairs of two models vs torch-cka's ``CKA(...).compare(loader)``."""
    from torch.utils.data import DataLoader, TensorDataset

    m1, m2 = _cka_model(1), _cka_model(2)
    # Every submodule (Linear and ReLU outputs): the usual layer-by-layer CKA map.
    layers = [name for name, _ in m1.named_modules() if name]
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 256, generator=g), torch.zeros(n))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)

    def ours() -> torch.Tensor:
        fa = features(m1, loader, layers)
        fb = features(m2, loader, layers)
        return cka_matrix(fa, fb, batch_size=batch_size)

    rows: list[Row] = []
    try:
        from torch_cka import CKA
    except ImportError:
        CKA = None
    for mode in _modes(threads):
        with _threads(mode):
            t_ours, mat = _time(ours, repeats)
            # The forward passes are common to both tools; time them alone to show the CKA share.
            t_fwd, (fa, fb) = _time(lambda: (features(m1, loader, layers), features(m2, loader, layers)), repeats)
            t_cka_only, _ = _time(lambda fa=fa, fb=fb: cka_matrix(fa, fb, batch_size=batch_size), repeats)
            if CKA is None:
                rows.append({"bench": "cka", "threads": mode, "ours_s": round(t_ours, 4), "torch_cka": "not installed"})
                continue

            def theirs() -> torch.Tensor:
                # torch-cka registers hooks it never removes: give it fresh copies each time.
                a, b = copy.deepcopy(m1), copy.deepcopy(m2)
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    cka = CKA(a, b, model1_name="m1", model2_name="m2", model1_layers=layers, model2_layers=layers)
                    cka.compare(loader)
                return cka.export()["CKA"]

            t_ref, ref = _time(theirs, repeats)
        diff = float((mat.to(torch.float64) - ref.to(torch.float64)).abs().max())
        rows.append(
            {
                "bench": "cka",
                "threads": mode,
                "setup": f"2 MLPs, {len(layers)}x{len(layers)} layers, N={n}, batch={batch_size}, minibatch CKA",
                "ours_s": round(t_ours, 4),
                "torch_cka_s": round(t_ref, 4),
                "ratio_ref_over_ours": round(t_ref / t_ours, 2),
                "goal_ratio": 2.0,
                "forward_passes_s": round(t_fwd, 4),
                "ours_cka_only_s": round(t_cka_only, 4),
                "ratio_excl_forward": round(max(t_ref - t_fwd, 0.0) / t_cka_only, 2),
                "max_abs_diff": diff,
                "diag_ours": [round(float(v), 4) for v in torch.diagonal(mat)],
                "load": _load(),
            }
        )
    print("bench_cka")
    _print(rows)
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["collapse", "spectra", "cka"], action="append", help="only these (repeatable)")
    ap.add_argument("--threads", choices=["both", "default", "single", "managed"], default="both")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default: each benchmark's own)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {_load()}")
    extra = {} if args.repeats is None else {"repeats": args.repeats}
    for name, fn in (("collapse", bench_collapse), ("spectra", bench_spectra), ("cka", bench_cka)):
        if not args.only or name in args.only:
            fn(threads=args.threads, **extra)
