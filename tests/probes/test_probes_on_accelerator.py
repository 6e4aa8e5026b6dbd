"""Every public probe of ``phenomlab.probes`` on the accelerator, against the same call on the CPU.

Run on a GPU machine with ``python -m pytest tests/probes/test_probes_on_accelerator.py -rA`` (``-rA`` also prints the
observations of the mixed-device test). Without CUDA every test here is skipped; ``PHENOMLAB_TEST_DEVICE=cpu``
runs them with the CPU standing in for the accelerator, which checks the tests themselves.

What is checked, per probe:

- the call runs with inputs and models on the accelerator (no device error);
- what it returns is finite and, as every probe here is deterministic given its seed, agrees with the CPU call in
  float64 (``rtol=1e-6, atol=1e-8``; Lanczos eigenvalues ``rtol=1e-4``). The probes that draw random numbers
  (Hutchinson/Hutch++/Krylov trace, SLQ, Lanczos start vectors, random directions, random patch extractors,
  few-shot episodes, the NTK's gradient check, SGD minibatches, default Lyapunov start vectors, permutation
  matching's sweep order and check inputs) all draw them from a seeded CPU ``torch.Generator`` (or numpy) and move
  the draws to the device, so the CPU and accelerator results must agree as well.

Tests whose name ends in ``_observed`` record what happens for a model on the accelerator fed CPU data, without
asserting a behaviour the docstrings do not promise.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import phenomlab.probes as P
from phenomlab.models import MLP
from phenomlab.probes._params import to_device

RTOL, ATOL = 1e-6, 1e-8
#: Lanczos stops on a relative Ritz residual: eigenvalues agree to about tol^2/gap, never worse than tol
EIG_RTOL = 1e-4
CE = nn.functional.cross_entropy


# ---------------------------------------------------------------------------------------------- helpers


# every tensor in a (nested) tuple, list or dict moved to a device: the probes' own helper
_on = to_device


def _pair(model: nn.Module, accel: torch.device) -> tuple[nn.Module, nn.Module]:
    """The model on the CPU and an identical copy on the accelerator."""
    return model, copy.deepcopy(model).to(accel)


def _mlp(seed: int = 0, in_dim: int = 5, n_classes: int = 3, width: int = 8, depth: int = 2, **kw: Any) -> MLP:
    torch.manual_seed(seed)
    return MLP(in_dim, n_classes, width=width, depth=depth, **kw).double()


def _data(n: int = 24, d: int = 5, c: int = 3, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % c
    return x, y


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _check_close(got: Any, want: Any, rtol: float = RTOL, atol: float = ATOL, where: str = "result") -> None:
    """``got`` (accelerator) is finite and matches ``want`` (CPU), recursively over containers and dataclasses."""
    if dataclasses.is_dataclass(want) and not isinstance(want, type):
        assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
        for f in dataclasses.fields(want):
            _check_close(getattr(got, f.name), getattr(want, f.name), rtol, atol, f"{where}.{f.name}")
    elif isinstance(want, Mapping):
        assert isinstance(got, Mapping) and set(got) == set(want), f"{where}: keys {set(got)} != {set(want)}"
        for k in want:
            _check_close(got[k], want[k], rtol, atol, f"{where}[{k!r}]")
    elif isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), f"{where}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _check_close(g, w, rtol, atol, f"{where}[{i}]")
    elif isinstance(want, Tensor):
        assert isinstance(got, Tensor), f"{where}: expected a tensor, got {type(got).__name__}"
        g, w = got.detach().cpu(), want.detach().cpu()
        assert g.shape == w.shape, f"{where}: shape {tuple(g.shape)} != {tuple(w.shape)}"
        if not w.is_floating_point():
            assert torch.equal(g, w), f"{where}: {g} != {w}"
            return
        assert g.dtype == w.dtype, f"{where}: dtype {g.dtype} != {w.dtype}"
        nan = torch.isnan(w)
        assert torch.equal(torch.isnan(g), nan), f"{where}: NaN pattern differs"
        assert bool(torch.isfinite(g[~nan]).all()), f"{where}: non-finite entries"
        diff = float((g - w).abs().max()) if g.numel() else 0.0
        assert torch.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True), f"{where}: max |diff| {diff:.3g}"
    elif isinstance(want, float):
        assert isinstance(got, (float, int)), f"{where}: expected a float, got {type(got).__name__}"
        if math.isnan(want):
            assert math.isnan(got), f"{where}: {got} != nan"
            return
        assert math.isfinite(got), f"{where}: {got} is not finite"
        assert math.isclose(got, want, rel_tol=rtol, abs_tol=atol), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _both(fn: Any, accel: torch.device, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``(fn(*args on accel), fn(*args on CPU))``: tensors in args/kwargs are moved (models are not)."""
    cpu = torch.device("cpu")
    want = fn(*_on(args, cpu), **_on(kwargs, cpu))
    got = fn(*_on(args, accel), **_on(kwargs, accel))
    return got, want


def _same(fn: Any, accel: torch.device, *args: Any, rtol: float = RTOL, atol: float = ATOL, **kwargs: Any) -> Any:
    got, want = _both(fn, accel, *args, **kwargs)
    _check_close(got, want, rtol, atol, fn.__name__)
    return got


def _on_device(t: Tensor, accel: torch.device) -> None:
    assert t.device.type == accel.type, f"result on {t.device}, expected {accel}"


# ---------------------------------------------------------------------------------------------- activations


def test_activations(accel):
    cpu_m, acc_m = _pair(_mlp(), accel)
    x, _ = _data()
    assert P.module_names(acc_m) == P.module_names(cpu_m)
    want = P.features(cpu_m, x, ["fc1", "act2", "out"])
    got = P.features(acc_m, x.to(accel), ["fc1", "act2", "out"])
    _check_close(got, want)
    for t in got.values():
        _on_device(t, accel)
    # chunked (split_rows indexes with a CPU arange), and an iterable of (x, y) batches
    _check_close(P.features(acc_m, x.to(accel), "act1", batch_size=7), P.features(cpu_m, x, "act1"))
    batches = [(x[:10].to(accel), None), (x[10:].to(accel), None)]
    _check_close(P.features(acc_m, batches, "act1"), P.features(cpu_m, x, "act1"))


