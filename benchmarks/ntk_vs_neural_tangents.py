"""Empirical NTK: ``phenomlab.probes.empirical_ntk`` vs neural-tangents' ``empirical_ntk_fn`` (JAX).

Run:  /path/to/bench-venv/bin/python benchmarks/ntk_vs_neural_tangents.py [--threads single|default] [--repeats 5]
neural-tangents and jax live only in a benchmark venv (``pip install "jax[cpu]" neural-tangents`` next to phenomlab
and ``torch==2.13.0``); they are not dependencies. Without them the script says so and exits 2.

The same function on both sides: the torch model's weights are copied into a JAX function written to compute
exactly the same thing (``x W^T + b``, ReLU, flatten), so the two kernels must agree to rounding. Each row gives
the largest relative difference ``max |K_ours - K_nt| / max |K_nt|`` in float32, and the kernels are also compared
in float64 (``jax_enable_x64``) where they must agree to ~1e-15. neural-tangents is timed after ``jax.jit``
compilation (its first-call time, compilation included, is reported separately); every implementation it offers
(Jacobian contraction, NTK-vector products, structured derivatives) is timed, and the ratio is against its fastest.
Timings are minima over ``repeats`` calls after one warm-up, ours and theirs interleaved in the same loop, with
the load average recorded (the shared 2-core dev boxes are often busy).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--threads" in sys.argv and sys.argv[sys.argv.index("--threads") + 1] == "single":
    # XLA reads its thread settings when the backend starts: they must be set before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["OMP_NUM_THREADS"] = "1"

try:
    import phenomlab  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np
import torch
from torch import nn

from phenomlab.probes import empirical_ntk

Row = dict[str, Any]


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def mlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def cnn(length: int, channels: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(1, channels, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 5, padding=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * length, d_out),
    )


def jax_twin(model: nn.Sequential) -> tuple[Callable[..., Any], list[tuple[Any, Any]]]:
    """A JAX function ``f(params, x)`` computing what ``model`` computes, and the model's weights as its params."""
    import jax.numpy as jnp
    from jax import lax

    params, ops = [], []
    for m in model:
        if isinstance(m, nn.Linear):
            params.append((jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy())))
            ops.append("linear")
        elif isinstance(m, nn.Conv1d):
            params.append((jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy())))
            ops.append(("conv", m.padding[0]))
        elif isinstance(m, nn.ReLU):
            ops.append("relu")
        elif isinstance(m, nn.Flatten):
            ops.append("flatten")
        else:
            raise TypeError(f"no JAX twin for {type(m).__name__}")

    def f(p: list[tuple[Any, Any]], x: Any) -> Any:
        i = 0
        for op in ops:
            if op == "linear":
                w, b = p[i]
                x = x @ w.T + b
                i += 1
            elif op == "relu":
                x = jnp.maximum(x, 0)
            elif op == "flatten":
                x = x.reshape(x.shape[0], -1)
            else:  # torch's Conv1d is a cross-correlation, as lax.conv_general_dilated
                w, b = p[i]
                pad = op[1]
                x = lax.conv_general_dilated(x, w, (1,), [(pad, pad)], dimension_numbers=("NCH", "OIH", "NCH"))
                x = x + b[None, :, None]
                i += 1
        return x

    return f, params


def nt_kernel_fns(f: Callable[..., Any], mode: str) -> dict[str, Callable[..., Any]]:
    import jax
    import neural_tangents as nt

    trace_axes = (-1,) if mode == "trace" else ()
    out = {}
    for impl in ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES"):
        fn = nt.empirical_ntk_fn(
            f, trace_axes=trace_axes, vmap_axes=0, implementation=getattr(nt.NtkImplementation, impl)
        )
        out[impl.lower()] = jax.jit(fn)
    return out


