"""Inputs made of blocks that each predict the label on their own: LMS data and digit/MNIST-1D dominoes.

Shah, Tamuly, Raghunathan, Jain, Netrapalli 2020, "The Pitfalls of Simplicity Bias in Neural Networks"
(arXiv 2006.07710), Sec. 3. **LMS-k** (linear + multiple k-slabs): binary labels ``y`` in {0, 1}; coordinate 0
is *linear*, ``x_0 = (2y - 1) * u`` with ``u ~ U[margin, 1]`` (separated by a band of width ``2 margin``);
each of the next ``n_slabs`` coordinates is a *k-slab*: ``[-1, 1]`` cut into ``k`` (odd) slabs of width
``w = (2 - 2 (k - 1) margin) / k`` separated by gaps of ``2 margin``, slab ``j`` covering
``[-1 + j (w + 2 margin), -1 + j (w + 2 margin) + w]``. The slabs alternate between the classes and the
centre slab belongs to class 0; given the label, each slab coordinate independently picks one of its class's
slabs (class 0: the centre slab with probability ``center_prob``, the paper's 3/4 for 5-slabs, the rest
split evenly over its other slabs; class 1: its slabs evenly) and a uniform point inside it. Every block
alone predicts the label exactly: the sign of ``x_0``, or the slab index of any one slab coordinate.

**Dominoes** (a download-free analogue of the paper's MNIST-CIFAR dominoes): each MNIST-1D signal
(Greydanus 2020, arXiv 2011.14439, generated locally) is concatenated with an 8x8 scikit-learn digit image of
the same class (drawn at random from the digits train split for training rows, from its test split for test
rows), so both halves carry the label. Each half is standardised with its own training mean and std.

``shuffle_columns`` makes the paper's S-randomised inputs: the chosen columns are permuted jointly across
rows, which keeps the block's marginal distribution but cuts its link to the label.
"""

from __future__ import annotations

import torch

from ..errors import PhenomlabError
from .base import Dataset
from .synthetic import digits, mnist1d


def slab_width(k: int, margin: float) -> float:
    """Width ``(2 - 2 (k - 1) margin) / k`` of each of the ``k`` slabs tiling [-1, 1] with gaps ``2 margin``."""
    return (2.0 - 2.0 * (k - 1) * margin) / k


def _check_slabs(k: int, margin: float) -> None:
    if k < 3 or k % 2 == 0:
        raise PhenomlabError(f"slabs per coordinate must be odd and >= 3, got {k}")
    if not 0.0 < margin or slab_width(k, margin) <= 0.0:
        raise PhenomlabError(f"margin must be in (0, 1/(k-1)) for k={k} slabs, got {margin}")