# ---------------------------------------------------------------------------------------------- attributes


def test_attributes(accel):
    units = _randn(30, 6, seed=2)
    attrs = torch.cat([units[:, :2] @ _randn(2, 3, seed=3), _randn(30, 1, seed=4), torch.ones(30, 1)], 1)
    _same(P.correlation_matrix, accel, units, attrs)
    _same(P.best_correlations, accel, units, attrs)
    _same(P.mean_best_correlation, accel, units, attrs)


# ---------------------------------------------------------------------------------------------- bounds


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(1, 2, 3, bias=False)
        self.c2 = nn.Conv1d(2, 2, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(2, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean(-1))


def test_bounds(accel):
    torch.manual_seed(0)
    cpu_m, acc_m = _pair(_ConvNet().double(), accel)
    x = _randn(20, 1, 9, seed=5)
    with torch.no_grad():
        y = cpu_m(x).argmax(1)
    assert P.conv1d_output_length(9, 3, 2, 1) == 5
    _same(P.conv1d_toeplitz, accel, cpu_m.c2.weight.detach(), 7, 2, 1)
    logits = _randn(12, 4, seed=6)
    _same(P.multiclass_margins, accel, logits, torch.arange(12) % 4)
    want = P.network_bounds(cpu_m, x, y, margin_quantile=0.5)
    got = P.network_bounds(acc_m, x.to(accel), y.to(accel), margin_quantile=0.5)
    _check_close(got, want)
    assert isinstance(got, P.NetworkBounds)
    n = x.shape[0]
    sparse = P.sparse_norm_bound(got.filter_norms, got.degrees, float((x**2).sum(1).sum(0).max()), n, 3, got.margin)
    assert math.isclose(sparse, want.sparse, rel_tol=RTOL)
    toep = P.toeplitz_norm_bound(got.toeplitz_norms, float((x**2).sum()), n, 3, got.margin)
    assert math.isclose(toep, want.toeplitz, rel_tol=RTOL)


# ---------------------------------------------------------------------------------------------- causal


def test_causal_pca_residual_and_batched_autoencoder(accel):
    x = _randn(3, 20, 6, seed=7)
    _same(P.pca_residual, accel, x, 2)
    ae_cpu = P.BatchedAutoencoder(3, 6, 5, 2, torch.Generator().manual_seed(0)).double()
    ae_acc = copy.deepcopy(ae_cpu).to(accel)
    with torch.no_grad():
        _check_close(ae_acc(x.to(accel)), ae_cpu(x))
    # member() copies one member into a fresh nn.Sequential (built with the default device and dtype)
    m_acc, m_cpu = ae_acc.member(1), ae_cpu.member(1)
    _check_close(
        {k: v.double() for k, v in m_acc.state_dict().items()}, {k: v.double() for k, v in m_cpu.state_dict().items()}
    )


def test_causal_autoencoder_complexity(accel):
    # reads causal.py: the autoencoder is built on the CPU and only cast to train.dtype, not moved to train.device
    train, test = _randn(2, 16, 4, seed=8), _randn(2, 8, 4, seed=9)
    got = _same(P.autoencoder_complexity, accel, train, test, hidden=6, bottleneck=1, steps=15, lr=1e-2, seed=0)
    assert got[0].shape == (2,) and got[1].shape == (2,)


# ---------------------------------------------------------------------------------------------- collapse


def _collapse_inputs(n: int = 36, d: int = 6, c: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    y = torch.arange(n) % c
    centres = _randn(c, d, seed=10) * 3
    x = centres[y] + _randn(n, d, seed=11)
    w = centres + 0.3 * _randn(c, d, seed=12)
    logits = x @ w.T
    return x, y, w, logits


def test_collapse_functions(accel):
    x, y, w, logits = _collapse_inputs()
    _same(P.class_means, accel, x, y)
    _same(P.within_between_covariance, accel, x, y)
    _same(P.nc1, accel, x, y)
    _same(P.nc2, accel, x, y)
    _same(P.nc3, accel, x, y, w)
    _same(P.nc4, accel, x, y, logits)
    _same(P.cdnv, accel, x, y)
    _same(P.cdnv, accel, x, y, reduce="none")
    _same(P.ncc_accuracy, accel, x, y)
    xt, yt = x[::2] + 0.5 * _randn(18, 6, seed=13), y[::2]
    _same(P.ncc_accuracy, accel, x, y, xt, yt)
    means, classes = P.class_means(x.to(accel), y.to(accel))
    _same(P.ncc_predict, accel, xt, means, classes)
    _same(P.few_shot_ncc_error, accel, x, y, shots=3, episodes=10, queries=4, seed=3)
    _same(P.few_shot_ncc_error, accel, x, y, shots=2, ways=2, episodes=5, seed=1)
    _same(P.collapse_metrics, accel, x, y, weight=w, logits=logits)
    # labels that are not 0..C-1 (bincount lookup); labels as a numpy array (documented: numpy or tensors)
    _same(P.nc1, accel, x, y * 2 + 5)
    _check_close(P.collapse_metrics(x.to(accel), y.numpy(), weight=w.to(accel)), P.collapse_metrics(x, y, weight=w))


def test_neural_collapse_model(accel):
    cpu_m, acc_m = _pair(_mlp(width=12), accel)
    x, y = _data(n=36)
    want = P.neural_collapse(cpu_m, (x, y), layer="act2")
    got = P.neural_collapse(acc_m, (x.to(accel), y.to(accel)), layer="act2")
    _check_close(got, want)
    assert got.nc3 is not None and got.nc4 is not None
    got = P.neural_collapse(acc_m, (x.to(accel), y.to(accel)), layer="act1", classifier="fc2")
    _check_close(got, P.neural_collapse(cpu_m, (x, y), layer="act1", classifier="fc2"))
    _check_close(
        P.neural_collapse(acc_m, (x.to(accel), y.to(accel)), layer="act2", batch_size=10).as_dict(), want.as_dict()
    )


# ---------------------------------------------------------------------------------------------- coords


def test_coords(accel):
    x, y = _data()
    layers = ["act1", "act2", "out"]

    def run(dev: torch.device) -> list[dict[str, Any]]:
        models = {w: _mlp(seed=w, width=w).to(dev) for w in (8, 16)}
        return P.coord_check(
            models, (x.to(dev), y.to(dev)), lambda m: torch.optim.SGD(m.parameters(), lr=0.1), layers, steps=2
        )

    got, want = run(accel), run(torch.device("cpu"))
    _check_close(got, want)
    _check_close(P.coord_slopes(got), P.coord_slopes(want))
    m = _mlp().to(accel)
    _check_close(P.coord_sizes(m, x.to(accel), layers), P.coord_sizes(_mlp(), x, layers))


# ---------------------------------------------------------------------------------------------- curvature


@pytest.fixture
def curv(accel):
    cpu_m, acc_m = _pair(_mlp(), accel)
    x, y = _data(n=20)
    return cpu_m, acc_m, (x, y), (x.to(accel), y.to(accel))


def test_curvature_hvp_functional(accel):
    A = _randn(4, 3, seed=14)

    def run(dev: torch.device) -> Any:
        a = A.to(dev)

        def f(p: dict[str, Tensor]) -> Tensor:
            return (a @ p["w"]).sin().sum() + (p["b"] ** 2).sum() ** 2

        params = {"w": _randn(3, seed=15).to(dev), "b": _randn(2, seed=16).to(dev)}
        v = {"w": _randn(3, seed=17).to(dev), "b": _randn(2, seed=18).to(dev)}
        return P.hvp(f, params, v)

    _check_close(run(accel), run(torch.device("cpu")))


def test_curvature_products_and_full_hessian(accel, curv):
    cpu_m, acc_m, data, data_a = curv
    n = P.n_params(acc_m)
    assert n == P.n_params(cpu_m) == 147
    _check_close(P.flat_params(acc_m), P.flat_params(cpu_m))
    _on_device(P.flat_params(acc_m), accel)
    v = _randn(n, seed=19)
    H = P.full_hessian(cpu_m, CE, data)
    H_a = P.full_hessian(acc_m, CE, data_a)
    _check_close(H_a, H)
    two = [(data[0][:12], data[1][:12]), (data[0][12:], data[1][12:])]
    for make in (P.model_hvp, P.ggn_vp):
        for cache in (True, False):
            mv = make(acc_m, CE, data_a, cache=cache)
            assert mv.n == n and mv.device.type == accel.type
            got = mv(v.to(accel))
            _on_device(got, accel)
            _check_close(got, make(cpu_m, CE, data, cache=cache)(v), where=f"{make.__name__}(cache={cache})")
            # a list of batches
            got = make(acc_m, CE, _on(two, accel), cache=cache)(v.to(accel))
            _check_close(got, make(cpu_m, CE, two, cache=cache)(v))
    _check_close(P.model_hvp(acc_m, CE, data_a)(v.to(accel)), H @ v)


def test_curvature_lanczos_on_explicit_matrix(accel):
    n = 30
    B = _randn(n, n, seed=20)
    A = (B + B.T) / 2
    exact = torch.linalg.eigvalsh(A)
    A_a = A.to(accel)

    def mv(v: Tensor) -> Tensor:
        return A_a @ v

    got = P.lanczos_eigenvalues(mv, n, k=3, which="LA", iters=n, tol=1e-10, device=accel)
    assert got.device.type == "cpu"  # documented: a float64 CPU tensor
    _check_close(got, exact.flip(0)[:3], rtol=EIG_RTOL)
    vals, vecs = P.lanczos_eigenvalues(mv, n, k=2, which="SA", iters=n, tol=1e-10, device=accel, return_vectors=True)
    _check_close(vals, exact[:2], rtol=EIG_RTOL)
    _on_device(vecs, accel)
    assert vecs.shape == (n, 2)
    resid = A_a @ vecs - vecs * vals.to(accel)
    assert float(resid.abs().max()) < 1e-6 * float(exact.abs().max())
    lm = P.lanczos_eigenvalues(mv, n, k=1, which="LM", iters=n, tol=1e-10, v0=_randn(n, seed=21).to(accel))
    _check_close(lm, exact.abs().max().reshape(1) * exact[exact.abs().argmax()].sign(), rtol=EIG_RTOL)


def test_curvature_trace_and_slq_on_explicit_matrix(accel):
    n = 24
    B = _randn(n, n, seed=22)
    A = B @ B.T / n
    cpu = torch.device("cpu")

    def run(dev: torch.device) -> dict[str, Any]:
        a = A.to(dev)

        def mv(v: Tensor) -> Tensor:
            return a @ v

        out: dict[str, Any] = {}
        for method in ("hutchinson", "hutch++", "krylov"):
            out[method] = P.trace_estimate(mv, n, samples=12, method=method, seed=4, device=dev)
        nodes, weights = P.slq_nodes(mv, n, iters=8, runs=2, seed=1, device=dev)
        out["slq"] = (nodes, weights)
        out["density"] = P.density_from_nodes(nodes.to(dev), weights.to(dev), grid_size=64)
        return out

    got, want = run(accel), run(cpu)
    _check_close(got, want)
    # plausible: exact trace within a generous 50% (12 Rademacher probes); SLQ weights sum to 1
    tr = float(torch.trace(A))
    for method in ("hutchinson", "hutch++", "krylov"):
        assert abs(got[method][0] - tr) < 0.5 * tr
    assert math.isclose(float(got["slq"][1].sum()), 1.0, rel_tol=1e-10)


def test_curvature_hessian_eigenvalues(accel, curv):
    cpu_m, acc_m, data, data_a = curv
    want = P.hessian_eigenvalues(cpu_m, CE, data, k=2, iters=60, tol=1e-8)
    got = P.hessian_eigenvalues(acc_m, CE, data_a, k=2, iters=60, tol=1e-8)
    assert got.device.type == "cpu"
    _check_close(got, want, rtol=EIG_RTOL)
    exact = torch.linalg.eigvalsh(P.full_hessian(cpu_m, CE, data)).flip(0)[:2]
    _check_close(got, exact, rtol=EIG_RTOL)
    sa = P.hessian_eigenvalues(acc_m, CE, data_a, k=1, which="SA", iters=60, tol=1e-8)
    _check_close(sa, P.hessian_eigenvalues(cpu_m, CE, data, k=1, which="SA", iters=60, tol=1e-8), rtol=EIG_RTOL)
    top, vec = P.top_hessian_eigenvalue(acc_m, CE, data_a, tol=1e-6, return_vector=True)
    top_c, vec_c = P.top_hessian_eigenvalue(cpu_m, CE, data, tol=1e-6, return_vector=True)
    assert math.isclose(top, top_c, rel_tol=EIG_RTOL)
    _on_device(vec, accel)
    assert abs(float(vec.cpu() @ vec_c)) > 1 - 1e-4
    # warm start from the returned vector
    assert math.isclose(P.top_hessian_eigenvalue(acc_m, CE, data_a, v0=vec), top_c, rel_tol=EIG_RTOL)
    gn = P.gauss_newton_eigenvalues(acc_m, CE, data_a, k=2, iters=60, tol=1e-8)
    _check_close(gn, P.gauss_newton_eigenvalues(cpu_m, CE, data, k=2, iters=60, tol=1e-8), rtol=EIG_RTOL)


def test_curvature_hessian_trace_and_density(accel, curv):
    cpu_m, acc_m, data, data_a = curv
    for method in ("hutchinson", "hutch++", "krylov"):
        got = P.hessian_trace(acc_m, CE, data_a, samples=12, seed=2, method=method, return_std=True)
        want = P.hessian_trace(cpu_m, CE, data, samples=12, seed=2, method=method, return_std=True)
        _check_close(got, want, where=f"hessian_trace({method})")
    got = P.hessian_spectral_density(acc_m, CE, data_a, iters=10, runs=2, grid_size=100)
    want = P.hessian_spectral_density(cpu_m, CE, data, iters=10, runs=2, grid_size=100)
    _check_close(got, want, atol=ATOL * float(want[1].abs().max()))
    assert got[1].device.type == "cpu"


# ---------------------------------------------------------------------------------------------- generative


def test_generative(accel):
    y = torch.arange(36) % 3
    real = _randn(36, 4, seed=23) + y[:, None].double()
    fake = _randn(36, 4, seed=24) * 1.2 + 0.9 * y[:, None].double()
    _same(P.gaussian_stats, accel, real)
    mu1, S1 = P.gaussian_stats(real)
    mu2, S2 = P.gaussian_stats(fake)
    _same(P.frechet_distance, accel, mu1, S1, mu2, S2)
    _same(P.fid, accel, real, fake)
    probs = torch.softmax(_randn(36, 5, seed=25) * 2, 1)
    _same(P.inception_score, accel, probs)
    _same(P.conditional_scores, accel, probs, y)
    _same(P.conditional_fid, accel, real, y, fake, y)


# ---------------------------------------------------------------------------------------------- information


def test_information(accel):
    x, y = _data(n=40)
    acts = torch.tanh(x @ _randn(5, 3, seed=26))
    _same(P.entropy_of_rows, accel, (acts > 0).long())
    _same(P.discretize, accel, acts, n_bins=6)
    _same(P.discretize, accel, acts, n_bins=6, bounds=(-1.0, 1.0))
    _same(P.binned_mutual_information, accel, acts, None, y, n_bins=5)
    x_ids = torch.arange(40) // 2
    _same(P.binned_mutual_information, accel, acts, x_ids, y, n_bins=5, bounds=(-1.0, 1.0))
    codes = _same(P.quantize, accel, acts, 3, (-1.0, 1.0))
    _same(P.dequantize, accel, codes, 3, (-1.0, 1.0))
    _same(P.quantized_mutual_information, accel, codes, y)


# ---------------------------------------------------------------------------------------------- kernels


def _ntk_net(seed: int = 0) -> nn.Module:
    # Linear layers (structured route) plus a LayerNorm (general route): method="auto" sums both
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).double()


@pytest.mark.parametrize("method", ["auto", "jacobian", "structured"])
def test_empirical_ntk(accel, method):
    cpu_m, acc_m = _pair(_ntk_net(), accel)
    x1, x2 = _randn(6, 5, seed=27), _randn(4, 5, seed=28)
    for mode in ("trace", "diagonal", "full"):
        got = P.empirical_ntk(acc_m, x1.to(accel), x2.to(accel), mode=mode, method=method)
        _on_device(got, accel)
        _check_close(got, P.empirical_ntk(cpu_m, x1, x2, mode=mode, method=method), where=f"{mode}/{method}")
        got = P.empirical_ntk(acc_m, x1.to(accel), mode=mode, method=method, chunk_size=2)
        _check_close(got, P.empirical_ntk(cpu_m, x1, mode=mode, method=method), where=f"{mode}/{method}/chunked")


def test_kernel_comparisons(accel):
    _, acc_m = _pair(_ntk_net(), accel)
    x, y = _data(n=10)
    K0 = P.empirical_ntk(acc_m, x.to(accel)).cpu()
    K1 = P.empirical_ntk(_ntk_net(seed=1).to(accel), x.to(accel)).cpu()
    _same(P.kernel_change, accel, K0, K1)
    _same(P.kernel_distance, accel, K0, K1)
    for center in (False, True):
        _same(P.kernel_alignment, accel, K0, y, center=center)
        _same(P.kernel_alignment, accel, K0, x[:, 0], center=center)
        _same(P.kernel_alignment, accel, K0, x[:, :2], center=center)


# ---------------------------------------------------------------------------------------------- landscape


def test_landscape_slices_and_directions(accel):
    cpu_m, acc_m = _pair(_mlp(), accel)
    data = _data(n=20)
    d_cpu = P.random_direction(cpu_m, seed=3)
    d_acc = P.random_direction(acc_m, seed=3)
    _check_close(d_acc, d_cpu, rtol=0, atol=0)  # documented: drawn on the CPU, the same on every device
    for t in d_acc.values():
        _on_device(t, accel)
    got = P.random_direction(acc_m, filter_normalize=False, seed=1)
    _check_close(got, P.random_direction(cpu_m, filter_normalize=False, seed=1))
    _check_close(P.random_direction(acc_m, ignore_1d=False), P.random_direction(cpu_m, ignore_1d=False))
    alphas = [-0.5, 0.0, 0.5, 1.0]
    got = P.loss_slice_1d(acc_m, CE, _on(data, accel), alphas=alphas, seed=3)
    _check_close(got, P.loss_slice_1d(cpu_m, CE, data, alphas=alphas, seed=3))
    got = P.loss_slice_1d(acc_m, CE, _on(data, accel), direction=d_acc, alphas=alphas)
    _check_close(got, P.loss_slice_1d(cpu_m, CE, data, direction=d_cpu, alphas=alphas))
    got = P.loss_slice_2d(acc_m, CE, _on(data, accel), alphas=[-0.5, 0.5], betas=[0.0, 0.25, 1.0], seed=2)
    _check_close(got, P.loss_slice_2d(cpu_m, CE, data, alphas=[-0.5, 0.5], betas=[0.0, 0.25, 1.0], seed=2))


def test_landscape_interpolation_and_matching(accel):
    a_cpu, a_acc = _pair(_mlp(seed=0), accel)
    b_cpu, b_acc = _pair(_mlp(seed=1), accel)
    data = _data(n=20)
    got = P.interpolate_state(a_acc.state_dict(), b_acc.state_dict(), 0.3)
    _check_close(got, P.interpolate_state(a_cpu.state_dict(), b_cpu.state_dict(), 0.3))
    _check_close(
        P.interpolation_curve(a_acc, b_acc, CE, _on(data, accel), n_points=5),
        P.interpolation_curve(a_cpu, b_cpu, CE, data, n_points=5),
    )

    def err(out: Tensor, y: Tensor) -> Tensor:
        return (out.argmax(1) != y).double().mean()

    _check_close(
        P.interpolation_barrier(a_acc, b_acc, CE, _on(data, accel), n_points=5, metric=err),
        P.interpolation_barrier(a_cpu, b_cpu, CE, data, n_points=5, metric=err),
    )
    _check_close(
        P.interpolation_barrier(a_acc, b_acc, CE, _on(data, accel), n_points=5),
        P.interpolation_barrier(a_cpu, b_cpu, CE, data, n_points=5),
    )
    m_acc = P.permutation_match_mlp(a_acc, b_acc, seed=0)
    m_cpu = P.permutation_match_mlp(a_cpu, b_cpu, seed=0)
    _check_close(m_acc.state_dict(), m_cpu.state_dict())
    for p in m_acc.parameters():
        _on_device(p, accel)
    m2 = P.permutation_match_mlp(a_acc, b_acc, seed=0, check_inputs=data[0].to(accel))
    _check_close(m2.state_dict(), m_cpu.state_dict())


# ---------------------------------------------------------------------------------------------- merging


def _merge_all(layers: Any, x: Tensor) -> dict[str, Any]:
    merged = P.merge_equivalent_units(layers, beta=1.0)
    return {
        "layers": layers,
        "forward": P.affine_relu_forward(layers, x),
        "merged": merged,
        "merged_forward": P.affine_relu_forward(merged, x),
        "pruned": P.prune_units_by_magnitude(layers, [3, 2]),
        "nearest": P.nearest_unit_distances(layers),
    }


def test_merging(accel):
    cpu_m, acc_m = _pair(_mlp(width=10), accel)
    x, _ = _data(n=8)
    got = _merge_all(P.mlp_affine_layers(acc_m), x.to(accel))
    want = _merge_all(P.mlp_affine_layers(cpu_m), x)
    _check_close(got, want)
    assert [w.shape[0] for w, _ in got["merged"][:-1]] == [w.shape[0] for w, _ in want["merged"][:-1]]


def test_merging_bias_free_mlp(accel):
    # reads merging.py: mlp_affine_layers makes the zero bias of a bias-free layer without device=
    cpu_m, acc_m = _pair(_mlp(width=10, bias=False), accel)
    x, _ = _data(n=8)
    got = _merge_all(P.mlp_affine_layers(acc_m), x.to(accel))
    _check_close(got, _merge_all(P.mlp_affine_layers(cpu_m), x))


# ---------------------------------------------------------------------------------------------- patches


def test_patches(accel):
    ext = P.random_patch_extractor(3, 6, 3, seed=5)
    _check_close(ext, P.random_patch_extractor(3, 6, 3, seed=5), rtol=0, atol=0)  # CPU-seeded: reproducible
    a = _randn(2, 3, 8, 8, seed=29)
    b = _randn(1, 3, 9, 7, seed=30) * 1.3 + 0.2
    _same(P.patch_features, accel, a, ext)
    _on_device(P.patch_features(a.to(accel), _on(ext, accel)), accel)
    _same(P.patch_features, accel, a, ext, relu=False)
    _same(P.patch_fid, accel, a, b, ext)
    _same(P.patch_fid, accel, a, b, ext, relu=False)


# ---------------------------------------------------------------------------------------------- similarity


def _reps() -> tuple[Tensor, Tensor, Tensor]:
    x = _randn(20, 5, seed=31)
    y = torch.tanh(x @ _randn(5, 7, seed=32)) + 0.3 * _randn(20, 7, seed=33)
    wide = torch.relu(x @ _randn(5, 30, seed=34))  # D > N: Gram forms
    return x, y, wide


def test_similarity_cka(accel):
    x, y, wide = _reps()
    for a, b in ((x, y), (x, wide), (wide, y)):
        _same(P.linear_cka, accel, a, b)
        _same(P.linear_cka, accel, a, b, unbiased=True)
        _same(P.hsic1, accel, a, b)
        _same(P.rbf_cka, accel, a, b)
        _same(P.rbf_cka, accel, a, b, sigma_frac=0.8, unbiased=True)
    _same(P.minibatch_cka, accel, x, y, batch_size=8)
    got = P.minibatch_cka([(x[:10].to(accel), y[:10].to(accel)), (x[10:].to(accel), y[10:].to(accel))])
    assert math.isclose(got, P.minibatch_cka([(x[:10], y[:10]), (x[10:], y[10:])]), rel_tol=RTOL)

    def accumulate(dev: torch.device) -> Tensor:
        acc = P.MinibatchCKA()
        for s in (slice(0, 10), slice(10, 20)):
            acc.update({"x": x[s].to(dev), "w": wide[s].to(dev)}, {"y": y[s].to(dev)})
        return acc.compute()

    _check_close(accumulate(accel), accumulate(torch.device("cpu")))
    fa, fb = {"x": x, "w": wide}, {"y": y, "x": x}
    _same(P.cka_matrix, accel, fa, fb)
    _same(P.cka_matrix, accel, fa, fb, unbiased=True)
    _same(P.cka_matrix, accel, fa, fb, kernel="rbf", sigma_frac=0.7)
    _same(P.cka_matrix, accel, fa, fb, batch_size=8)
    _same(P.cka_matrices, accel, [fa, fb, {"z": y * 2}])
    _same(P.cka_matrices, accel, [fa, fb], pairs=[(1, 0)])


def test_similarity_cca(accel):
    x, y, wide = _reps()
    n = x.shape[0]
    _same(P.cca, accel, x, y)
    _same(P.cca, accel, x, y, tol=1e-6)
    _same(P.svcca, accel, x, y)
    _same(P.svcca, accel, wide, y, keep=0.9)
    _same(P.svcca, accel, x, y, keep=3)
    _same(P.pwcca, accel, x, y)
    _same(P.pwcca, accel, y, x)
    fa, fb = {"x": x, "y": y}, {"y": y, "w": wide[:, :8]}
    assert wide[:, :8].shape[1] < n
    _same(P.cca_matrix, accel, fa, fb)
    _same(P.cca_matrices, accel, [fa, fb])


# ---------------------------------------------------------------------------------------------- spectra


def test_spectra_functions(accel):
    w = _randn(6, 3, 2, 2, seed=35)  # conv-shaped: [out, in * k * k]
    _same(P.weight_matrix, accel, w)
    s = _same(P.singular_values, accel, w)
    for fn in (P.numerical_rank, P.stable_rank, P.effective_rank, P.spectral_norm, P.frobenius_norm):
        _same(fn, accel, w)
        _same(fn, accel, s.cpu())  # a vector of singular values
    _same(P.esd, accel, w)
    _same(P.esd, accel, w, normalize=True)
    lin = nn.Linear(4, 3).double()
    assert math.isclose(P.spectral_norm(copy.deepcopy(lin).to(accel)), P.spectral_norm(lin), rel_tol=RTOL)
    big = _randn(80, 40, seed=36)
    ev = P.esd(big)
    assert ev.numel() == 40  # >= 20: the full KS scan
    _same(P.power_law_alpha, accel, ev)
    _same(P.power_law_alpha, accel, ev, max_candidates=8)  # coarse-to-fine
    _same(P.power_law_alpha, accel, ev, xmin=float(ev[20]))
    _same(P.power_law_alpha, accel, ev[-12:])  # small-sample branch


def test_layer_spectra(accel):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, 3)
    ).double()
    cpu_m, acc_m = _pair(model, accel)
    for method in ("gram", "svd"):
        got = P.layer_spectra(acc_m, method=method)
        _check_close(got, P.layer_spectra(cpu_m, method=method), where=f"layer_spectra({method})")
        assert math.isfinite(got[1]["alpha"])  # the 24-eigenvalue layer is fitted


