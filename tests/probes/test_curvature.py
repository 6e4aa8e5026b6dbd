import math

import pytest
import torch
from torch import nn

from phenomlab.probes._params import rng_vector
from phenomlab.probes.curvature import (
    density_from_nodes,
    flat_params,
    full_hessian,
    gauss_newton_eigenvalues,
    ggn_vp,
    hessian_eigenvalues,
    hessian_spectral_density,
    hessian_trace,
    hvp,
    lanczos_eigenvalues,
    model_hvp,
    n_params,
    slq_nodes,
    top_hessian_eigenvalue,
    trace_estimate,
)

CE = nn.CrossEntropyLoss()


def _tiny(seed: int = 0, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 3)).double()


@pytest.fixture(scope="module")
def setup():
    model = _tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (48,), generator=g)
    H = full_hessian(model, CE, (x, y))
    return model, x, y, H


def test_full_hessian_matches_finite_differences(setup):
    model, x, y, H = setup
    assert H.shape == (n_params(model), n_params(model))
    assert torch.allclose(H, H.T, atol=1e-12)
    theta = flat_params(model)
    params = list(model.parameters())

    def grad_at(flat):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat, params)
        loss = CE(model(x), y)
        g = torch.autograd.grad(loss, params)
        return torch.cat([t.reshape(-1) for t in g])

    h = 1e-5
    for i in (0, 7, 30, 50):
        e = torch.zeros_like(theta)
        e[i] = h
        col = (grad_at(theta + e) - grad_at(theta - e)) / (2 * h)
        assert torch.allclose(col, H[:, i], atol=1e-8)
    grad_at(theta)  # restore


def test_model_hvp_matches_dense(setup):
    model, x, y, H = setup
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for cache in (True, False):
        mv = model_hvp(model, CE, (x, y), cache=cache)
        assert torch.allclose(mv(v), H @ v, atol=1e-12)
    # several batches: the sample-weighted mean loss, so the same Hessian
    batches = [(x[:10], y[:10]), (x[10:30], y[10:30]), (x[30:], y[30:])]
    assert torch.allclose(model_hvp(model, CE, batches)(v), H @ v, atol=1e-12)


def test_functional_hvp():
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    b = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)

    def f(p):
        return (p["a"] ** 3).sum() + p["a"][0] * (p["b"] ** 2).sum()

    v = {"a": torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64), "b": torch.ones(2, 2, dtype=torch.float64)}
    out = hvp(f, {"a": a, "b": b}, v)
    # d2f/da2 = diag(6a); d2f/da0 db = 2b; d2f/db2 = 2 a0 I
    exp_a = 6 * a * v["a"] + torch.tensor([(2 * b * v["b"]).sum(), 0.0, 0.0], dtype=torch.float64)
    exp_b = 2 * b * v["a"][0] + 2 * a[0] * v["b"]
    assert torch.allclose(out["a"], exp_a) and torch.allclose(out["b"], exp_b)
    with pytest.raises(ValueError, match="structure"):
        hvp(f, {"a": a, "b": b}, {"a": v["a"]})
    with pytest.raises(ValueError, match="shaped"):
        hvp(f, {"a": a, "b": b}, {"a": v["a"], "b": torch.ones(3)})


def test_top_eigenvalues_match_dense(setup):
    model, x, y, H = setup
    ev = torch.linalg.eigvalsh(H)
    top = hessian_eigenvalues(model, CE, (x, y), k=3)
    assert torch.allclose(top, ev.flip(0)[:3], rtol=1e-4, atol=0)
    assert torch.allclose(top, ev.flip(0)[:3], rtol=1e-8, atol=1e-10)  # far tighter than promised
    bottom = hessian_eigenvalues(model, CE, (x, y), k=2, which="SA")
    assert torch.allclose(bottom, ev[:2], rtol=1e-6)
    lm = hessian_eigenvalues(model, CE, (x, y), k=1, which="LM")
    assert math.isclose(float(lm[0]), float(ev[ev.abs().argmax()]), rel_tol=1e-6)
    lam, vec = top_hessian_eigenvalue(model, CE, (x, y), return_vector=True)
    assert math.isclose(lam, float(ev[-1]), rel_tol=1e-4)
    assert torch.allclose(H @ vec, lam * vec, atol=1e-3 * lam)


