"""Curvature of the loss: Hessian-vector products, Lanczos eigenvalues, Hutchinson trace, spectral density.

References
----------
- B. Pearlmutter (1994), "Fast exact multiplication by the Hessian", Neural Computation 6(1) (HVP).
- C. Lanczos (1950), "An iteration method for the solution of the eigenvalue problem of linear
  differential and integral operators"; full reorthogonalisation as in Golub & Van Loan, ch. 10.
- M. Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for Laplacian
  smoothing splines" (Rademacher trace estimator).
- B. Ghorbani, S. Krishnan, Y. Xiao (2019), "An investigation into neural net optimization via Hessian
  eigenvalue density", ICML, arXiv 1901.10159 (stochastic Lanczos quadrature, SLQ).
- Z. Yao, A. Gholami, K. Keutzer, M. Mahoney (2020), "PyHessian: neural networks through the lens of
  the Hessian", arXiv 1912.07145.
- N. Schraudolph (2002), "Fast curvature matrix-vector products for second-order gradient descent",
  Neural Computation 14(7) (generalised Gauss-Newton products J^T H_out J v).

Conventions
-----------
``data`` is one batch ``(inputs, targets)`` or a sequence / iterable of such batches (a DataLoader
works); ``inputs`` is a tensor or a mapping of tensors passed as keyword arguments, ``model(**inputs)``.
``loss_fn(model(inputs), targets)`` must return a scalar *mean* over its batch; the loss
over several batches is the sample-weighted mean ``L = sum_b (n_b / N) L_b``, so every curvature
quantity here is that of the full-data mean loss. Vectors live in the space of the model's
*trainable* parameters (``requires_grad``), flattened in ``named_parameters()`` order; their length
is ``n_params(model)``. Models are evaluated in eval mode (dropout off, BatchNorm running stats), as
PyHessian does; each submodule's train/eval flag is restored afterwards.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._params import (
    ParamSpace,
    as_batches,
    call_model,
    eval_mode,
    kept_buffers,
    rng_vector,
    scalar_loss,
)
from phenomlab.probes._threads import model_pass_threads, one_thread

__all__ = [
    "hvp",
    "model_hvp",
    "ggn_vp",
    "n_params",
    "flat_params",
    "lanczos_eigenvalues",
    "hessian_eigenvalues",
    "top_hessian_eigenvalue",
    "hessian_trace",
    "trace_estimate",
    "slq_nodes",
    "density_from_nodes",
    "hessian_spectral_density",
    "gauss_newton_eigenvalues",
    "full_hessian",
]

Matvec = Callable[[Tensor], Tensor]
LossFn = Callable[[Any, Any], Tensor]
_WHICH = ("LA", "SA", "LM")


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters: the dimension of every curvature vector of ``model``."""
    return ParamSpace(model).n


def flat_params(model: nn.Module) -> Tensor:
    """The trainable parameters of ``model`` as one detached flat vector (``named_parameters`` order)."""
    space = ParamSpace(model)
    return space.flatten([p.detach() for p in space.params])


# ----------------------------------------------------------------------------------------------
# products
# ----------------------------------------------------------------------------------------------


def hvp(loss_fn_of_params: Callable[[Any], Tensor], params: Any, v: Any) -> Any:
    """Hessian-vector product ``H v`` of a scalar function of a pytree of tensors (Pearlmutter 1994).

    ``H = d^2 f / d params^2`` at ``params``; ``v`` has the structure of ``params`` (a tensor, a tuple
    or a dict of tensors) and so does the result. Computed reverse-over-reverse,
    ``vjp(grad(f), params)(v)``, valid because ``H`` is symmetric (timings: docs/PROBES.md).
    """
    from torch.utils._pytree import tree_flatten

    p_leaves, p_spec = tree_flatten(params)
    v_leaves, v_spec = tree_flatten(v)
    if p_spec != v_spec or len(p_leaves) != len(v_leaves):
        raise PhenomlabError("v must have the same structure as params")
    for i, (p, u) in enumerate(zip(p_leaves, v_leaves, strict=True)):
        if not isinstance(p, Tensor) or not isinstance(u, Tensor) or p.shape != u.shape:
            raise PhenomlabError(f"v leaf {i} must be a tensor shaped like params leaf {i}")
        if not bool(torch.isfinite(u).all()):
            raise PhenomlabError("v contains NaN/inf")
    _, vjp_fn = torch.func.vjp(torch.func.grad(loss_fn_of_params), params)
    return vjp_fn(v)[0]