# ---------------------------------------------------------------------------------------------- stability


def _jacobians(T: int = 30, d: int = 3) -> Tensor:
    return 0.6 * _randn(T, d, d, seed=37) + torch.eye(d, dtype=torch.float64)


def test_stability_lyapunov_exponent_given_v0(accel):
    J = _jacobians()
    _same(P.lyapunov_exponent, accel, J, v0=torch.ones(3, dtype=torch.float64))
    _same(P.lyapunov_exponent, accel, J[:, 0, 0], v0=torch.ones(1, dtype=torch.float64))  # scalar factors: d = 1


def test_stability_lyapunov_exponent_default_v0(accel):
    # reads stability.py: the default start vector is drawn and kept on the CPU (a [d] vector, not a 0-d scalar)
    _same(P.lyapunov_exponent, accel, _jacobians(), seed=2)
    _same(P.lyapunov_exponent, accel, _jacobians()[:, 0, 0])  # scalar factors: d = 1


@pytest.mark.parametrize("start", ["seeded", "q0"])
def test_stability_lyapunov_spectrum(accel, start):
    # reads stability.py: the seeded frame and the running sums are CPU tensors
    J = _jacobians()
    kw = {"seed": 1} if start == "seeded" else {"q0": torch.eye(3, dtype=torch.float64)[:, :2], "k": 2}
    got = _same(P.lyapunov_spectrum, accel, J, **kw)
    assert got.shape == ((3,) if start == "seeded" else (2,))