def test_lanczos_explicit_and_warm_start():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    evals = torch.cat([torch.tensor([10.0, 9.9, 9.8]), torch.linspace(-1, 5, 197)]).double()
    A = (Q * evals) @ Q.T
    calls = []

    def mv(v):
        calls.append(1)
        return A @ v

    vals, vecs = lanczos_eigenvalues(mv, 200, k=3, tol=1e-8, return_vectors=True)
    assert torch.allclose(vals, evals[:3], rtol=1e-10)
    cold = len(calls)
    assert cold < 200  # converged before exhausting the space
    calls.clear()
    warm = lanczos_eigenvalues(mv, 200, k=1, tol=1e-8, v0=vecs[:, 0])
    assert math.isclose(float(warm[0]), 10.0, rel_tol=1e-10)
    assert len(calls) <= 3 < cold
    with pytest.warns(RuntimeWarning, match="without reaching tol"):
        lanczos_eigenvalues(mv, 200, k=1, iters=3, tol=1e-12)


def test_trace_hutchinson_and_slq(setup):
    model, x, y, H = setup
    n = H.shape[0]
    exact = float(H.trace())
    est, se = hessian_trace(model, CE, (x, y), samples=300, seed=0, return_std=True)
    # Rademacher variance 2 (||H||_F^2 - sum H_ii^2) / samples
    sd = math.sqrt(2 * (float((H**2).sum()) - float((H.diagonal() ** 2).sum())) / 300)
    assert abs(est - exact) < 4 * sd
    assert 0.5 * sd < se < 2 * sd

    runs = 20
    grid, dens = hessian_spectral_density(model, CE, (x, y), iters=30, runs=runs, seed=5)
    assert math.isclose(float(torch.trapezoid(dens, grid)), 1.0, abs_tol=1e-6)
    nodes, w = slq_nodes(model_hvp(model, CE, (x, y)), n, iters=30, runs=runs, seed=5)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
    mean = float((nodes * w).sum())
    assert math.isclose(float(torch.trapezoid(dens * grid, grid)), mean, rel_tol=1e-4, abs_tol=1e-8)
    # Gauss quadrature reproduces z^T H z / n exactly for the same Rademacher vectors
    same = hessian_trace(model, CE, (x, y), samples=runs, seed=5) / n
    assert math.isclose(mean, same, rel_tol=1e-9)
    assert abs(mean - exact / n) < 4 * sd * math.sqrt(300 / runs) / n
    # nodes lie inside the spectrum
    ev = torch.linalg.eigvalsh(H)
    assert float(nodes.min()) >= float(ev[0]) - 1e-9 and float(nodes.max()) <= float(ev[-1]) + 1e-9


def test_density_from_nodes():
    nodes = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    grid, d = density_from_nodes(nodes, w, sigma=0.05)
    assert math.isclose(float(torch.trapezoid(d, grid)), 1.0, abs_tol=1e-8)
    with pytest.raises(ValueError):
        density_from_nodes(nodes, w[:2])
    with pytest.raises(ValueError):
        density_from_nodes(nodes, w, sigma=-1.0)


def _explicit_ggn(model, x, y, loss_fn):
    params = list(model.parameters())
    out = model(x)
    rows = []
    for i in range(out.shape[0]):
        for o in range(out.shape[1]):
            g = torch.autograd.grad(out[i, o], params, retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
    J = torch.stack(rows)  # [N*O, P]
    od = out.detach()
    Hout = torch.autograd.functional.hessian(lambda o: loss_fn(o, y), od).reshape(od.numel(), od.numel())
    return J.T @ Hout @ J


def test_ggn_matches_explicit(setup):
    model, x, y, H = setup
    G = _explicit_ggn(model, x[:20], y[:20], CE)
    v = torch.randn(G.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for cache in (True, False):
        assert torch.allclose(ggn_vp(model, CE, (x[:20], y[:20]), cache=cache)(v), G @ v, atol=1e-12)
    top = gauss_newton_eigenvalues(model, CE, (x[:20], y[:20]), k=2)
    assert torch.allclose(top, torch.linalg.eigvalsh(G).flip(0)[:2], rtol=1e-6)
    # GGN is PSD for cross-entropy; the Hessian itself is not
    assert float(torch.linalg.eigvalsh(G)[0]) > -1e-10


def test_ggn_equals_hessian_for_linear_mse():
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    mse = nn.MSELoss()
    H = full_hessian(model, mse, (x, y))
    v = torch.randn(H.shape[0], dtype=torch.float64)
    assert torch.allclose(ggn_vp(model, mse, [(x[:12], y[:12]), (x[12:], y[12:])])(v), H @ v, atol=1e-12)


def test_eval_mode_restored_and_dropout_deterministic():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2)).double()
    model.train()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    a = hessian_eigenvalues(model, CE, (x, y), k=1)
    b = hessian_eigenvalues(model, CE, (x, y), k=1)
    assert torch.equal(a, b)
    assert all(m.training for m in model.modules())