def _operator(
    model: nn.Module,
    data: Any,
    build: Callable[[ParamSpace, Any, Any], tuple[Any, ...]],
    apply: Callable[[ParamSpace, tuple[Any, ...], Tensor, bool], Tensor],
    cache: bool,
    eval_on: bool,
) -> Matvec:
    """``v -> sum_b (n_b / N) apply(build(x_b, y_b), v)`` over the batches of ``data``.

    With ``cache`` each batch's graph is built once and kept (``apply`` then retains it).
    """
    space = ParamSpace(model)
    batches = as_batches(data, space.device)

    def work() -> AbstractContextManager[None]:
        return model_pass_threads(space.n, batches.total, space.device)

    graphs: list[tuple[tuple[Any, ...], float]] = []
    if cache:
        with eval_mode(model, eval_on), kept_buffers(model), work():
            graphs = [(build(space, x, y), w) for x, y, w in batches]

    def matvec(v: Tensor) -> Tensor:
        v = space.check_vector(v)
        out = torch.zeros(space.n, dtype=space.dtype, device=space.device)
        if cache:
            with work():
                for parts, w in graphs:
                    out.add_(apply(space, parts, v, True), alpha=w)
            return out
        with eval_mode(model, eval_on), kept_buffers(model), work():
            for x, y, w in batches:
                out.add_(apply(space, build(space, x, y), v, False), alpha=w)
        return out

    matvec.n = space.n  # type: ignore[attr-defined]
    matvec.dtype = space.dtype  # type: ignore[attr-defined]
    matvec.device = space.device  # type: ignore[attr-defined]
    return matvec


def _zero(space: ParamSpace) -> Tensor:
    return torch.zeros(space.n, dtype=space.dtype, device=space.device)


def model_hvp(model: nn.Module, loss_fn: LossFn, data: Any, *, cache: bool = True, eval_mode: bool = True) -> Matvec:
    """Closure ``v -> H v`` for the Hessian of the data-mean loss w.r.t. the flat trainable parameters.

    ``H v = sum_b (n_b / N) d/dtheta [grad L_b(theta) . v]`` (Pearlmutter 1994, by double backward).
    With ``cache=True`` each batch's forward pass and gradient graph are built once and every product
    costs one second backward per batch (PyHessian does the same for a single batch); this holds
    every batch's graph in memory, so pass ``cache=False`` for data that does not fit, at about 1.6x
    the cost per product. The closure accepts and returns vectors of shape ``[n_params(model)]`` on
    the model's device and dtype; it has attributes ``n``, ``dtype`` and ``device``.

    ``eval_mode=True`` runs the model in eval mode (Dropout off, BatchNorm on its running statistics);
    ``eval_mode=False`` keeps the model's own train/eval flags: BatchNorm then uses batch statistics (its
    running statistics are restored after every pass, so the probe leaves the model as it was) and an active
    Dropout draws its masks when a graph is built: one random operator with ``cache=True``, a different one at
    every product with ``cache=False`` (which Lanczos cannot use).
    """

    def build(space: ParamSpace, x: Any, y: Any) -> tuple[Any, ...]:
        loss = scalar_loss(loss_fn(call_model(model, x), y))
        grads = torch.autograd.grad(loss, space.params, create_graph=True, allow_unused=True)
        # A parameter whose gradient does not depend on the parameters (loss linear in it, or unused)
        # contributes a zero block: only the others enter the second backward.
        idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[i] for i in idx], idx

    def apply(space: ParamSpace, parts: tuple[Any, ...], v: Tensor, retain: bool) -> Tensor:
        g, idx = parts
        if not idx:
            return _zero(space)
        vs = space.unflatten(v)
        try:
            hv = torch.autograd.grad(
                g, space.params, grad_outputs=[vs[i] for i in idx], retain_graph=retain, allow_unused=True
            )
        except RuntimeError as exc:
            if "derivative for" not in str(exc):
                raise
            # fused kernels (PyTorch's flash/efficient scaled-dot-product attention) have no double backward
            raise PhenomlabError(
                f"the model uses an operation without a second derivative ({str(exc).splitlines()[0]}); "
                "Hessian probes need double backward: for Hugging Face models build or load them with "
                "attn_implementation='eager'"
            ) from None
        return space.flatten(hv)

    return _operator(model, data, build, apply, cache, eval_mode)