def slab_class(j: torch.Tensor | int, k: int) -> torch.Tensor | int:
    """The class (0 or 1) owning slab ``j`` of ``k``: the centre slab is class 0 and the classes alternate."""
    return (j - (k - 1) // 2) % 2


def slab_index(x: torch.Tensor, k: int, margin: float) -> torch.Tensor:
    """Index of the slab each value of ``x`` falls in (values in a gap go to the slab on their left)."""
    _check_slabs(k, margin)
    step = slab_width(k, margin) + 2.0 * margin
    return torch.clamp(torch.floor((x + 1.0) / step), 0, k - 1).long()


def lms(
    n_train: int = 10000,
    n_test: int = 2000,
    n_slabs: int = 49,
    k: int = 5,
    margin: float = 0.1,
    center_prob: float = 0.75,
    seed: int = 0,
) -> Dataset:
    """LMS-k data (Shah et al. 2020, arXiv 2006.07710): column 0 linear, columns 1..n_slabs k-slab; 2 classes.

    See the module docstring for the construction. ``center_prob`` is the probability that a class-0 slab
    coordinate sits in the centre slab (ignored for k = 3, where class 0 has only the centre slab).
    """
    if n_train <= 0 or n_test <= 0:
        raise PhenomlabError(f"lms sizes must be positive, got n_train={n_train}, n_test={n_test}")
    if n_slabs < 0:
        raise PhenomlabError(f"n_slabs must be >= 0, got {n_slabs}")
    if not 0.0 < margin < 1.0:
        raise PhenomlabError(f"margin must be in (0, 1), got {margin}")
    if n_slabs:
        _check_slabs(k, margin)
    if not 0.0 <= center_prob <= 1.0:
        raise PhenomlabError(f"center_prob must be in [0, 1], got {center_prob}")
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.randint(0, 2, (n,), generator=g)
    sign = 2.0 * y.double() - 1.0
    lin = sign * (margin + (1.0 - margin) * torch.rand(n, generator=g, dtype=torch.float64))
    cols = [lin[:, None]]
    if n_slabs:
        w = slab_width(k, margin)
        centre = (k - 1) // 2
        own = [[j for j in range(k) if slab_class(j, k) == c] for c in (0, 1)]
        # per-class probabilities over the k slabs
        probs = torch.zeros(2, k, dtype=torch.float64)
        side0 = [j for j in own[0] if j != centre]
        probs[0, centre] = 1.0 if not side0 else center_prob
        for j in side0:
            probs[0, j] = (1.0 - center_prob) / len(side0)
        for j in own[1]:
            probs[1, j] = 1.0 / len(own[1])
        flat = torch.multinomial(probs[y].repeat_interleave(n_slabs, 0), 1, replacement=True, generator=g)
        j = flat.view(n, n_slabs).double()
        u = torch.rand(n, n_slabs, generator=g, dtype=torch.float64)
        cols.append(-1.0 + j * (w + 2.0 * margin) + w * u)
    x = torch.cat(cols, 1).float()
    return Dataset(
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        n_classes=2,
        name="lms",
        meta={
            "name": "lms",
            "n_train": n_train,
            "n_test": n_test,
            "n_slabs": n_slabs,
            "k": k,
            "margin": margin,
            "center_prob": center_prob,
            "seed": seed,
        },
    )


def _class_rows(y: torch.Tensor, classes: tuple[int, ...], n: int) -> torch.Tensor | None:
    """Indices of the first ``n`` rows whose label is in ``classes`` (None if there are fewer)."""
    rows = torch.isin(y, torch.tensor(classes)).nonzero().flatten()
    return rows[:n] if len(rows) >= n else None


def dominoes(
    n_train: int = 4000,
    n_test: int = 2000,
    seed: int = 0,
    digit_classes: tuple[int, ...] | None = None,
    signal_classes: tuple[int, ...] | None = None,
) -> Dataset:
    """MNIST-1D signals (columns 0..39) concatenated with 8x8 digit images (columns 40..103) of a paired class.

    Label ``i`` pairs MNIST-1D class ``signal_classes[i]`` with digit class ``digit_classes[i]`` (both default
    to all ten classes, paired with themselves), as the paper pairs MNIST 0/1 with CIFAR car/truck. Training
    rows take their digit from the digits train split, test rows from its test split (a test row's image was
    never seen in training); each half is standardised by its own training mean and std.
    """
    if n_train <= 0 or n_test <= 0:
        raise PhenomlabError(f"dominoes sizes must be positive, got n_train={n_train}, n_test={n_test}")
    dc = tuple(range(10)) if digit_classes is None else tuple(digit_classes)
    sc = dc if signal_classes is None else tuple(signal_classes)
    if len(dc) != len(sc) or len(dc) < 2:
        raise PhenomlabError(f"need >= 2 paired classes, got digit {list(dc)} and signal {list(sc)}")
    for name, cl in (("digit", dc), ("signal", sc)):
        if len(set(cl)) != len(cl) or not all(0 <= c < 10 for c in cl):
            raise PhenomlabError(f"{name}_classes must be distinct classes in 0..9, got {list(cl)}")
    # MNIST-1D draws its classes uniformly: generate ~10/K times the rows needed, more if a draw fell short
    scale = 10.0 / len(sc) * 1.2
    while True:
        sig = mnist1d(int(n_train * scale) + 50, int(n_test * scale) + 50, seed=seed, standardize=False)
        tr, te = _class_rows(sig.y_train, sc, n_train), _class_rows(sig.y_test, sc, n_test)
        if tr is not None and te is not None:
            break
        scale *= 1.5
    img = digits(seed=seed)
    g = torch.Generator().manual_seed(seed)

    def relabel(y: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(y)
        for i, c in enumerate(sc):
            out[y == c] = i
        return out

    def pick(images: torch.Tensor, labels: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(want), images.shape[1])
        for i, c in enumerate(dc):
            rows = (want == i).nonzero().flatten()
            pool = (labels == c).nonzero().flatten()
            if len(rows) and not len(pool):
                raise PhenomlabError(f"digits split has no image of class {c}")
            out[rows] = images[pool[torch.randint(len(pool), (len(rows),), generator=g)]]
        return out

    yt, ye = relabel(sig.y_train[tr]), relabel(sig.y_test[te])
    st, se = sig.x_train[tr], sig.x_test[te]
    dt, de = pick(img.x_train, img.y_train, yt), pick(img.x_test, img.y_test, ye)
    (mu_s, sd_s), (mu_d, sd_d) = (st.mean(), st.std()), (dt.mean(), dt.std())
    d_sig = sig.input_dim
    return Dataset(
        torch.cat([(st - mu_s) / sd_s, (dt - mu_d) / sd_d], 1),
        yt,
        torch.cat([(se - mu_s) / sd_s, (de - mu_d) / sd_d], 1),
        ye,
        n_classes=len(dc),
        name="dominoes",
        meta={
            "name": "dominoes",
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "digit_classes": list(dc),
            "signal_classes": list(sc),
            "blocks": {"mnist1d": [0, d_sig], "digits": [d_sig, d_sig + img.input_dim]},
        },
    )


def shuffle_columns(x: torch.Tensor, cols: slice | list[int], generator: torch.Generator) -> torch.Tensor:
    """A copy of ``x`` whose columns ``cols`` are permuted jointly across rows (one random permutation).

    The block keeps its marginal distribution (and its internal structure) but is made independent of the
    other columns and of the label: the S-randomisation of Shah et al. 2020 (arXiv 2006.07710).
    """
    if x.dim() != 2:
        raise PhenomlabError(f"shuffle_columns needs a 2-D tensor, got shape {tuple(x.shape)}")
    out = x.clone()
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    out[:, cols] = x[perm][:, cols]
    return out
