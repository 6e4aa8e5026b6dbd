"""Shared plumbing of the model probes: the trainable-parameter space, batches of data, eval mode, the model call.

``data`` is one batch ``(inputs, targets)`` or an iterable of such batches (a DataLoader works).
``inputs`` is a tensor, called as ``model(inputs)``, or a mapping of tensors, called as keyword
arguments ``model(**inputs)`` the way Hugging Face models take ``input_ids=``, ``attention_mask=``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from phenomlab.errors import PhenomlabError


class ParamSpace:
    """The trainable parameters of a model (``requires_grad``, ``named_parameters`` order) as one flat vector."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise PhenomlabError(f"model must be an nn.Module, got {type(model).__name__}")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise PhenomlabError("model has no trainable parameters (none with requires_grad=True)")
        self.model = model
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.n = int(sum(self.numels))
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device

    def flatten(self, tensors: Sequence[Tensor | None]) -> Tensor:
        parts = [
            torch.zeros(k, dtype=self.dtype, device=self.device) if t is None else t.reshape(-1)
            for t, k in zip(tensors, self.numels, strict=True)
        ]
        return torch.cat(parts)

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        return [c.view(s) for c, s in zip(flat.split(self.numels), self.shapes, strict=True)]

    def detached(self) -> dict[str, Tensor]:
        """``{name: parameter.detach()}`` of the trainable parameters."""
        return {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}

    def frozen(self) -> dict[str, Tensor]:
        """The rest of the model's state for ``functional_call``: non-trainable parameters and buffers."""
        out = {n: p.detach() for n, p in self.model.named_parameters() if not p.requires_grad}
        out.update(dict(self.model.named_buffers()))
        return out

    def check_vector(self, v: Any, name: str = "v") -> Tensor:
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v)
        if v.shape != (self.n,):
            raise PhenomlabError(f"{name} must be a flat vector of shape ({self.n},), got {tuple(v.shape)}")
        if not v.is_floating_point():
            v = v.to(self.dtype)
        if not bool(torch.isfinite(v).all()):
            raise PhenomlabError(f"{name} contains NaN/inf")
        return v.to(device=self.device, dtype=self.dtype)


@contextmanager
def dtype_hint(model: nn.Module, inputs: Any) -> Iterator[None]:
    """Turn torch's dtype-mismatch error deep inside a layer into a one-line ``PhenomlabError`` naming both dtypes.

    Only when the call failed and a floating input's dtype differs from the model's parameters: a model may cast
    its inputs itself, so a mismatch is not rejected up front."""
    try:
        yield
    except RuntimeError as exc:
        p = next((t for t in model.parameters() if t.is_floating_point()), None)
        items = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
        given = [t for item in items for t in _tensors(item)]
        bad = [t.dtype for t in given if t.is_floating_point() and p is not None and t.dtype != p.dtype]
        if not bad:
            raise
        raise PhenomlabError(
            f"the inputs are {bad[0]} but the model's parameters are {p.dtype}: cast one to the other "
            f"(e.g. x.to({p.dtype}) or model.to({bad[0]})); torch said: {str(exc).splitlines()[0]}"
        ) from exc


def stateless_call(model: nn.Module, state: Mapping[str, Tensor], args: tuple[Any, ...], kwargs: Any = None) -> Any:
    """``torch.func.functional_call(model, state, args, kwargs)`` that leaves each module's own parameter and buffer
    objects in place: with one module reachable at two paths (``nn.Sequential(a, act, a)``), torch 2.13 restores the
    first path's parameter and then the second's already-swapped value, leaving a plain tensor where the model's
    ``nn.Parameter`` was (it would then drop out of ``model.parameters()`` and training)."""
    saved = [(m, dict(m._parameters), dict(m._buffers)) for m in model.modules()]
    try:
        with dtype_hint(model, (*args, *(kwargs or {}).values())):
            return functional_call(model, dict(state), args, kwargs)
    finally:
        for m, params, buffers in saved:
            m._parameters.update(params)
            m._buffers.update(buffers)


def call_model(model: nn.Module, inputs: Any, state: Mapping[str, Tensor] | None = None) -> Any:
    """``model(inputs)``, or ``model(**inputs)`` for a mapping; with ``state`` through ``functional_call``."""
    mapping = isinstance(inputs, Mapping)
    if state is not None:
        return stateless_call(model, state, (), dict(inputs)) if mapping else stateless_call(model, state, (inputs,))
    with dtype_hint(model, inputs):
        return model(**inputs) if mapping else model(inputs)


def _tensors(x: Any) -> list[Tensor]:
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, Mapping):
        return [t for t in x.values() if isinstance(t, Tensor)]
    return []


def batch_rows(x: Any) -> int | None:
    """Number of samples of ``inputs``: the first dimension of the tensor (or of every tensor of a mapping)."""
    sizes = {int(t.shape[0]) for t in _tensors(x) if t.ndim > 0}
    if len(sizes) > 1:
        raise PhenomlabError(f"the input tensors have different batch sizes {sorted(sizes)}")
    return sizes.pop() if sizes else None