def ggn_vp(model: nn.Module, loss_fn: LossFn, data: Any, *, cache: bool = True, eval_mode: bool = True) -> Matvec:
    """Closure ``v -> G v`` for the generalised Gauss-Newton matrix (Schraudolph 2002).

    ``G = sum_b (n_b / N) J_b^T H_out,b J_b`` with ``J_b = d model(x_b) / d theta`` and
    ``H_out,b = d^2 L_b / d out^2``; ``G`` equals the Hessian minus the term that carries the second
    derivatives of the network, and is PSD whenever the loss is convex in the outputs (MSE,
    cross-entropy). Each product is three cached backward passes per batch: ``J v`` by the double-vjp
    trick (differentiate the linear map ``u -> J^T u`` w.r.t. ``u``), ``H_out (J v)`` by a double
    backward through the loss alone, then ``J^T (.)``.

    ``eval_mode`` as in :func:`model_hvp`.
    """

    def build(space: ParamSpace, x: Any, y: Any) -> tuple[Any, ...]:
        out = call_model(model, x)
        if not isinstance(out, Tensor):
            raise PhenomlabError(f"ggn_vp needs a model that returns one tensor, got {type(out).__name__}")
        out_d = out.detach().requires_grad_(True)
        loss = scalar_loss(loss_fn(out_d, y))
        (gl,) = torch.autograd.grad(loss, out_d, create_graph=True)
        u = torch.zeros_like(out, requires_grad=True)
        jtu = torch.autograd.grad(out, space.params, grad_outputs=u, create_graph=True, allow_unused=True)
        idx = [i for i, t in enumerate(jtu) if t is not None]
        return out, out_d, gl, u, [jtu[i] for i in idx], idx

    def apply(space: ParamSpace, parts: tuple[Any, ...], v: Tensor, retain: bool) -> Tensor:
        out, out_d, gl, u, jtu, idx = parts
        if not idx:
            return _zero(space)
        vs = space.unflatten(v)
        (jv,) = torch.autograd.grad(jtu, u, grad_outputs=[vs[i] for i in idx], retain_graph=True)
        if not gl.requires_grad:  # loss linear in the outputs: H_out = 0
            return _zero(space)
        (hjv,) = torch.autograd.grad(gl, out_d, grad_outputs=jv, retain_graph=retain)
        g = torch.autograd.grad(out, space.params, grad_outputs=hjv, retain_graph=retain, allow_unused=True)
        return space.flatten(g)

    return _operator(model, data, build, apply, cache, eval_mode)


# ----------------------------------------------------------------------------------------------
# Lanczos
# ----------------------------------------------------------------------------------------------


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")


def _lanczos(
    matvec: Matvec, v0: Tensor, m: int, stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None
) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """``m`` steps of Lanczos with full reorthogonalisation from ``v0``.

    Returns the diagonal ``alpha`` [j], off-diagonal ``beta`` [j-1] of the tridiagonal ``T_j`` and the
    Lanczos basis ``Q`` [j, n]; ``stop(alpha, beta, beta_next)`` is asked after every step.
    """
    with one_thread(v0):
        return _lanczos_loop(matvec, v0, m, stop)


