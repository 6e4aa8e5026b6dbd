"""Loss-landscape slices, linear interpolation barriers and permutation (weight) matching.

References
----------
- H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein (2018), "Visualizing the loss landscape of neural
  nets", NeurIPS, arXiv 1712.09913 (filter-normalised random directions).
- J. Frankle, G.K. Dziugaite, D. Roy, M. Carbin (2020), "Linear mode connectivity and the lottery
  ticket hypothesis", ICML, arXiv 1912.05671 (the barrier on the linear path).
- S. Ainsworth, J. Hayase, S. Srinivasa (2023), "Git Re-Basin: merging models modulo permutation
  symmetries", ICLR, arXiv 2209.04836 (weight matching by coordinate descent over layer-wise
  linear assignment problems).

``data`` is one ``(inputs, targets)`` batch or a sequence of batches, as in :mod:`.curvature` (``inputs``
a tensor or a mapping of keyword tensors); losses are sample-weighted means over all batches, evaluated
in eval mode under ``torch.no_grad``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._params import ParamSpace, as_batches, call_model, eval_mode, scalar_loss

__all__ = [
    "random_direction",
    "loss_slice_1d",
    "loss_slice_2d",
    "interpolate_state",
    "interpolation_curve",
    "interpolation_barrier",
    "permutation_match_mlp",
]

Direction = dict[str, Tensor]
LossFn = Callable[[Any, Any], Tensor]
Metric = Callable[[Any, Any], float | Tensor]


def random_direction(
    model: nn.Module, filter_normalize: bool = True, seed: int = 0, ignore_1d: bool = True
) -> Direction:
    """A random Gaussian direction in parameter space, ``{name: tensor}`` for the trainable parameters.

    With ``filter_normalize`` (Li et al. 2018, arXiv 1712.09913) each filter ``d_i`` (a slice along the
    output dimension 0: a row of a Linear weight, an output channel of a conv kernel) is rescaled to
    the norm of the matching filter of the weights, ``d_i <- d_i ||theta_i|| / ||d_i||``, which removes
    the scale symmetry of ReLU nets from the picture. 1-D parameters (biases, norm layers) get a zero
    direction when ``ignore_1d`` (the paper's choice), else are normalised as whole vectors.
    Drawn on the CPU from ``seed``, so the direction is the same on every device.
    """
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(int(seed))
    out: Direction = {}
    for name, p in zip(space.names, space.params, strict=True):
        d = torch.randn(p.shape, generator=g, dtype=torch.float64)
        w = p.detach().to(torch.float64).cpu()
        if filter_normalize:
            if p.ndim <= 1:
                if ignore_1d:
                    d = torch.zeros_like(d)
                else:
                    d = d * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(d).clamp_min(1e-30))
            else:
                dn = torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1).clamp_min(1e-30)
                wn = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), dim=1)
                d = d * (wn / dn).reshape(-1, *([1] * (p.ndim - 1)))
        out[name] = d.to(dtype=p.dtype, device=p.device)
    return out


def _check_direction(model: nn.Module, direction: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    space = ParamSpace(model)
    missing = [n for n in space.names if n not in direction]
    extra = [n for n in direction if n not in space.names]
    if missing or extra:
        raise PhenomlabError(
            f"{what} does not match the model's trainable parameters: missing {missing}, unknown {extra}"
        )
    out = {}
    for n, p in zip(space.names, space.params, strict=True):
        d = direction[n]
        if not isinstance(d, Tensor) or d.shape != p.shape:
            raise PhenomlabError(f"{what}[{n!r}] must be a tensor of shape {tuple(p.shape)}")
        if not bool(torch.isfinite(d).all()):
            raise PhenomlabError(f"{what}[{n!r}] contains NaN/inf")
        out[n] = d.to(dtype=p.dtype, device=p.device)
    return out


def _mean_loss(model: nn.Module, state: Mapping[str, Tensor] | None, batches: list, fn: Callable) -> float:
    total = 0.0
    for x, y, w in batches:
        val = fn(call_model(model, x, state), y)
        # Far along a slice the loss may overflow; report inf/nan there rather than fail the whole scan.
        total += w * float(scalar_loss(val, require_finite=False) if isinstance(val, Tensor) else val)
    return total


def _alphas(alphas: Any, name: str, default: int) -> Tensor:
    a = torch.as_tensor(np.linspace(-1.0, 1.0, default) if alphas is None else alphas, dtype=torch.float64)
    a = a.reshape(-1)
    if a.numel() == 0 or not bool(torch.isfinite(a).all()):
        raise PhenomlabError(f"{name} must be a non-empty finite sequence")
    return a


def _losses_at(
    model: nn.Module, loss_fn: LossFn, data: Any, dirs: list[Direction], coords: list[list[float]]
) -> Tensor:
    """``L(theta + sum_k c_k d_k)`` for each coefficient list ``c`` of ``coords``, as a float64 tensor."""
    space = ParamSpace(model)
    batches = as_batches(data, space.device)
    base = space.detached()
    losses = []
    with eval_mode(model), torch.no_grad():
        for c in coords:
            state = {}
            for n in space.names:
                p = base[n]
                for ck, d in zip(c, dirs, strict=True):
                    p = p + ck * d[n]
                state[n] = p
            losses.append(_mean_loss(model, state, batches, loss_fn))
    return torch.tensor(losses, dtype=torch.float64)


def loss_slice_1d(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    direction: Mapping[str, Tensor] | None = None,
    alphas: Sequence[float] | Tensor | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Loss along a line ``L(theta + alpha d)`` (Li et al. 2018, arXiv 1712.09913).

    ``direction`` defaults to :func:`random_direction` (filter-normalised) with ``seed``; ``alphas`` to 21
    points evenly spaced in ``[-1, 1]``. Returns
    ``(alphas, losses)`` as float64 tensors. The model is not modified (``torch.func.functional_call``).
    """
    d = _check_direction(model, direction if direction is not None else random_direction(model, seed=seed), "direction")
    a = _alphas(alphas, "alphas", 21)
    return a, _losses_at(model, loss_fn, data, [d], [[al] for al in a.tolist()])


def loss_slice_2d(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    directions: tuple[Mapping[str, Tensor], Mapping[str, Tensor]] | None = None,
    alphas: Sequence[float] | Tensor | None = None,
    betas: Sequence[float] | Tensor | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Loss on a plane ``L(theta + alpha d1 + beta d2)`` (Li et al. 2018, arXiv 1712.09913).

    ``directions`` default to two filter-normalised random directions (seeds ``seed`` and ``seed + 1``);
    ``alphas`` default to 11 points evenly spaced in ``[-1, 1]``, ``betas`` to ``alphas``. Returns
    ``(alphas, betas, losses)`` with ``losses[i, j]`` at ``(alphas[i], betas[j])``.
    """
    if directions is None:
        directions = (random_direction(model, seed=seed), random_direction(model, seed=seed + 1))
    if len(directions) != 2:
        raise PhenomlabError("directions must be a pair (d1, d2)")
    d1 = _check_direction(model, directions[0], "directions[0]")
    d2 = _check_direction(model, directions[1], "directions[1]")
    a = _alphas(alphas, "alphas", 11)
    b = a.clone() if betas is None else _alphas(betas, "betas", 11)
    coords = [[al, be] for al in a.tolist() for be in b.tolist()]
    return a, b, _losses_at(model, loss_fn, data, [d1, d2], coords).reshape(a.numel(), b.numel())


def interpolate_state(sd_a: Mapping[str, Tensor], sd_b: Mapping[str, Tensor], t: float) -> dict[str, Tensor]:
    """``(1 - t) sd_a + t sd_b`` for every floating-point entry of two state dicts.

    Non-float entries (e.g. BatchNorm's ``num_batches_tracked``) are copied from ``sd_a``. Note that
    interpolated BatchNorm running statistics are not the statistics of the interpolated network; reset
    them on data if the model has BatchNorm.
    """
    if set(sd_a) != set(sd_b):
        raise PhenomlabError(f"state dicts have different keys: {sorted(set(sd_a) ^ set(sd_b))}")
    if not np.isfinite(t):
        raise PhenomlabError(f"t must be finite, got {t}")
    out: dict[str, Tensor] = {}
    for k, va in sd_a.items():
        vb = sd_b[k]
        if va.shape != vb.shape:
            raise PhenomlabError(f"state entry {k!r} has shapes {tuple(va.shape)} and {tuple(vb.shape)}")
        if va.is_floating_point():
            out[k] = torch.lerp(va.detach(), vb.detach().to(va.device, va.dtype), float(t))
        else:
            out[k] = va.detach().clone()
    return out


def interpolation_curve(
    model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, data: Any, n_points: int = 11, metric: Metric | None = None
) -> tuple[Tensor, Tensor]:
    """Loss (or ``metric(outputs, targets)``, e.g. an error rate) along ``theta_t = (1 - t) theta_a + t theta_b``.

    The linear path of Frankle et al. (2020, arXiv 1912.05671) at ``n_points`` evenly spaced ``t`` in
    ``[0, 1]``; both models need the same architecture. Returns ``(ts, values)`` float64 tensors.
    """
    if n_points < 2:
        raise PhenomlabError(f"n_points must be >= 2, got {n_points}")
    fn = metric if metric is not None else loss_fn
    sd_a, sd_b = model_a.state_dict(), model_b.state_dict()
    probe = copy.deepcopy(model_a)
    device = ParamSpace(probe).device
    batches = as_batches(data, device)
    ts = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)
    vals = []
    with eval_mode(probe), torch.no_grad():
        for t in ts.tolist():
            probe.load_state_dict(interpolate_state(sd_a, sd_b, t))
            vals.append(_mean_loss(probe, None, batches, fn))
    return ts, torch.tensor(vals, dtype=torch.float64)


def interpolation_barrier(
    model_a: nn.Module, model_b: nn.Module, loss_fn: LossFn, data: Any, n_points: int = 11, metric: Metric | None = None
) -> float:
    """Barrier ``max_t [L(theta_t) - ((1 - t) L(theta_a) + t L(theta_b))]`` on the linear path.

    Frankle et al. (2020, arXiv 1912.05671): the two solutions are linearly mode-connected when the
    barrier is ~0. Computed on the grid of :func:`interpolation_curve`; it is 0 at the endpoints, so the
    result is >= 0.
    """
    ts, vals = interpolation_curve(model_a, model_b, loss_fn, data, n_points=n_points, metric=metric)
    chord = (1 - ts) * vals[0] + ts * vals[-1]
    return float((vals - chord).max())


def _linear_chain(model: nn.Module) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(layers) < 2:
        raise PhenomlabError("permutation matching needs an MLP with at least two nn.Linear layers")
    for i in range(len(layers) - 1):
        if layers[i].out_features != layers[i + 1].in_features:
            raise PhenomlabError(
                f"Linear layers {i} and {i + 1} do not chain "
                f"({layers[i].out_features} -> {layers[i + 1].in_features}); "
                "permutation_match_mlp supports Linear layers applied in registration order"
            )
    return layers


def permutation_match_mlp(
    model_a: nn.Module, model_b: nn.Module, max_iter: int = 100, seed: int = 0, check_inputs: Tensor | None = None
) -> nn.Module:
    """A copy of ``model_b`` with its hidden units permuted to best match ``model_a`` (Git Re-Basin weight matching).

    For an MLP ``W_L s(... s(W_1 x + b_1) ...) + b_L`` with elementwise activations ``s``, permuting the
    units of hidden layer ``l`` by ``P_l`` (``W_l <- P_l W_l``, ``b_l <- P_l b_l``,
    ``W_{l+1} <- W_{l+1} P_l^T``) leaves the function unchanged. Weight matching (Ainsworth, Hayase,
    Srinivasa 2023, arXiv 2209.04836) maximises ``sum_l <W_l^a, P_l W_l^b P_{l-1}^T> + <b_l^a, P_l b_l^b>``
    by coordinate descent: for each layer in a random order (seeded) solve the linear assignment problem
    ``max_P <P, W_l^a P_{l-1} W_l^b^T + b_l^a b_l^b^T + W_{l+1}^a^T P_{l+1} W_{l+1}^b>`` with
    ``scipy.optimize.linear_sum_assignment``, until a full sweep changes nothing or ``max_iter`` sweeps.

    The Linear layers are taken in registration order and must chain; anything between them must act
    elementwise. Because that cannot be read from the module tree, the permuted copy is checked to
    compute the same function as ``model_b`` on ``check_inputs`` (default: 16 seeded Gaussian inputs; moved to
    ``model_b``'s device and dtype) and a ``ValueError`` is raised otherwise. Returns the permuted copy;
    ``model_b`` is not changed.
    """
    la, lb = _linear_chain(model_a), _linear_chain(model_b)
    if len(la) != len(lb) or any(
        a.weight.shape != b.weight.shape or (a.bias is None) != (b.bias is None) for a, b in zip(la, lb, strict=True)
    ):
        raise PhenomlabError("model_a and model_b must have the same Linear layer shapes")
    if max_iter < 1:
        raise PhenomlabError(f"max_iter must be >= 1, got {max_iter}")
    Wa = [m.weight.detach().to(torch.float64).cpu() for m in la]
    Wb = [m.weight.detach().to(torch.float64).cpu() for m in lb]
    Ba = [None if m.bias is None else m.bias.detach().to(torch.float64).cpu() for m in la]
    Bb = [None if m.bias is None else m.bias.detach().to(torch.float64).cpu() for m in lb]
    L = len(la)
    # perms[l] maps hidden unit i of the permuted b to unit perms[l][i] of the original b, for l = 0..L-2.
    perms = [torch.arange(m.out_features) for m in lb[:-1]]
    rng = np.random.default_rng(seed)

    def w_in(layer: int) -> Tensor:
        # W^b of `layer` with its input units permuted by the previous layer's current permutation.
        return Wb[layer] if layer == 0 else Wb[layer][:, perms[layer - 1]]

    for _ in range(max_iter):
        changed = False
        for layer in rng.permutation(L - 1):
            cost = Wa[layer] @ w_in(layer).T
            if Ba[layer] is not None and Bb[layer] is not None:
                cost = cost + torch.outer(Ba[layer], Bb[layer])
            nxt = Wb[layer + 1] if layer + 1 == L - 1 else Wb[layer + 1][perms[layer + 1]]
            cost = cost + Wa[layer + 1].T @ nxt
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            new = torch.from_numpy(cols).long()
            if not torch.equal(new, perms[layer]):
                # Accept only a strict improvement so that ties cannot make the sweep cycle.
                old_val = float(cost[torch.arange(len(new)), perms[layer]].sum())
                new_val = float(cost[torch.arange(len(new)), new].sum())
                if new_val > old_val + 1e-12 * max(1.0, abs(old_val)):
                    perms[layer] = new
                    changed = True
        if not changed:
            break

    out = copy.deepcopy(model_b)
    lo = _linear_chain(out)
    with torch.no_grad():
        for layer, m in enumerate(lo):
            w = m.weight
            if layer > 0:
                w = w[:, perms[layer - 1].to(w.device)]
            if layer < L - 1:
                w = w[perms[layer].to(w.device)]
                if m.bias is not None:
                    m.bias.copy_(m.bias[perms[layer].to(m.bias.device)])
            m.weight.copy_(w)
    _check_same_function(model_b, out, check_inputs, la[0].in_features, seed)
    return out


def _check_same_function(orig: nn.Module, perm: nn.Module, x: Tensor | None, d_in: int, seed: int) -> None:
    p = next(orig.parameters())
    if x is None:
        g = torch.Generator().manual_seed(int(seed))
        x = torch.randn(16, d_in, generator=g, dtype=torch.float64)
    x = x.to(dtype=p.dtype, device=p.device)
    with eval_mode(orig), eval_mode(perm), torch.no_grad():
        y0, y1 = orig(x), perm(x)
    if not isinstance(y0, Tensor) or not torch.allclose(y0, y1, rtol=1e-4, atol=1e-5 * (1 + float(y0.abs().max()))):
        raise PhenomlabError(
            "the permuted model does not compute the same function: the model is not a chain of Linear layers "
            "with elementwise operations between them (e.g. it has LayerNorm, residual connections or reshapes)"
        )
