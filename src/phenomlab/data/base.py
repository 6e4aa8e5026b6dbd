"""The dataset container every loader returns: tensors, a fixed split, a seed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PhenomlabError


@dataclass
class Dataset:
    """Train/test tensors for a classification (or token) task.

    ``x_*`` are float inputs (or long tokens), ``y_*`` long class labels in ``[0, n_classes)``.
    ``meta`` records how the data were made (name, seed, sizes, noise) so a run is reproducible.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    name: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train):
            raise PhenomlabError(
                f"{self.name}: x_train has {len(self.x_train)} rows but y_train has {len(self.y_train)}"
            )
        if len(self.x_test) != len(self.y_test):
            raise PhenomlabError(f"{self.name}: x_test has {len(self.x_test)} rows but y_test has {len(self.y_test)}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train, self.y_train

    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_test, self.y_test

    def to(self, device: str | torch.device) -> Dataset:
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset_train(self, n: int, seed: int = 0) -> Dataset:
        """The first ``n`` training rows of a seeded permutation (for data-size sweeps)."""
        if not 0 < n <= self.n_train:
            raise PhenomlabError(f"subset size must be in (0, {self.n_train}], got {n}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.n_train, generator=g)[:n].to(self.y_train.device)
        meta = {**self.meta, "n_train": n, **train_rows(self.meta, self.n_train, idx)}
        return replace(self, x_train=self.x_train[idx], y_train=self.y_train[idx], meta=meta)


#: metadata holding one entry per training point (label-noise wrappers), kept in step with the rows
ROW_META = ("y_train_clean", "noisy_mask")


def train_rows(meta: dict[str, Any], n_train: int, idx: torch.Tensor) -> dict[str, Any]:
    """The per-training-point entries of ``meta`` (:data:`ROW_META`) at rows ``idx``."""
    return {
        k: meta[k][idx.to(meta[k].device)]
        for k in ROW_META
        if isinstance(meta.get(k), torch.Tensor) and len(meta[k]) == n_train
    }


def from_tensors(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    n_classes: int | None = None,
    name: str = "user",
) -> Dataset:
    """Wrap user arrays (numpy or torch) as a :class:`Dataset`; labels become long tensors."""
    xs = [torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a) for a in (x_train, x_test)]
    ys = [torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a) for a in (y_train, y_test)]
    xs = [x.float() if x.is_floating_point() else x.long() for x in xs]
    for y in ys:
        if y.ndim != 1:
            raise PhenomlabError(f"labels must be 1-D, got shape {tuple(y.shape)}")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise PhenomlabError("labels must be integers (class indices)")
    ys = [y.long() for y in ys]
    for x in xs:
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise PhenomlabError(f"{name}: inputs contain NaN/inf")
    if min(int(ys[0].min()), int(ys[1].min())) < 0:
        raise PhenomlabError("labels must be non-negative class indices")
    k = int(max(ys[0].max(), ys[1].max())) + 1
    if n_classes is None:
        n_classes = k
    elif n_classes < k:
        raise PhenomlabError(f"n_classes={n_classes} but labels go up to {k - 1}")
    return Dataset(xs[0], ys[0], xs[1], ys[1], n_classes=n_classes, name=name, meta={"name": name})


def from_npz(path: str | Path, n_classes: int | None = None) -> Dataset:
    """Load user data from an ``.npz`` with arrays ``x_train, y_train, x_test, y_test``."""
    path = Path(path)
    if not path.exists():
        raise PhenomlabError(f"no such file: {path}")
    with np.load(path) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise PhenomlabError(f"{path} lacks arrays {sorted(missing)} (has {sorted(f.files)})")
        return from_tensors(f["x_train"], f["y_train"], f["x_test"], f["y_test"], n_classes, name=path.stem)