def test_stability_scalar_rates_tensor_lr(accel):
    h = _randn(50, seed=38).abs() * 2
    lrs = torch.tensor([0.1, 0.5, 1.5], dtype=torch.float64)
    _same(P.scalar_lyapunov, accel, lrs, h)
    _same(P.scalar_moment_rate, accel, lrs, h, p=2.0)


def test_stability_scalar_rates_float_lr(accel):
    # reads stability.py: a float lr becomes a CPU tensor and lr[..., None] is 1-D, not a 0-d CPU scalar
    h = _randn(50, seed=38).abs() * 2
    _same(P.scalar_lyapunov, accel, 0.5, h)
    _same(P.scalar_moment_rate, accel, 0.5, h, p=1.5)


def test_stability_moment_growth_rate_scalars(accel):
    a = 1.0 + 0.5 * _randn(6, 20, seed=39)
    _same(P.moment_growth_rate, accel, a[0])  # [T]
    _same(P.moment_growth_rate, accel, a, p=1.0)  # [S, T]


def test_stability_moment_growth_rate_matrices(accel):
    # reads stability.py: the start vector and the log-norm accumulator of the [S, T, d, d] case are CPU tensors
    F = 0.5 * _randn(4, 10, 2, 2, seed=40) + torch.eye(2, dtype=torch.float64)
    _same(P.moment_growth_rate, accel, F, seed=1)
    _same(P.moment_growth_rate, accel, F, v0=torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_stability_sgd(accel):
    H = _randn(5, 3, 3, seed=41)
    H = H @ H.transpose(1, 2)
    got = _same(P.sgd_linear_jacobians, accel, H, 0.1)
    _on_device(P.sgd_linear_jacobians(H.to(accel), 0.1), accel)
    assert got.shape == (5, 3, 3)
    _same(P.sgd_linear_jacobians, accel, H[:, 0, 0], 0.1)
    cpu_m, acc_m = _pair(_mlp(), accel)
    x, y = _data(n=20)
    kw = {"lr": 0.5, "batch_size": 8, "steps": 6, "seed": 3, "burn_in": 2}
    want = P.sgd_lyapunov(cpu_m, CE, (x, y), **kw)
    got = P.sgd_lyapunov(acc_m, CE, (x.to(accel), y.to(accel)), **kw)
    _check_close(got, want)


# ---------------------------------------------------------------------------------------------- mixed devices


def test_model_on_accel_data_on_cpu_observed(accel):
    """OBSERVATIONAL, asserts (almost) nothing: a model (or kernel, extractor) on the accelerator given CPU data.

    ``features`` documents moving the inputs to the model's device ("Inputs are moved to the device of the model's
    parameters"), ``neural_collapse`` takes its inputs "as in features", and ``coord_check``, ``network_bounds`` and
    ``permutation_match_mlp``'s ``check_inputs`` say they move them: those are asserted.
    For every other probe the outcome (ran and matched the CPU call / ran but differed / the error raised) is
    recorded: printed and issued as a ``UserWarning`` (shown in the warnings summary, or with ``-rA``)."""
    cpu_m, acc_m = _pair(_mlp(), accel)
    x, y = _data(n=20)
    torch.manual_seed(0)
    conv_cpu, conv_acc = _pair(_ConvNet().double(), accel)
    xc = _randn(20, 1, 9, seed=5)
    with torch.no_grad():
        yc = conv_cpu(xc).argmax(1)

    # documented:
    _check_close(P.features(acc_m, x, ["act1", "out"]), P.features(cpu_m, x, ["act1", "out"]))
    _check_close(P.neural_collapse(acc_m, (x, y), layer="act2"), P.neural_collapse(cpu_m, (x, y), layer="act2"))
    sgd_ = lambda q: torch.optim.SGD(q.parameters(), lr=0.1)  # noqa: E731
    on_acc = P.coord_check({8: copy.deepcopy(acc_m)}, (x, y), sgd_, ["act1"], steps=1)
    _check_close(on_acc, P.coord_check({8: copy.deepcopy(cpu_m)}, (x, y), sgd_, ["act1"], steps=1))
    _check_close(P.network_bounds(conv_acc, xc, yc, 0.5), P.network_bounds(conv_cpu, xc, yc, 0.5))
    perm = P.permutation_match_mlp(acc_m, acc_m, check_inputs=x).state_dict()
    _check_close(perm, P.permutation_match_mlp(cpu_m, cpu_m, check_inputs=x).state_dict())

    v = _randn(P.n_params(cpu_m), seed=42)
    K = P.empirical_ntk(cpu_m, x[:8])
    ext = P.random_patch_extractor(3, 4, 3, seed=0)
    img = _randn(1, 3, 6, 6, seed=43)

    def sgd(q: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(q.parameters(), lr=0.1)

    # name -> (call on the accelerator side, the same call all on the CPU)
    cases: dict[str, tuple[Any, Any]] = {
        "model_hvp(data on CPU)": (
            lambda: P.model_hvp(acc_m, CE, (x, y))(v.to(accel)),
            lambda: P.model_hvp(cpu_m, CE, (x, y))(v),
        ),
        "model_hvp(vector on CPU)": (
            lambda: P.model_hvp(acc_m, CE, _on((x, y), accel))(v),
            lambda: P.model_hvp(cpu_m, CE, (x, y))(v),
        ),
        "ggn_vp": (lambda: P.ggn_vp(acc_m, CE, (x, y))(v.to(accel)), lambda: P.ggn_vp(cpu_m, CE, (x, y))(v)),
        "full_hessian": (lambda: P.full_hessian(acc_m, CE, (x, y)), lambda: P.full_hessian(cpu_m, CE, (x, y))),
        "hessian_trace": (
            lambda: P.hessian_trace(acc_m, CE, (x, y), samples=4),
            lambda: P.hessian_trace(cpu_m, CE, (x, y), samples=4),
        ),
        "empirical_ntk": (lambda: P.empirical_ntk(acc_m, x[:4]), lambda: P.empirical_ntk(cpu_m, x[:4])),
        "loss_slice_1d": (
            lambda: P.loss_slice_1d(acc_m, CE, (x, y), alphas=[0.0, 1.0]),
            lambda: P.loss_slice_1d(cpu_m, CE, (x, y), alphas=[0.0, 1.0]),
        ),
        "interpolation_curve": (
            lambda: P.interpolation_curve(acc_m, acc_m, CE, (x, y), n_points=2),
            lambda: P.interpolation_curve(cpu_m, cpu_m, CE, (x, y), n_points=2),
        ),
        "sgd_lyapunov": (
            lambda: P.sgd_lyapunov(acc_m, CE, (x, y), 0.1, 8, 3),
            lambda: P.sgd_lyapunov(cpu_m, CE, (x, y), 0.1, 8, 3),
        ),
        "coord_check": (
            lambda: P.coord_check({8: copy.deepcopy(acc_m)}, (x, y), sgd, ["act1"], steps=1),
            lambda: P.coord_check({8: copy.deepcopy(cpu_m)}, (x, y), sgd, ["act1"], steps=1),
        ),
        "network_bounds": (
            lambda: P.network_bounds(conv_acc, xc, yc, margin_quantile=0.5),
            lambda: P.network_bounds(conv_cpu, xc, yc, margin_quantile=0.5),
        ),
        "permutation_match_mlp(check_inputs on CPU)": (
            lambda: P.permutation_match_mlp(acc_m, acc_m, check_inputs=x).state_dict(),
            lambda: P.permutation_match_mlp(cpu_m, cpu_m, check_inputs=x).state_dict(),
        ),
        "kernel_alignment(K on accel, labels on CPU)": (
            lambda: P.kernel_alignment(K.to(accel), y[:8]),
            lambda: P.kernel_alignment(K, y[:8]),
        ),
        "patch_features(images on accel, extractor on CPU)": (
            lambda: P.patch_features(img.to(accel), ext),
            lambda: P.patch_features(img, ext),
        ),
    }
    lines = []
    for name, (on_accel, on_cpu) in cases.items():
        want = on_cpu()
        try:
            got = on_accel()
        except Exception as exc:  # recording, not asserting
            lines.append(f"{name}: raised {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        try:
            _check_close(got, want, where=name)
            lines.append(f"{name}: ran, matches the CPU call")
        except AssertionError as exc:
            lines.append(f"{name}: ran, differs from the CPU call ({str(exc).splitlines()[0][:200]})")
    report = f"model on {accel}, data on cpu:\n  " + "\n  ".join(lines)
    print(report)
    warnings.warn(report, UserWarning, stacklevel=1)


# ---------------------------------------------------------------------------------------------- coverage


COVERED = {
    # activations, attributes
    "features", "module_names", "best_correlations", "correlation_matrix", "mean_best_correlation",
    # bounds
    "conv1d_output_length", "conv1d_toeplitz", "sparse_norm_bound", "toeplitz_norm_bound", "NetworkBounds",
    "network_bounds", "multiclass_margins",
    # causal
    "BatchedAutoencoder", "autoencoder_complexity", "pca_residual",
    # collapse
    "class_means", "within_between_covariance", "nc1", "nc2", "nc3", "nc4", "cdnv", "ncc_accuracy", "ncc_predict",
    "few_shot_ncc_error", "collapse_metrics", "NeuralCollapse", "neural_collapse",
    # coords
    "coord_check", "coord_sizes", "coord_slopes",
    # curvature
    "hvp", "model_hvp", "ggn_vp", "n_params", "flat_params", "lanczos_eigenvalues", "hessian_eigenvalues",
    "top_hessian_eigenvalue", "hessian_trace", "trace_estimate", "slq_nodes", "density_from_nodes",
    "hessian_spectral_density", "gauss_newton_eigenvalues", "full_hessian",
    # generative
    "frechet_distance", "fid", "inception_score", "conditional_scores", "conditional_fid", "gaussian_stats",
    # information
    "entropy_of_rows", "discretize", "binned_mutual_information", "quantize", "dequantize",
    "quantized_mutual_information",
    # kernels
    "empirical_ntk", "kernel_change", "kernel_alignment", "kernel_distance",
    # landscape
    "random_direction", "loss_slice_1d", "loss_slice_2d", "interpolate_state", "interpolation_curve",
    "interpolation_barrier", "permutation_match_mlp",
    # merging
    "mlp_affine_layers", "affine_relu_forward", "merge_equivalent_units", "prune_units_by_magnitude",
    "nearest_unit_distances",
    # patches
    "random_patch_extractor", "patch_features", "patch_fid",
    # similarity
    "linear_cka", "rbf_cka", "hsic1", "minibatch_cka", "MinibatchCKA", "cka_matrix", "cka_matrices", "cca",
    "cca_matrix", "cca_matrices", "svcca", "pwcca",
    # spectra
    "weight_matrix", "singular_values", "numerical_rank", "stable_rank", "effective_rank", "spectral_norm",
    "frobenius_norm", "esd", "PowerLawFit", "power_law_alpha", "layer_spectra",
    # stability
    "lyapunov_exponent", "lyapunov_spectrum", "scalar_lyapunov", "moment_growth_rate", "scalar_moment_rate",
    "sgd_linear_jacobians", "sgd_lyapunov",
}  # fmt: skip
#: public names that are not device-dependent probes: the thread-count context manager
NOT_PROBES = {"threads"}


def test_every_public_probe_is_covered(accel):
    missing = set(P._index()) - COVERED - NOT_PROBES
    assert not missing, f"public probes without an accelerator test here: {sorted(missing)}"