def compare(name: str, model: nn.Sequential, x: torch.Tensor, mode: str, repeats: int) -> list[Row]:
    import jax

    model = model.eval()
    f, params = jax_twin(model)
    xj = jax.numpy.asarray(x.numpy())
    fns = nt_kernel_fns(f, mode)
    n_params = sum(p.numel() for p in model.parameters())

    def ours(method: str = "auto") -> np.ndarray:
        k = empirical_ntk(model, x, mode=mode, method=method)
        return k.numpy()

    first = {}
    results = {}
    for impl, fn in fns.items():
        t0 = time.perf_counter()
        results[impl] = np.asarray(jax.block_until_ready(fn(xj, None, params)))
        first[impl] = time.perf_counter() - t0
    k_ours = ours()
    if mode == "trace":  # neural-tangents' trace over the output axis is the mean of the diagonal, ours its sum
        with torch.no_grad():
            k_ours = k_ours / model(x[:1]).shape[-1]
    ref = results["jacobian_contraction"]
    # neural-tangents orders a full kernel [N1, N2, O, O] as ours; trace mode is [N1, N2] on both sides
    if ref.shape != k_ours.shape:
        raise AssertionError(f"shapes differ: ours {k_ours.shape}, neural-tangents {ref.shape}")
    scale = float(np.abs(ref).max())
    diffs = {impl: float(np.abs(r - ref).max()) / scale for impl, r in results.items()}
    diff = float(np.abs(k_ours - ref).max()) / scale

    best = {"ours": float("inf"), "ours_jacobian": float("inf"), **{impl: float("inf") for impl in fns}}
    ours()
    ours("jacobian")
    for _ in range(repeats):  # interleaved, so that a change of load hits both sides alike
        for key, method in (("ours", "auto"), ("ours_jacobian", "jacobian")):
            t0 = time.perf_counter()
            ours(method)
            best[key] = min(best[key], time.perf_counter() - t0)
        for impl, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(xj, None, params))
            best[impl] = min(best[impl], time.perf_counter() - t0)
    fastest = min(fns, key=lambda k: best[k])
    return [
        {
            "case": name,
            "mode": mode,
            "N": x.shape[0],
            "params": n_params,
            "ours_s": round(best["ours"], 4),
            "ours_jacobian_route_s": round(best["ours_jacobian"], 4),
            **{f"nt_{k}_s": round(best[k], 4) for k in fns},
            "nt_fastest": fastest,
            "ratio_theirs_over_ours": round(best[fastest] / best["ours"], 2),
            "nt_first_call_s": round(first[fastest], 3),
            "rel_diff_f32": f"{diff:.1e}",
            "nt_impls_rel_diff": f"{max(diffs.values()):.1e}",
            "load": _load(),
        }
    ]


def float64_agreement(model: nn.Sequential, x: torch.Tensor, mode: str) -> float:
    """Largest relative difference of the two kernels in float64 (rounding only: ~1e-15)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        m64 = model.double().eval()
        f, params = jax_twin(m64)
        fn = nt_kernel_fns(f, mode)["jacobian_contraction"]
        ref = np.asarray(fn(jax.numpy.asarray(x.double().numpy()), None, params))
        ours = empirical_ntk(m64, x.double(), mode=mode).numpy()
        if mode == "trace":
            with torch.no_grad():
                ours = ours / m64(x[:1].double()).shape[-1]
        return float(np.abs(ours - ref).max() / np.abs(ref).max())
    finally:
        model.float()
        jax.config.update("jax_enable_x64", False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", choices=("single", "default"), default="single")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small cases only (a smoke test of the script)")
    args = ap.parse_args(argv)
    try:
        import jax  # noqa: F401
        import neural_tangents  # noqa: F401
    except ImportError as exc:
        print(f"neural-tangents / jax not installed ({exc}); install them in a benchmark venv", file=sys.stderr)
        return 2
    if args.threads == "single":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    cases = [
        ("MLP 40-512-512-10", mlp(40, 512, 2, 10), torch.randn(64, 40)),
        ("MLP 40-256x4-10", mlp(40, 256, 4, 10), torch.randn(128, 40)),
        ("1-D CNN 16ch, length 40", cnn(40, 16, 10), torch.randn(32, 1, 40)),
    ]
    if args.quick:
        cases = [("MLP 8-16-3", mlp(8, 16, 1, 3), torch.randn(6, 8))]
    rows = []
    for name, model, x in cases:
        for mode in ("trace", "full"):
            row = compare(name, model, x, mode, args.repeats)[0]
            row["rel_diff_f64"] = f"{float64_agreement(model, x, mode):.1e}"
            row["threads"] = args.threads
            print(row, flush=True)
            rows.append(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
