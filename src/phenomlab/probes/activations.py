"""Collect intermediate activations from any ``nn.Module`` by module name.

Forward hooks record the outputs of the named submodules; nothing assumes a model class of
ours. Module names are those of ``model.named_modules()`` (``"0"``, ``"2"`` for an
``nn.Sequential``; ``"encoder.fc1"`` for nested attributes; ``""`` is the model itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from phenomlab.errors import PhenomlabError
from phenomlab.probes._params import (
    batch_rows,
    call_model,
    eval_mode,
    first_tensor,
    model_device,
    split_rows,
    to_device,
)

__all__ = ["features", "module_names"]


def module_names(model: nn.Module) -> list[str]:
    """Names of all submodules of ``model`` (root excluded), in registration order."""
    return [name for name, _ in model.named_modules() if name != ""]


def _iter_batches(inputs: Any, batch_size: int | None) -> Iterator[Any]:
    if isinstance(inputs, (Tensor, Mapping)):
        yield from split_rows(inputs, batch_size)
        return
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
        raise PhenomlabError(f"inputs must be a tensor, a mapping of tensors or batches, got {type(inputs).__name__}")
    # A DataLoader or any iterable of batches; (x, y, ...) tuples contribute x.
    for batch in inputs:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, (Tensor, Mapping)):
            raise PhenomlabError(f"batches must be tensors or (tensor, ...) tuples, got {type(x).__name__}")
        yield from split_rows(x, batch_size)


def _resolve_layers(model: nn.Module, layers: Sequence[str] | str) -> tuple[list[str], dict[str, nn.Module]]:
    names = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not names:
        raise PhenomlabError("layers is empty; pass at least one module name")
    modules = dict(model.named_modules())
    for n in names:
        if isinstance(n, nn.Module):
            # names, not modules, key the returned dict; say which name the user meant
            name = next((k for k, m in modules.items() if m is n), None)
            hint = f"pass its name {name!r}" if name is not None else "it is not a submodule of the model"
            raise PhenomlabError(f"layers are module names (strings), got a {type(n).__name__} module: {hint}")
    unknown = [n for n in names if n not in modules]
    if unknown:
        existing = ", ".join(repr(n) for n in module_names(model))
        raise PhenomlabError(f"unknown layer name(s) {unknown}; the model has modules: {existing}")
    return names, modules


def collect(
    model: nn.Module,
    inputs: Any,
    layers: Sequence[str] | str,
    batch_size: int | None = None,
    return_output: bool = False,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Like :func:`features`, and also return the model's (first tensor) output when asked."""
    names, modules = _resolve_layers(model, layers)
    if batch_size is not None and batch_size < 1:
        raise PhenomlabError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model)
    store: dict[str, list[Tensor]] = {n: [] for n in names}
    # The calls of the current forward pass: a module used several times (weight sharing) must give one
    # row per sample, its calls side by side, or rows would stop being samples.
    calls: dict[str, list[Tensor]] = {n: [] for n in names}
    outputs: list[Tensor] = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inp: Any, out: Any) -> None:
            t = first_tensor(out)
            calls[name].append(t.detach().reshape(t.shape[0], -1) if t.ndim else t.detach().reshape(1, 1))

        return hook

    def close_batch(n_rows: int | None) -> None:
        for name, ts in calls.items():
            if not ts:
                continue
            if n_rows is not None:
                bad = next((t.shape[0] for t in ts if t.shape[0] != n_rows), None)
                if bad is not None:
                    raise PhenomlabError(
                        f"module {name!r} returned {bad} rows for a batch of {n_rows} samples: features needs "
                        "outputs with the batch first (e.g. batch_first=True) and batched inputs [N, ...]"
                    )
            store[name].append(torch.cat(ts, dim=1) if len(ts) > 1 else ts[0])
            ts.clear()

    handles = []
    seen: set[int] = set()
    for n in names:
        # The same module requested twice must not record twice per forward.
        if id(modules[n]) in seen:
            continue
        seen.add(id(modules[n]))
        handles.append(modules[n].register_forward_hook(make_hook(n)))
    rows = 0
    try:
        with eval_mode(model), torch.no_grad():
            for x in _iter_batches(inputs, batch_size):
                n_rows = batch_rows(x)
                if n_rows == 0:
                    continue
                rows += n_rows or 0
                out = call_model(model, to_device(x, device) if device is not None else x)
                close_batch(n_rows)
                if return_output:
                    outputs.append(first_tensor(out).detach())
    finally:
        for h in handles:
            h.remove()
    if rows == 0:
        raise PhenomlabError("inputs hold no samples (0 rows)")
    feats: dict[str, Tensor] = {}
    for n in names:
        src = n
        if not store[n]:
            # Duplicate name: hook registered under the first alias of this module.
            src = next((k for k in names if modules[k] is modules[n] and store[k]), n)
        if not store[src]:
            raise PhenomlabError(f"module {n!r} was not called during the forward pass")
        feats[n] = torch.cat(store[src]) if len(store[src]) > 1 else store[src][0]
    output = None
    if return_output and outputs:
        output = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    return feats, output


def features(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor] | Iterable[Any],
    layers: Sequence[str] | str,
    batch_size: int | None = None,
) -> dict[str, Tensor]:
    """Activations of the named modules, each flattened to ``[N, -1]``.

    ``inputs`` is a tensor, called as ``model(x)``, a mapping of tensors, called as ``model(**x)`` (Hugging
    Face style), each split into chunks of ``batch_size`` rows if given, or an iterable of such batches
    such as a ``DataLoader`` (for ``(x, y)`` batches ``x`` is used). The model runs under
    ``torch.no_grad`` in eval mode; every submodule's train/eval flag is restored afterwards.
    Inputs are moved to the device of the model's parameters. A module called several times
    per forward pass (weight sharing) contributes its calls side by side: ``[N, calls * D]``.

    Raises ``PhenomlabError`` for empty inputs, for an unknown layer name (listing the names that exist) and
    for a module whose output does not have one row per sample (e.g. a sequence-first module).
    """
    feats, _ = collect(model, inputs, layers, batch_size=batch_size, return_output=False)
    return feats