def test_unused_and_frozen_parameters():
    torch.manual_seed(0)
    model = _tiny()
    model.register_parameter("unused", nn.Parameter(torch.zeros(3, dtype=torch.float64)))
    model[0].bias.requires_grad_(False)
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    n = n_params(model)
    assert n == 24 + 21 + 3
    H = full_hessian(model, CE, (x, y))
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    start = 0 if names[0] == "unused" else n - 3
    assert names.count("unused") == 1 and H.shape == (n, n)
    assert float(H[start : start + 3].abs().max()) == 0.0
    v = torch.randn(n, dtype=torch.float64)
    assert torch.allclose(model_hvp(model, CE, (x, y))(v), H @ v, atol=1e-12)


def test_float32_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    lam = top_hessian_eigenvalue(model, CE, (x, y), tol=1e-5)
    ref = float(torch.linalg.eigvalsh(full_hessian(model.double(), CE, (x.double(), y)))[-1])
    assert math.isclose(lam, ref, rel_tol=1e-4)


def test_bad_inputs(setup):
    model, x, y, H = setup
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hessian_eigenvalues(model, CE, (bad, y))
    with pytest.raises(ValueError, match="different lengths"):
        model_hvp(model, CE, (x, y[:-1]))
    with pytest.raises(ValueError, match="scalar"):
        model_hvp(model, nn.CrossEntropyLoss(reduction="none"), (x, y))
    with pytest.raises(ValueError, match="no samples"):
        model_hvp(model, CE, [])
    with pytest.raises(ValueError, match="pair"):
        model_hvp(model, CE, x)
    mv = model_hvp(model, CE, (x, y))
    with pytest.raises(ValueError, match="shape"):
        mv(torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        mv(torch.full((H.shape[0],), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="k must"):
        hessian_eigenvalues(model, CE, (x, y), k=0)
    with pytest.raises(ValueError, match="which"):
        hessian_eigenvalues(model, CE, (x, y), which="XX")
    with pytest.raises(ValueError, match="v0"):
        top_hessian_eigenvalue(model, CE, (x, y), v0=torch.zeros(H.shape[0], dtype=torch.float64))
    with pytest.raises(ValueError, match="samples"):
        hessian_trace(model, CE, (x, y), samples=0)
    frozen = _tiny()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        model_hvp(frozen, CE, (x, y))


# ----------------------------------------------------------------------------------------------
# variance-reduced trace estimators
# ----------------------------------------------------------------------------------------------


def _sym(n: int, eigs, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ q.T


def _counted(a: torch.Tensor):
    calls = []

    def mv(v):
        calls.append(1)
        return a @ v

    return mv, calls


@pytest.mark.parametrize("singular", [False, True])
def test_hutchpp_is_exact_with_3n_products(singular):
    # Meyer et al. 2021: with k = samples // 3 >= n sketch columns Q spans R^n and tr(Q^T A Q) = tr(A).
    n = 20
    eigs = torch.linspace(-3.0, 7.0, n, dtype=torch.float64)
    if singular:
        eigs[::2] = 0.0  # rank 10: A S spans only range(A); the QR still returns an orthonormal basis of R^n
    a = _sym(n, eigs)
    for samples in (3 * n, 3 * n + 2, 4 * n):
        mv, calls = _counted(a)
        est, se = trace_estimate(mv, n, samples=samples, method="hutch++", seed=3)
        assert est == pytest.approx(float(a.trace()), rel=1e-12, abs=1e-11)
        assert se < 1e-12
        assert len(calls) == samples
    # Below 3n it is an estimate, unless k >= rank(A): then A S spans range(A) and P A P = 0.
    est = trace_estimate(a.__matmul__, n, samples=30, method="hutch++")[0]
    if singular:
        assert est == pytest.approx(float(a.trace()), rel=1e-12)
    else:
        assert est != pytest.approx(float(a.trace()), rel=1e-6)


def test_krylov_trace_is_exact_with_2n_products_and_spends_its_budget():
    n = 25
    a = _sym(n, torch.linspace(-2.0, 9.0, n, dtype=torch.float64) ** 3, seed=1)  # distinct eigenvalues
    mv, calls = _counted(a)
    est, se = trace_estimate(mv, n, samples=2 * n, method="krylov", seed=4)
    assert est == pytest.approx(float(a.trace()), rel=1e-10)
    assert se < 1e-9
    assert len(calls) == 2 * n
    # An invariant subspace stops Lanczos early (two distinct eigenvalues: after 2 steps); the products
    # not spent there go to the residual term.
    b = _sym(n, [5.0] * 10 + [1.0] * 15, seed=2)
    mv, calls = _counted(b)
    est, se = trace_estimate(mv, n, samples=20, method="krylov", seed=0)
    assert len(calls) == 20
    # the Krylov space is 2-dimensional; the 18 products left estimate the trace of the deflated rest
    assert 0 < se and abs(est - float(b.trace())) < 4 * se


def test_trace_estimators_are_unbiased_with_calibrated_error_bars():
    # Random PSD matrix with a decaying spectrum (as a trained net's Hessian): each estimator's mean over
    # 400 seeds lies within 4 standard errors of tr(A); its reported error bar matches the spread over
    # seeds; and the deflated ones have a much smaller spread than Hutchinson at the same budget.
    n, runs, samples = 60, 400, 15
    eigs = 10.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 1.5
    a = _sym(n, eigs, seed=5)
    exact = float(a.trace())
    spread = {}
    for method in ("hutchinson", "hutch++", "krylov"):
        out = torch.tensor([trace_estimate(a.__matmul__, n, samples, method, seed=s) for s in range(runs)])
        est, se = out[:, 0], out[:, 1]
        sd = float(est.std())
        assert abs(float(est.mean()) - exact) < 4 * sd / math.sqrt(runs), method
        assert 0.7 < float(se.pow(2).mean().sqrt()) / sd < 1.4, method
        spread[method] = sd
    hutch_sd = math.sqrt(2 * (float((a**2).sum()) - float((a.diagonal() ** 2).sum())) / samples)
    assert spread["hutchinson"] == pytest.approx(hutch_sd, rel=0.15)
    assert spread["hutch++"] < 0.5 * spread["hutchinson"]
    assert spread["krylov"] < 0.2 * spread["hutchinson"]


def test_hessian_trace_methods_against_the_dense_hessian(setup):
    model, x, y, H = setup
    n = H.shape[0]
    exact = float(H.trace())
    est = hessian_trace(model, CE, (x, y), samples=3 * n, method="hutch++", seed=1)
    assert est == pytest.approx(exact, rel=1e-9, abs=1e-9)
    # default method unchanged: the same Rademacher probes as before the methods were added
    z = [rng_vector(n, 7 * 1_000_003 + j, torch.float64, torch.device("cpu"), "rademacher") for j in range(5)]
    plain = sum(float(v @ H @ v) for v in z) / 5
    assert hessian_trace(model, CE, (x, y), samples=5, seed=7) == pytest.approx(plain, rel=1e-9)
    for method in ("hutch++", "krylov"):
        e, se = hessian_trace(model, CE, (x, y), samples=30, method=method, seed=2, return_std=True)
        assert abs(e - exact) < 4 * se, method
    with pytest.raises(ValueError, match="method"):
        hessian_trace(model, CE, (x, y), method="exact")
    with pytest.raises(ValueError, match="samples"):
        hessian_trace(model, CE, (x, y), samples=2, method="hutch++")
    with pytest.raises(ValueError, match="shape"):
        trace_estimate(lambda v: v[:3], 10, samples=3, method="hutch++")


def test_train_mode_operator_leaves_batchnorm_running_stats():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    v = torch.randn(n_params(net), dtype=torch.float64)
    for cache in (True, False):
        mv = model_hvp(net, nn.MSELoss(), (x, y), cache=cache, eval_mode=False)
        first = mv(v)
        assert torch.equal(mv(v), first)  # the same batch statistics every product
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net.training