def _lanczos_loop(
    matvec: Matvec, v0: Tensor, m: int, stop: Callable[[np.ndarray, np.ndarray, float], bool] | None
) -> tuple[np.ndarray, np.ndarray, Tensor]:
    n = v0.numel()
    Q = torch.empty((m, n), dtype=v0.dtype, device=v0.device)
    q = v0 / torch.linalg.vector_norm(v0)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for j in range(m):
        Q[j] = q
        w = matvec(q)
        if w.shape != (n,):
            raise PhenomlabError(f"matvec returned shape {tuple(w.shape)}, expected ({n},)")
        w = w.to(dtype=Q.dtype, device=Q.device)
        alpha = float(torch.dot(q, w))
        # Classical Gram-Schmidt against the whole basis, twice ("twice is enough", Giraud et al. 2005):
        # in floating point the three-term recurrence alone loses orthogonality as soon as a Ritz value
        # converges, which would produce spurious copies of the top eigenvalue.
        basis = Q[: j + 1]
        w = w - basis.T @ (basis @ w)
        w = w - basis.T @ (basis @ w)
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        scale = max(scale, abs(alpha), beta)
        a, b = np.asarray(alphas), np.asarray(betas)
        # An (almost) zero beta means the Krylov space is invariant: T_j's eigenvalues are exact.
        if (stop is not None and stop(a, b, beta)) or j + 1 == m or beta <= 1e-12 * max(scale, 1e-300):
            return a, b, Q[: j + 1]
        betas.append(beta)
        q = w / beta
    return np.asarray(alphas), np.asarray(betas), Q[:m]


