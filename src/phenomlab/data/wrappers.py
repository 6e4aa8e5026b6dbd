"""Dataset transforms: label noise, random labels, class splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from ..errors import PhenomlabError
from .base import ROW_META, Dataset, train_rows


def with_label_noise(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Replace the labels of a ``fraction`` of training points by a *different* uniformly random class.

    Test labels stay clean (the setting of Nakkiran et al. 2019, arXiv 1912.02292). The clean
    labels and the mask of corrupted points go to ``meta['y_train_clean']``/``meta['noisy_mask']``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise PhenomlabError(f"label-noise fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    n = ds.n_train
    n_noisy = int(round(fraction * n))
    idx = torch.randperm(n, generator=g)[:n_noisy]
    y = ds.y_train.clone()
    # shift by 1..C-1 so a corrupted label is never the true one
    shift = torch.randint(1, ds.n_classes, (n_noisy,), generator=g)
    y[idx] = (y[idx] + shift.to(y.device)) % ds.n_classes
    # noise on noise: the clean labels stay the original ones, and the mask says which labels differ from them
    clean = _clean_labels(ds)
    mask = (y != clean).cpu()
    return replace(ds, y_train=y, meta={**ds.meta, "label_noise": fraction, "y_train_clean": clean, "noisy_mask": mask})


def _clean_labels(ds: Dataset) -> torch.Tensor:
    clean = ds.meta.get("y_train_clean")
    return clean if isinstance(clean, torch.Tensor) and len(clean) == ds.n_train else ds.y_train


def with_random_labels(ds: Dataset, seed: int = 0, fraction: float = 1.0) -> Dataset:
    """Draw a ``fraction`` of the training labels uniformly at random (Zhang et al. 2017, arXiv 1611.03530).

    Unlike :func:`with_label_noise`, a resampled label may coincide with the true one.
    """
    if not 0.0 <= fraction <= 1.0:
        raise PhenomlabError(f"random-label fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    n = ds.n_train
    idx = torch.randperm(n, generator=g)[: int(round(fraction * n))]
    y = ds.y_train.clone()
    y[idx] = torch.randint(0, ds.n_classes, (len(idx),), generator=g).to(y.device)
    return replace(ds, y_train=y, meta={**ds.meta, "random_labels": fraction, "y_train_clean": _clean_labels(ds)})


def class_split(ds: Dataset, source_classes: int | Sequence[int], seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split by class into (source, new): new classes are held out entirely (Galanti et al. 2022,
    arXiv 2112.15121). Both parts are relabelled to ``0..k-1``; ``meta['classes']`` keeps the originals.

    ``source_classes`` is a count (a seeded random choice) or an explicit list of class ids.
    """
    if isinstance(source_classes, int):
        if not 0 < source_classes < ds.n_classes:
            raise PhenomlabError(f"source_classes must be in (0, {ds.n_classes}), got {source_classes}")
        g = torch.Generator().manual_seed(seed)
        src = sorted(torch.randperm(ds.n_classes, generator=g)[:source_classes].tolist())
    else:
        src = sorted(int(c) for c in source_classes)
        if not src or len(set(src)) != len(src) or min(src) < 0 or max(src) >= ds.n_classes:
            raise PhenomlabError(f"source_classes must be distinct ids in [0, {ds.n_classes}), got {src}")
        if len(src) == ds.n_classes:
            raise PhenomlabError("source_classes leaves no new classes")
    new = [c for c in range(ds.n_classes) if c not in src]

    def part(classes: list[int], tag: str) -> Dataset:
        remap = torch.full((ds.n_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        mtr = remap[ds.y_train.cpu()] >= 0
        mte = remap[ds.y_test.cpu()] >= 0
        # per-point label-noise metadata: the mask follows the rows; clean labels outside the part have no new id
        meta = {k: v for k, v in ds.meta.items() if k not in ROW_META}
        rows = train_rows(ds.meta, ds.n_train, mtr.nonzero().squeeze(1))
        if "noisy_mask" in rows:
            meta["noisy_mask"] = rows["noisy_mask"]
        # the remapped labels go back to the inputs' device (the lookup is done on the CPU)
        return Dataset(
            ds.x_train[mtr],
            remap[ds.y_train.cpu()[mtr]].to(ds.y_train.device),
            ds.x_test[mte],
            remap[ds.y_test.cpu()[mte]].to(ds.y_test.device),
            n_classes=len(classes),
            name=f"{ds.name}[{tag}]",
            meta={**meta, "classes": classes, "part": tag},
        )

    return part(src, "source"), part(new, "new")