def to_device(t: Any, device: torch.device) -> Any:
    """``t`` with every tensor in it (also inside tuples, lists and mappings) moved to ``device``."""
    if isinstance(t, Tensor):
        return t.to(device)
    if isinstance(t, Mapping):
        return {k: to_device(u, device) for k, u in t.items()}
    if isinstance(t, (tuple, list)):
        return type(t)(to_device(u, device) for u in t)
    return t


def select_rows(x: Any, idx: Tensor) -> Any:
    """Rows ``idx`` of a tensor, or of every batched tensor of a mapping."""
    if isinstance(x, Mapping):
        return {k: select_rows(v, idx) for k, v in x.items()}
    return x[idx] if isinstance(x, Tensor) and x.ndim > 0 else x


def split_rows(x: Any, size: int | None) -> Iterator[Any]:
    """Chunks of at most ``size`` rows of a tensor or of a mapping of tensors (all of it for ``None``)."""
    n = batch_rows(x)
    if size is None or n is None or size >= n:
        yield x
        return
    for start in range(0, n, size):
        yield select_rows(x, torch.arange(start, min(start + size, n)))


def _check_batch(x: Any, y: Any, i: int) -> None:
    for name, t in (("inputs", x), ("targets", y)):
        for u in _tensors(t):
            if u.is_floating_point() and u.numel() and not bool(torch.isfinite(u).all()):
                raise PhenomlabError(f"batch {i}: {name} contain NaN/inf")
    nx = batch_rows(x)
    if nx is not None and isinstance(y, Tensor) and y.ndim > 0 and nx != len(y):
        raise PhenomlabError(f"batch {i}: inputs and targets have different lengths: {nx} != {len(y)}")


class Batches(list):
    """``[(inputs, targets, weight)]`` with weights ``n_b / N`` summing to one; ``total`` is ``N``."""

    total: int = 0


def _is_batch(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (Tensor, Mapping))


def as_batches(data: Any, device: torch.device) -> Batches:
    """Validate ``data`` (one batch or an iterable of batches) and move it to ``device``."""
    if isinstance(data, Tensor):
        raise PhenomlabError("data must be an (inputs, targets) pair or a sequence of such batches, got one tensor")
    raw: Iterable[Any] = [tuple(data)] if _is_batch(data) else data
    batches: list[tuple[Any, Any, int]] = []
    for i, b in enumerate(raw):
        if not isinstance(b, (tuple, list)) or len(b) < 2:
            raise PhenomlabError(f"batch {i} must be an (inputs, targets) pair, got {type(b).__name__}")
        x, y = b[0], b[1]
        _check_batch(x, y, i)
        nb = batch_rows(x)
        if nb is None:
            try:
                nb = len(y)
            except TypeError as exc:
                raise PhenomlabError("cannot tell the batch size: give batched input tensors or sized targets") from exc
        if nb > 0:
            batches.append((to_device(x, device), to_device(y, device), nb))
    if not batches:
        raise PhenomlabError("data holds no samples")
    total = sum(nb for _, _, nb in batches)
    out = Batches((x, y, nb / total) for x, y, nb in batches)
    out.total = total
    return out


@contextmanager
def kept_buffers(model: nn.Module) -> Iterator[None]:
    """Restore every buffer's value after the block: a train-mode forward (BatchNorm) must not move running stats."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        # through .data: the copy must not bump the buffers' autograd version, since a cached graph (BatchNorm in
        # train mode) records the running stats as inputs, though its backward never reads them
        for b, v in saved:
            b.data.copy_(v)


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """``model.eval()`` for the block, then each submodule's own train/eval flag is restored."""
    # Restore flags one by one: a model may keep e.g. a frozen BatchNorm in eval on purpose.
    if not enabled:
        yield
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes.items():
            m.training = flag


def scalar_loss(loss: Any, require_finite: bool = True) -> Tensor:
    """``loss`` as a 0-d tensor; a non-scalar or (with ``require_finite``) NaN/inf loss is an error."""
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise PhenomlabError(f"loss_fn must return a scalar tensor (use reduction='mean'), got {shape}")
    if require_finite and not bool(torch.isfinite(loss.detach())):
        raise PhenomlabError("the loss is NaN/inf at the current parameters")
    return loss.reshape(())


def first_tensor(out: Any) -> Tensor:
    """The tensor of a module output, or its first tensor (``nn.LSTM``, attention and HF outputs are tuples/dicts)."""
    if isinstance(out, Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for o in values:
        if isinstance(o, Tensor):
            return o
    raise PhenomlabError(f"module output of type {type(out).__name__} holds no tensor")


def model_device(model: nn.Module) -> torch.device | None:
    """Device of the model's first parameter (or buffer); ``None`` for a stateless module."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return None


def rng_vector(n: int, seed: int, dtype: torch.dtype, device: torch.device, kind: str = "gauss") -> Tensor:
    """A seeded Gaussian (or Rademacher, entries +-1) vector of length ``n``."""
    # Drawn on the CPU so the same seed gives the same vector on every device.
    g = torch.Generator().manual_seed(int(seed))
    if kind == "rademacher":
        v = torch.randint(0, 2, (n,), generator=g, dtype=torch.int8).to(torch.float64) * 2 - 1
    else:
        v = torch.randn(n, generator=g, dtype=torch.float64)
    return v.to(device=device, dtype=dtype)