def _tridiag_eig(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.size == 1:
        return a.astype(np.float64), np.ones((1, 1))
    return eigh_tridiagonal(a.astype(np.float64), b.astype(np.float64))


def lanczos_eigenvalues(
    matvec: Matvec,
    n: int,
    k: int = 1,
    which: str = "LA",
    iters: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
    v0: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    return_vectors: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``k`` extreme eigenvalues of a symmetric operator given only ``v -> A v`` (Lanczos 1950).

    Runs up to ``iters`` Lanczos steps with full reorthogonalisation and stops once the ``k`` wanted
    Ritz pairs ``(theta_i, y_i)`` have residual ``||A y_i - theta_i y_i|| = beta_j |s_{j,i}| <= tol *
    |theta_i|``; for a symmetric matrix an eigenvalue lies within that residual of ``theta_i``
    (and within residual^2 / gap once it is isolated). ``which``: ``"LA"`` largest algebraic,
    ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude. Returns a float64 CPU tensor of ``k``
    values in that order, and with ``return_vectors`` also the Ritz vectors ``[n, k]`` (unit norm,
    in ``dtype`` on ``device``). ``v0`` warm-starts the iteration (e.g. the previous top eigenvector).
    """
    if which not in _WHICH:
        raise PhenomlabError(f"which must be one of {_WHICH}, got {which!r}")
    if not isinstance(n, int) or n < 1:
        raise PhenomlabError(f"n must be a positive int, got {n!r}")
    if not 1 <= k <= n:
        raise PhenomlabError(f"k must be in [1, n={n}], got {k}")
    if iters < 1:
        raise PhenomlabError(f"iters must be >= 1, got {iters}")
    if not tol > 0:
        raise PhenomlabError(f"tol must be > 0, got {tol}")
    if v0 is None:
        v0 = rng_vector(n, seed, dtype, torch.device(device) if device is not None else torch.device("cpu"))
    else:
        if not isinstance(v0, Tensor) or v0.shape != (n,):
            raise PhenomlabError(f"v0 must be a tensor of shape ({n},)")
        if not bool(torch.isfinite(v0).all()) or float(torch.linalg.vector_norm(v0)) == 0.0:
            raise PhenomlabError("v0 must be finite and non-zero")
        v0 = v0.to(dtype=dtype, device=device if device is not None else v0.device)
    m = min(max(iters, k), n)

    state = {"ok": False, "res": float("nan")}

    def converged(a: np.ndarray, b: np.ndarray, beta: float) -> bool:
        if a.size < k + 1 and a.size < n:
            return False
        theta, s = _tridiag_eig(a, b)
        sel = _order(theta, which)[:k]
        res = beta * np.abs(s[-1, sel]) / np.maximum(np.abs(theta[sel]), 1e-30)
        state["res"] = float(res.max()) if res.size else float("nan")
        state["ok"] = bool(res.size == k and np.all(res <= tol)) or a.size == n
        return state["ok"]

    a, b, Q = _lanczos(matvec, v0, m, converged)
    if not state["ok"]:
        warnings.warn(
            f"Lanczos stopped after {a.size} steps without reaching tol={tol:g} "
            f"(relative residual {state['res']:.2g}); raise iters for a converged result",
            RuntimeWarning,
            stacklevel=2,
        )
    theta, s = _tridiag_eig(a, b)
    sel = _order(theta, which)[:k]
    if sel.size < k:  # invariant subspace smaller than k: the start vector missed part of the spectrum
        raise PhenomlabError(f"the Krylov space from this start vector has dimension {sel.size} < k={k}")
    vals = torch.from_numpy(np.ascontiguousarray(theta[sel])).to(torch.float64)
    if not return_vectors:
        return vals
    S = torch.from_numpy(np.ascontiguousarray(s[:, sel])).to(dtype=Q.dtype, device=Q.device)
    vecs = Q.T @ S
    vecs = vecs / torch.linalg.vector_norm(vecs, dim=0, keepdim=True)
    return vals, vecs


def _operator_eigenvalues(mv: Matvec, k: int, which: str, options: dict[str, Any]) -> Tensor | tuple[Tensor, Tensor]:
    n, dtype, device = mv.n, mv.dtype, mv.device  # type: ignore[attr-defined]
    return lanczos_eigenvalues(mv, n, k=k, which=which, dtype=dtype, device=device, **options)


def hessian_eigenvalues(
    model: nn.Module, loss_fn: LossFn, data: Any, k: int = 1, which: str = "LA", **lanczos: Any
) -> Tensor | tuple[Tensor, Tensor]:
    """``k`` extreme eigenvalues of the loss Hessian by Lanczos with full reorthogonalisation.

    ``H = d^2 L / d theta^2`` over the trainable parameters, ``L`` the data-mean loss; products by
    :func:`model_hvp` (Pearlmutter 1994), eigenvalues as in :func:`lanczos_eigenvalues` (Lanczos
    needs far fewer products than the power iteration of PyHessian, Yao et al. 2020, arXiv 1912.07145,
    because its error falls like a Chebyshev polynomial in the gap instead of ``(lambda_2/lambda_1)^t``).
    ``lanczos``: ``iters`` (100), ``tol`` (1e-6, the relative Ritz residual), ``seed``, ``v0`` and
    ``return_vectors`` of :func:`lanczos_eigenvalues`. Returns a float64 CPU tensor ``[k]`` (largest
    first for ``"LA"``); with ``return_vectors`` also the eigenvectors ``[n_params, k]``.
    """
    return _operator_eigenvalues(model_hvp(model, loss_fn, data), k, which, lanczos)


def top_hessian_eigenvalue(
    model: nn.Module, loss_fn: LossFn, data: Any, *, tol: float = 1e-4, return_vector: bool = False, **lanczos: Any
) -> float | tuple[float, Tensor]:
    """Sharpness ``lambda_max(H)`` of the loss (the edge-of-stability quantity of Cohen et al. 2021, arXiv 2103.00065).

    Lanczos on :func:`model_hvp` as in :func:`hessian_eigenvalues` with ``k=1, which="LA"``. For
    tracking during training pass the previous call's eigenvector as ``v0`` (``return_vector=True``
    returns it): the top direction moves slowly between steps, so a warm start converges in a few
    products. ``tol`` is the relative residual; the eigenvalue itself is then accurate to about
    ``tol^2 / relative gap`` and never worse than ``tol``. ``lanczos``: ``iters``, ``seed``, ``v0``.
    """
    out = hessian_eigenvalues(model, loss_fn, data, k=1, which="LA", tol=tol, return_vectors=return_vector, **lanczos)
    if return_vector:
        vals, vecs = out  # type: ignore[misc]
        return float(vals[0]), vecs[:, 0]
    return float(out[0])  # type: ignore[index]


def gauss_newton_eigenvalues(
    model: nn.Module, loss_fn: LossFn, data: Any, k: int = 1, **lanczos: Any
) -> Tensor | tuple[Tensor, Tensor]:
    """``k`` largest eigenvalues of the generalised Gauss-Newton matrix ``J^T H_out J`` (Schraudolph 2002).

    Lanczos (full reorthogonalisation) on :func:`ggn_vp`; ``lanczos`` and the stopping rule as in
    :func:`hessian_eigenvalues`. Returns a float64 CPU tensor ``[k]``, largest first.
    """
    return _operator_eigenvalues(ggn_vp(model, loss_fn, data), k, "LA", lanczos)


# ----------------------------------------------------------------------------------------------
# trace and density
# ----------------------------------------------------------------------------------------------


_TRACE_METHODS = ("hutchinson", "hutch++", "krylov")


def _rademacher_block(n: int, k: int, seed: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``k`` Rademacher columns ``[n, k]``, column ``j`` seeded ``seed * 1_000_003 + j``."""
    if k == 0:
        return torch.zeros((n, 0), dtype=dtype, device=device)
    return torch.stack([rng_vector(n, seed * 1_000_003 + j, dtype, device, "rademacher") for j in range(k)], 1)


def _checked(matvec: Matvec, v: Tensor) -> Tensor:
    w = matvec(v)
    if w.shape != v.shape:
        raise PhenomlabError(f"matvec returned shape {tuple(w.shape)}, expected {tuple(v.shape)}")
    return w.to(dtype=v.dtype, device=v.device)


def _matvecs(matvec: Matvec, v: Tensor) -> Tensor:
    """``A V`` column by column for ``V`` ``[n, k]``."""
    out = torch.empty_like(v)
    for j in range(v.shape[1]):
        out[:, j] = _checked(matvec, v[:, j].contiguous())
    return out


def _residual_hutchinson(
    matvec: Matvec, n: int, q: Tensor | None, k: int, seed: int, dtype: torch.dtype, device: torch.device
) -> tuple[float, float]:
    """Hutchinson with ``k`` Rademacher probes on ``P A P``, ``P = I - Q Q^T`` (``Q`` orthonormal ``[n, r]``;
    ``None``: ``P = I``). Probe ``j`` is seeded ``seed * 1_000_003 + j``; one vector at a time in memory.

    Returns the mean of the quadratic forms and its standard error (NaN for one probe, 0 for none).
    """
    if k == 0:
        return 0.0, 0.0
    vals = torch.empty(k, dtype=torch.float64)
    for j in range(k):
        z = rng_vector(n, seed * 1_000_003 + j, dtype, device, "rademacher")
        if q is not None and q.shape[1]:
            # Projecting twice keeps P z orthogonal to Q to working precision ("twice is enough").
            z = z - q @ (q.T @ z)
            z = z - q @ (q.T @ z)
        vals[j] = float(torch.dot(z, _checked(matvec, z)))
    se = float(vals.std(correction=1)) / math.sqrt(k) if k > 1 else float("nan")
    return float(vals.mean()), se


def trace_estimate(
    matvec: Matvec,
    n: int,
    samples: int = 100,
    method: str = "hutchinson",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Unbiased estimate of ``tr(A)`` for a symmetric ``A`` given by ``v -> A v``, with its standard error.

    ``samples`` is the number of products ``A v`` spent. ``method``:

    - ``"hutchinson"`` (Hutchinson 1989): mean of ``z^T A z`` over Rademacher ``z``; variance
      ``2 (||A||_F^2 - sum_i A_ii^2) / samples``.
    - ``"hutch++"`` (Meyer, Musco, Musco, Woodruff 2021, arXiv 2010.09649): ``k = samples // 3``
      sketch products ``Y = A S`` (``S`` Rademacher), ``Q = orth(Y)``, then the exact
      ``tr(Q^T A Q)`` (``k`` more products) plus Hutchinson on the deflated ``(I - QQ^T) A (I - QQ^T)``
      with the ``samples - 2k`` left. Variance about ``2 ||A - A_k||_F^2 / (samples - 2k)``: far
      below Hutchinson's when a few eigenvalues carry most of ``||A||_F`` (as in trained nets).
      With ``samples >= 3n`` it is exact.
    - ``"krylov"``: the same deflation with ``Q`` the Lanczos basis (full reorthogonalisation) of
      ``k = samples // 2`` steps from a Rademacher start, whose ``tr(Q^T A Q) = sum_j alpha_j`` costs
      no extra product; the other half of the products go to the deflated Hutchinson term. A Krylov
      space captures the outlying eigenvalues much better than one sketch ``A S`` (Chen & Hallman
      2023, "Krylov-aware stochastic trace estimation", arXiv 2205.01736; deflation as variance
      reduction: Gambhir, Stathopoulos, Orginos 2017, arXiv 1603.05988).

    Returns ``(estimate, standard_error)``. The deflated term is unbiased for any ``Q`` drawn
    independently of its probes, so the estimate is unbiased and ``standard_error`` (sample std of
    the residual quadratic forms / sqrt(count)) is its error bar; it is 0 when no residual probe is
    left (``Q`` spans the space: the estimate is then exact) and NaN with a single Hutchinson probe.
    """
    if method not in _TRACE_METHODS:
        raise PhenomlabError(f"method must be one of {_TRACE_METHODS}, got {method!r}")
    if not isinstance(n, int) or n < 1:
        raise PhenomlabError(f"n must be a positive int, got {n!r}")
    min_samples = {"hutchinson": 1, "hutch++": 3, "krylov": 2}[method]
    if not isinstance(samples, int) or samples < min_samples:
        raise PhenomlabError(f"samples must be an int >= {min_samples} for method={method!r}, got {samples!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if method == "hutchinson":
        return _residual_hutchinson(matvec, n, None, samples, seed, dtype, dev)
    if method == "hutch++":
        k = samples // 3
        q, _ = torch.linalg.qr(_matvecs(matvec, _rademacher_block(n, k, seed * 3 + 1, dtype, dev)))  # [n, min(n, k)]
        top = float((q.to(torch.float64) * _matvecs(matvec, q).to(torch.float64)).sum())
        left = samples - k - q.shape[1]
    else:
        v0 = rng_vector(n, seed * 3 + 1, dtype, dev, "rademacher")
        alphas, _, q_rows = _lanczos(matvec, v0, min(samples // 2, n))
        top = float(np.sum(alphas, dtype=np.float64))
        q = q_rows.T
        # Stopped early on an invariant subspace: the products not spent there go to the residual term.
        left = samples - alphas.size
    rest, se = _residual_hutchinson(matvec, n, q, left, seed * 3 + 2, dtype, dev)
    return top + rest, se


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    samples: int = 100,
    seed: int = 0,
    return_std: bool = False,
    method: str = "hutchinson",
) -> float | tuple[float, float]:
    """Estimate of ``tr(H)`` of the loss Hessian from ``samples`` Hessian-vector products.

    ``method="hutchinson"`` (default; Hutchinson 1989): the mean of ``samples`` independent ``z^T H z``,
    ``z`` Rademacher (entries +-1); unbiased, variance ``2 (||H||_F^2 - sum_i H_ii^2) / samples``.
    ``"hutch++"`` (Meyer et al. 2021, arXiv 2010.09649) and ``"krylov"`` (Lanczos deflation) are
    variance-reduced and unbiased too: they compute the trace on a low-dimensional subspace holding
    the outlying eigenvalues exactly and Hutchinson only on the rest (:func:`trace_estimate`), and so
    need several times fewer products for the same error on trained nets, whose Hessians have a few
    large eigenvalues. With ``return_std`` also the standard error of the estimate (the sample std of
    the stochastic part / sqrt of its count): the error bar.
    """
    if method not in _TRACE_METHODS:
        raise PhenomlabError(f"method must be one of {_TRACE_METHODS}, got {method!r}")
    mv = model_hvp(model, loss_fn, data)
    with one_thread():
        est, std = trace_estimate(mv, mv.n, samples=samples, method=method, seed=seed, dtype=mv.dtype, device=mv.device)  # type: ignore[attr-defined]
    return (est, std) if return_std else est


def slq_nodes(
    matvec: Matvec,
    n: int,
    iters: int = 80,
    runs: int = 1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Stochastic Lanczos quadrature nodes and weights (Ghorbani, Krishnan, Xiao 2019, arXiv 1901.10159).

    For each run a Rademacher start vector ``v`` (normalised) gives ``T_m`` by ``m = iters`` Lanczos
    steps; with ``T_m = S diag(theta) S^T`` the Gauss quadrature ``v^T f(A) v ~ sum_j tau_j f(theta_j)``,
    ``tau_j = S_{1j}^2``, so ``phi(t) = 1/runs sum_runs sum_j tau_j delta(t - theta_j)`` estimates the
    spectral density ``1/n sum_i delta(t - lambda_i)``. Returns ``nodes`` and ``weights``, both
    float64 ``[runs * m]``; the weights sum to one (a run that hits an invariant subspace early
    contributes fewer nodes).
    """
    if runs < 1 or iters < 1:
        raise PhenomlabError(f"runs and iters must be >= 1, got runs={runs}, iters={iters}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    nodes, weights = [], []
    for r in range(runs):
        v0 = rng_vector(n, seed * 1_000_003 + r, dtype, dev, "rademacher")
        a, b, _ = _lanczos(matvec, v0, min(iters, n))
        theta, s = _tridiag_eig(a, b)
        nodes.append(theta)
        weights.append(s[0] ** 2 / runs)
    return torch.from_numpy(np.concatenate(nodes)), torch.from_numpy(np.concatenate(weights))


def density_from_nodes(
    nodes: Tensor, weights: Tensor, grid: Tensor | None = None, sigma: float | None = None, grid_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Gaussian-smoothed density ``phi(t) = sum_j w_j N(t; theta_j, sigma^2)`` of quadrature nodes.

    ``sigma`` defaults to 1% of the node range (or 1e-3 if all nodes coincide). The default grid spans
    the nodes padded by 6 sigma so that the density integrates to ``sum(weights)`` up to 1e-8.
    """
    nodes = nodes.to(torch.float64).cpu()
    weights = weights.to(torch.float64).cpu()
    if nodes.shape != weights.shape or nodes.ndim != 1:
        raise PhenomlabError("nodes and weights must be 1-D tensors of the same length")
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3
    if not sigma > 0:
        raise PhenomlabError(f"sigma must be > 0, got {sigma}")
    if grid is None:
        grid = torch.linspace(lo - 6 * sigma, hi + 6 * sigma, grid_size, dtype=torch.float64)
    else:
        grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
        if grid.ndim != 1 or grid.numel() < 2:
            raise PhenomlabError("grid must be a 1-D tensor with at least two points")
    z = (grid[:, None] - nodes[None, :]) / sigma
    dens = (torch.exp(-0.5 * z**2) * weights[None, :]).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return grid, dens


def hessian_spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    iters: int = 80,
    runs: int = 1,
    grid: Tensor | None = None,
    sigma: float | None = None,
    seed: int = 0,
    grid_size: int = 1000,
) -> tuple[Tensor, Tensor]:
    """Hessian eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019, arXiv 1901.10159).

    :func:`slq_nodes` on :func:`model_hvp`, smoothed by :func:`density_from_nodes`. Returns
    ``(grid, density)`` (float64, CPU); ``density`` integrates to 1 over the default grid and its mean
    ``int t phi(t) dt = sum_j w_j theta_j`` is an unbiased estimate of ``tr(H) / n_params``.
    """
    mv = model_hvp(model, loss_fn, data)
    nodes, weights = slq_nodes(mv, mv.n, iters=iters, runs=runs, seed=seed, dtype=mv.dtype, device=mv.device)  # type: ignore[attr-defined]
    return density_from_nodes(nodes, weights, grid=grid, sigma=sigma, grid_size=grid_size)


# ----------------------------------------------------------------------------------------------
# dense reference
# ----------------------------------------------------------------------------------------------


def full_hessian(model: nn.Module, loss_fn: LossFn, data: Any) -> Tensor:
    """Dense Hessian ``[n_params, n_params]`` of the data-mean loss (``torch.autograd.functional.hessian``).

    Costs ``n_params`` backward passes and ``n_params^2`` memory: for tiny nets and for tests.
    """
    space = ParamSpace(model)
    if space.n > 20_000:
        raise PhenomlabError(f"full_hessian of {space.n} parameters would need {space.n**2 * 8 / 1e9:.1f} GB; use hvp")
    batches = as_batches(data, space.device)
    frozen = space.frozen()
    theta = space.flatten([p.detach() for p in space.params])

    def f(flat: Tensor) -> Tensor:
        state = dict(zip(space.names, space.unflatten(flat), strict=True))
        state.update(frozen)
        total = flat.new_zeros(())
        for x, y, w in batches:
            total = total + w * scalar_loss(loss_fn(call_model(model, x, state), y))
        return total

    with eval_mode(model), model_pass_threads(space.n, batches.total, space.device):
        return torch.autograd.functional.hessian(f, theta)
