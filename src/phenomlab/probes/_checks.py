"""Shared input validators for the probes.

Every probe accepts numpy arrays or torch tensors; these helpers turn them into tensors and raise a
one-line :class:`~phenomlab.errors.PhenomlabError` (a ``ValueError``) naming the offending argument, so
that a bad input fails at the probe boundary rather than as a cryptic shape error deep inside a GEMM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from phenomlab.errors import PhenomlabError


def as_float_tensor(x: Any, name: str = "x", upcast_half: bool = True) -> Tensor:
    """Return ``x`` as a floating-point tensor, rejecting NaN/inf.

    Accepts a tensor, a numpy array or anything ``torch.as_tensor`` accepts. Float32/float64 and the
    device are kept; integer/bool inputs become the default float dtype; float16/bfloat16 become float32
    unless ``upcast_half=False`` (for inputs fed to a half-precision model).
    """
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, Tensor):
        t = x
    else:
        try:
            t = torch.as_tensor(x)
        except Exception as exc:  # torch raises TypeError/RuntimeError depending on the input
            raise PhenomlabError(f"{name} cannot be converted to a tensor: {exc}") from exc
    if t.is_complex():
        raise PhenomlabError(f"{name} must be real, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    elif upcast_half and t.dtype in (torch.float16, torch.bfloat16):
        # Gram sums overflow float16 at unit scale (CKA of ordinary features became NaN), and the CPU has
        # no 16-bit SVD/eigh/cdist: measure mixed-precision activations in float32.
        t = t.float()
    t = t.detach()
    # A sum is one cheap streaming reduction and is non-finite whenever an entry is NaN/inf; only then
    # (or on overflow of the sum itself) pay for the elementwise check.
    if t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise PhenomlabError(f"{name} contain NaN/inf" if name.endswith("s") else f"{name} contains NaN/inf")
    return t


def as_label_tensor(y: Any, name: str = "labels", device: torch.device | None = None) -> Tensor:
    """Return integer class labels as a 1-D ``LongTensor`` (on ``device`` if given)."""
    if isinstance(y, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(y))
    elif isinstance(y, Tensor):
        t = y.detach()
    else:
        try:
            t = torch.as_tensor(y)
        except Exception as exc:
            raise PhenomlabError(f"{name} cannot be converted to a tensor: {exc}") from exc
    if t.ndim != 1:
        raise PhenomlabError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if t.numel() and not bool((t == t.round()).all()):
            raise PhenomlabError(f"{name} must be integer class labels, got non-integer floats")
        t = t.long()
    elif t.dtype == torch.bool or t.is_complex():
        raise PhenomlabError(f"{name} must be integer class labels, got dtype {t.dtype}")
    else:
        t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise PhenomlabError(f"{name} must be non-negative class indices, got min {int(t.min())}")
    if device is not None:
        t = t.to(device)
    return t


def check_2d(x: Any, name: str = "features") -> Tensor:
    """Float tensor of shape [N, D] with N >= 1 and no NaN/inf."""
    t = as_float_tensor(x, name)
    if t.ndim != 2:
        raise PhenomlabError(f"{name} must be a 2-D [N, D] tensor, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise PhenomlabError(f"{name} is empty (0 rows)")
    return t


def check_same_length(a: Any, b: Any, names: Sequence[str] = ("a", "b")) -> None:
    """Raise if ``len(a) != len(b)`` (first dimension)."""
    na, nb = len(a), len(b)
    if na != nb:
        raise PhenomlabError(f"{names[0]} and {names[1]} have different lengths: {na} != {nb}")


def count_classes(y: Tensor) -> int:
    """Number of distinct values of non-negative integer labels ``y``."""
    if y.numel() == 0:
        return 0
    hi = int(y.max())
    # bincount is O(N + max label) and far cheaper than the sort inside torch.unique.
    if hi <= 4 * y.numel() + 1024:
        return int(torch.count_nonzero(torch.bincount(y, minlength=hi + 1)))
    return int(torch.unique(y).numel())


def check_features_labels(features: Any, labels: Any, min_classes: int = 2) -> tuple[Tensor, Tensor]:
    """Validate a (features [N, D], labels [N]) pair.

    Returns the features as a float tensor and the labels as a LongTensor on the features'
    device. Raises ``PhenomlabError`` on a wrong rank, NaN/inf ("features contain NaN/inf"),
    mismatched lengths or fewer than ``min_classes`` distinct labels ("labels have a single class").
    """
    x = check_2d(features, "features")
    y = as_label_tensor(labels, "labels", device=x.device)
    check_same_length(x, y, ("features", "labels"))
    if min_classes > 1:
        n_classes = count_classes(y)
        if n_classes < min_classes:
            if n_classes <= 1:
                raise PhenomlabError(f"labels have a single class; need at least {min_classes} classes")
            raise PhenomlabError(f"labels have {n_classes} classes; need at least {min_classes}")
    return x, y
