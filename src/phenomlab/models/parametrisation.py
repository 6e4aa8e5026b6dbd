"""Width parametrisations: standard (SP), neural-tangent (NTK) and maximal-update (muP).

An abc-parametrisation (Yang & Hu 2021, Tensor Programs IV, arXiv 2011.14522) writes each weight as
``W = n^{-a} w`` with ``w ~ n^{-b} N(0, 1)`` trained at learning rate ``eta n^{-c}``. Here a model keeps
its own init and three numbers per parameter realise (a, b, c):

- ``init_scale`` multiplies the tensor the module's init drew (the b exponent, relative to that init);
- ``multiplier`` is a forward multiplier: the module computes with ``multiplier * stored`` (the a exponent),
  registered with :func:`torch.nn.utils.parametrize.register_parametrization`;
- ``lr_scale``/``wd_scale`` multiply the optimiser's learning rate and weight decay for that parameter (c),
  separately for SGD-like and Adam-like optimisers (Adam normalises the gradient scale away).

Schemes:

- ``"sp"``: PyTorch's default init and one learning rate (every number is 1).
- ``"ntk"`` (Jacot, Gabriel, Hongler 2018, arXiv 1806.07572): every linear map's weight is stored at O(1) scale
  (the module's init times ``sqrt(fan_in)``: std ``1/sqrt(3)`` for ``nn.Linear``'s uniform init) and multiplied by
  ``1/sqrt(fan_in)`` in the forward (``init_scale = sqrt(fan_in)``,
  ``multiplier = 1/sqrt(fan_in)``); the function at init equals SP's, one learning rate for all.
  Biases, embeddings and other parameters keep SP.
- ``"mup"`` (Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen, Gao 2021, Tensor Programs V,
  arXiv 2203.03466), relative to a *base* model of the same architecture at base width, following the
  conventions of the ``mup`` package: with ``m`` the width multiplier (dim / base dim) of a parameter's
  width-dependent dimensions,

  * the readout (a matrix whose fan-in scales and fan-out does not): ``multiplier = 1/m``, weight and bias
    ``init_scale = sqrt(m)``;
  * other biases: ``init_scale = sqrt(m_fan_in)`` (PyTorch draws them at 1/sqrt(fan_in));
  * Adam: matrices with two width dimensions get ``lr * 1/m_fan_in`` (weight decay ``* m_fan_in``), the rest 1;
  * SGD: parameters with one width dimension get ``lr * m`` (weight decay ``/ m``), matrices with two get
    ``lr * m_fan_out / m_fan_in``, the rest 1;
  * attention (``nn.MultiheadAttention``): logits scale as ``1/d_head`` instead of ``1/sqrt(d_head)``
    (a multiplier ``sqrt(d_head_base / d_head)`` on the query rows of ``in_proj_weight``).

  At the base width muP equals SP. Dimension conventions follow ``nn.Linear``: a matrix is
  ``(fan_out, fan_in)``; the width dimension that sets ``m`` for a one-width-dim tensor is the last one that
  scales (the ``mup`` package's "main" dimension).

Use :func:`parametrise` on a freshly built model, then :func:`param_groups` (or :func:`make_optimizer`) for
its optimiser; ``phenomlab.train.train`` applies the groups itself when the model was parametrised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import PhenomlabError

__all__ = [
    "SCHEMES",
    "ParamRule",
    "Parametrisation",
    "fold_multipliers",
    "make_optimizer",
    "param_groups",
    "parametrisation_rules",
    "parametrise",
    "width_multipliers",
]

SCHEMES = ("sp", "ntk", "mup")
SGD_LIKE = ("sgd", "sam")  # SAM (sharpness-aware minimisation) steps with SGD
ADAM_LIKE = ("adam", "adamw")


@dataclass(frozen=True)
class ParamRule:
    """How one parameter is scaled: see the module docstring. ``rows``/``row_multiplier`` scale only the first
    ``rows`` rows in the forward (the query block of a fused attention projection)."""

    role: str
    init_scale: float = 1.0
    multiplier: float = 1.0
    lr_scale_sgd: float = 1.0
    lr_scale_adam: float = 1.0
    wd_scale_sgd: float = 1.0
    wd_scale_adam: float = 1.0
    rows: int = 0
    row_multiplier: float = 1.0

    def lr_scale(self, optimizer: str) -> float:
        return self.lr_scale_sgd if _family(optimizer) == "sgd" else self.lr_scale_adam

    def wd_scale(self, optimizer: str) -> float:
        return self.wd_scale_sgd if _family(optimizer) == "sgd" else self.wd_scale_adam


@dataclass(frozen=True)
class Parametrisation:
    """What :func:`parametrise` applied: the scheme and a rule per parameter name (names as before parametrising);
    ``folded_for``: the optimiser its multipliers were folded for (``fold_for``), whose family it only serves."""

    scheme: str
    rules: dict[str, ParamRule] = field(default_factory=dict)
    folded_for: str | None = None


def _family(optimizer: str) -> str:
    if optimizer in SGD_LIKE:
        return "sgd"
    if optimizer in ADAM_LIKE:
        return "adam"
    raise PhenomlabError(f"unknown optimizer {optimizer!r}; choose one of {list(SGD_LIKE + ADAM_LIKE)}")


def _plain_name(name: str) -> str:
    """``out.parametrizations.weight.original`` -> ``out.weight`` (the name before parametrising)."""
    return name.replace(".parametrizations.", ".").removesuffix(".original")


def width_multipliers(model: nn.Module, base: nn.Module) -> dict[str, tuple[float, ...]]:
    """Per parameter, each dimension's size over the base model's (1.0 where it does not scale with width).

    Parameters are matched by name; ``model`` and ``base`` must be the same architecture.
    """
    mine = {_plain_name(n): p for n, p in model.named_parameters()}
    theirs = {_plain_name(n): p for n, p in base.named_parameters()}
    if mine.keys() != theirs.keys():
        missing = sorted(mine.keys() ^ theirs.keys())[:3]
        raise PhenomlabError(f"model and base have different parameters (e.g. {missing}); build both the same way")
    out: dict[str, tuple[float, ...]] = {}
    for name, p in mine.items():
        q = theirs[name]
        if p.ndim != q.ndim:
            raise PhenomlabError(f"{name}: {p.ndim}-d in the model but {q.ndim}-d in the base")
        out[name] = tuple(a / b for a, b in zip(p.shape, q.shape, strict=True))
    return out


def _owners(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    return {
        f"{mod_name}.{p_name}" if mod_name else p_name: (mod, p_name)
        for mod_name, mod in model.named_modules()
        for p_name, _ in mod.named_parameters(recurse=False)
    }


def _is_linear_weight(module: nn.Module, p_name: str) -> bool:
    return (isinstance(module, nn.Linear) and p_name == "weight") or (
        isinstance(module, nn.MultiheadAttention)
        and p_name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
    )


def parametrisation_rules(model: nn.Module, scheme: str, base: nn.Module | None = None) -> dict[str, ParamRule]:
    """The rule for every parameter of ``model`` under ``scheme`` (nothing is changed).

    ``base`` (the same architecture at the base width) is needed by ``"mup"`` only.
    """
    if scheme not in SCHEMES:
        raise PhenomlabError(f"unknown parametrisation {scheme!r}; choose one of {list(SCHEMES)}")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise PhenomlabError("the model is already parametrised; build a fresh one")
    owners = _owners(model)
    if scheme == "sp":
        return {name: ParamRule("any") for name in owners}
    if scheme == "ntk":
        rules = {}
        for name, (mod, p_name) in owners.items():
            if _is_linear_weight(mod, p_name):
                fan_in = getattr(mod, p_name).shape[1]
                rules[name] = ParamRule("weight", init_scale=math.sqrt(fan_in), multiplier=1 / math.sqrt(fan_in))
            else:
                rules[name] = ParamRule("other")
        return rules
    if base is None:
        raise PhenomlabError("muP is defined relative to a base model: pass base= (the same model at base width)")
    if not isinstance(base, nn.Module):
        raise PhenomlabError(
            f"base must be the same model built at the base width (an nn.Module), got {type(base).__name__}"
        )
    mults = width_multipliers(model, base)
    readouts = {
        mod
        for name, (mod, p_name) in owners.items()
        if isinstance(mod, nn.Linear) and p_name == "weight" and mults[name][1] != 1.0 and mults[name][0] == 1.0
    }
    rules = {}
    for name, (mod, p_name) in owners.items():
        m = mults[name]
        ninf = sum(x != 1.0 for x in m)
        main = next((x for x in reversed(m) if x != 1.0), 1.0)
        lr_sgd = wd_sgd = lr_adam = wd_adam = 1.0
        if ninf == 1:
            lr_sgd, wd_sgd = main, 1 / main
        elif ninf == 2:
            fan_out_m, fan_in_m = m[0], m[1]
            lr_adam, wd_adam = 1 / fan_in_m, fan_in_m
            lr_sgd, wd_sgd = fan_out_m / fan_in_m, fan_in_m / fan_out_m
        elif ninf > 2:
            raise PhenomlabError(f"{name}: muP rules cover tensors with at most two width dimensions")
        kw = {"lr_scale_sgd": lr_sgd, "lr_scale_adam": lr_adam, "wd_scale_sgd": wd_sgd, "wd_scale_adam": wd_adam}
        if mod in readouts:
            fan_in_m = mults[_sibling(name, p_name, "weight")][1]
            extra = {"multiplier": 1 / fan_in_m} if p_name == "weight" else {}
            rules[name] = ParamRule("readout", init_scale=math.sqrt(fan_in_m), **extra, **kw)
        elif isinstance(mod, nn.Linear) and p_name == "bias":
            fan_in_m = mults[_sibling(name, p_name, "weight")][1]
            rules[name] = ParamRule("bias", init_scale=math.sqrt(fan_in_m), **kw)
        elif isinstance(mod, nn.MultiheadAttention) and p_name == "in_proj_weight" and m[1] != 1.0:
            head_m = m[1]  # d_head scales with d_model at a fixed number of heads
            rules[name] = ParamRule("attention", rows=mod.embed_dim, row_multiplier=1 / math.sqrt(head_m), **kw)
        else:
            rules[name] = ParamRule("hidden" if ninf == 2 else "vector" if ninf == 1 else "fixed", **kw)
    return rules


def fold_multipliers(rules: dict[str, ParamRule], optimizer: str) -> dict[str, ParamRule]:
    """Equivalent rules without forward multipliers, for models that cannot carry them (e.g. stacked ensembles).

    abc-parametrisations related by ``W = c w`` train identically (Yang & Hu 2021, arXiv 2011.14522, Sec. 3):
    for Adam-like optimisers (which normalise the gradient scale) a multiplier ``c`` equals ``init_scale * c``
    with ``lr_scale * c`` (Adam's L2 weight decay ``/ c^2``, AdamW's decoupled one ``/ c``, keeping ``lr * wd``);
    for SGD it equals ``init_scale * c`` with ``lr_scale * c^2`` (L2 weight decay ``/ c^2``). Adam's epsilon is
    then effectively multiplied by ``c`` (a negligible change at the default 1e-8). Row multipliers are not folded.
    """
    family = _family(optimizer)
    out = {}
    for name, r in rules.items():
        if r.rows:
            raise PhenomlabError(f"{name}: a row multiplier (attention) cannot be folded into the init")
        c = r.multiplier
        if family == "sgd":
            lr, wd = r.lr_scale_sgd * c**2, r.wd_scale_sgd / c**2
            out[name] = replace(r, init_scale=r.init_scale * c, multiplier=1.0, lr_scale_sgd=lr, wd_scale_sgd=wd)
        else:
            lr, wd = r.lr_scale_adam * c, r.wd_scale_adam / (c if optimizer == "adamw" else c**2)
            out[name] = replace(r, init_scale=r.init_scale * c, multiplier=1.0, lr_scale_adam=lr, wd_scale_adam=wd)
    return out


def _sibling(name: str, p_name: str, other: str) -> str:
    return name[: len(name) - len(p_name)] + other


class _Scale(nn.Module):
    """``stored -> scale * stored``: a forward multiplier that leaves the stored parameter as trained."""

    def __init__(self, scale: torch.Tensor | float) -> None:
        super().__init__()
        # float64 so that a float64 model is scaled exactly; .to(w.dtype) rounds once for lower precisions
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64), persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.scale.to(w.dtype)


def parametrise(
    model: nn.Module, scheme: str, base: nn.Module | None = None, fold_for: str | None = None
) -> Parametrisation:
    """Apply ``scheme`` to a freshly initialised ``model`` in place and record it on ``model.parametrisation``.

    Rescales the stored parameters (``init_scale``) and registers the forward multipliers; the optimiser's
    per-parameter learning rates come from :func:`param_groups`. ``fold_for="adam"`` (or ``"sgd"``, ...) folds the
    multipliers into init and learning rates (:func:`fold_multipliers`): the same training under that optimiser
    family, with no parametrisation registered. Returns what was applied.
    """
    rules = parametrisation_rules(model, scheme, base)
    if fold_for is not None:
        rules = fold_multipliers(rules, fold_for)
    owners = _owners(model)
    with torch.no_grad():
        for name, rule in rules.items():
            mod, p_name = owners[name]
            if rule.init_scale != 1.0:
                getattr(mod, p_name).mul_(rule.init_scale)
    for name, rule in rules.items():
        mod, p_name = owners[name]
        p = getattr(mod, p_name)
        if rule.rows:
            # on the parameter's device: a model parametrised after .to("cuda") multiplies there
            scale = torch.ones(p.shape[0], *([1] * (p.ndim - 1)), dtype=torch.float64, device=p.device)
            scale[: rule.rows] = rule.row_multiplier
            parametrize.register_parametrization(mod, p_name, _Scale(scale * rule.multiplier))
        elif rule.multiplier != 1.0:
            parametrize.register_parametrization(mod, p_name, _Scale(rule.multiplier))
    applied = Parametrisation(scheme, rules, folded_for=fold_for)
    model.parametrisation = applied
    return applied


def param_groups(model: nn.Module, optimizer: str, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimiser parameter groups with each parameter's scaled learning rate and weight decay.

    A model that was not parametrised gets one group at ``lr``/``weight_decay``.
    """
    applied: Parametrisation | None = getattr(model, "parametrisation", None)
    if applied is None:
        return [{"params": list(model.parameters()), "lr": lr, "weight_decay": weight_decay}]
    folded = applied.folded_for
    # folded rules are exact for one family only (SGD's lr goes with c^2, Adam's with c), and Adam's and AdamW's
    # weight decays fold differently: another optimiser would train a different model without a word
    if folded is not None and (_family(folded) != _family(optimizer) or (folded != optimizer and weight_decay != 0.0)):
        raise PhenomlabError(
            f"the multipliers were folded for {folded!r}; train with it, or parametrise(..., fold_for={optimizer!r})"
        )
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in params:
        rule = applied.rules.get(_plain_name(name))
        if rule is None:
            raise PhenomlabError(f"parameter {name} was added after parametrise(); parametrise the finished model")
        key = (lr * rule.lr_scale(optimizer), weight_decay * rule.wd_scale(optimizer))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": g_wd} for (g_lr, g_wd), ps in groups.items()]


def make_optimizer(
    model: nn.Module, optimizer: str, lr: float, weight_decay: float = 0.0, **kwargs: object
) -> torch.optim.Optimizer:
    """``torch.optim.{SGD, Adam, AdamW}`` over :func:`param_groups` (extra ``kwargs``: momentum, betas, ...)."""
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(optimizer)
    if cls is None:
        raise PhenomlabError(f"make_optimizer builds sgd, adam or adamw, got {optimizer!r}")
    groups: Iterable[dict] = param_groups(model, optimizer, lr, weight_decay)
    return cls(groups, lr=lr, weight_decay=weight_decay, **kwargs)  # type: ignore[misc]
