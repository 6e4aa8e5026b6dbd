"""Classes defined by hidden binary attributes, rendered into inputs by a random nonlinear map.

A synthetic stand-in for the attribute benchmarks (CUB, aPY, AwA) of Ali, Galanti, Zheltonozhskiy, Baskin,
Wolf 2021 (arXiv 2103.11888): every example has ``k`` binary attributes ``a in {0,1}^k`` that the learner
never sees; the label depends on them, and the input is a random nonlinear rendering of them.

The attributes are i.i.d. coins, ``a ~ Bernoulli(p_on)^k`` (``p_on < 1/2``: sparse, as real attributes are);
the labelling is one of

- ``labels="key"`` (classes defined by attribute combinations, like the dichotomous keys of botany that the
  paper cites): a random complete binary tree of depth ``D = log2(n_classes)`` whose every node tests one
  attribute not tested by its ancestors (the least-used one so far, ties broken at random, so that all
  attributes are used when ``2^D - 1 >= k``); the class is the leaf that ``a`` reaches.
- ``labels="random_partition"`` (the control: classes that do not factor through the attributes in any simple
  way): the label is ``T[a]`` for a random table ``T`` assigning each of the ``2^k`` combinations to a class
  (each class gets ``2^k / n_classes`` combinations). Same attributes, same rendering, same class sizes.

Rendering: ``s = 2a - 1 + latent_noise * eps`` (``eps ~ N(0, I_k)``), ``x = W2 tanh(gain * W1 s)`` with
Gaussian ``W1 (d x k) / sqrt(k)``, ``W2 (d x d) / sqrt(d)``, then standardised with the training statistics.
"""

from __future__ import annotations

import torch

from ..errors import PhenomlabError
from .base import Dataset

__all__ = ["hidden_attributes", "key_leaf", "random_key"]

LABELINGS = ("key", "random_partition")


def random_key(k: int, depth: int, g: torch.Generator) -> list[int]:
    """The attribute tested at each node of a complete depth-``depth`` tree, heap order."""
    node_attr: list[int] = []
    uses = [0] * k
    for node in range(2**depth - 1):
        path, i = set(), node
        while i > 0:
            i = (i - 1) // 2
            path.add(node_attr[i])
        free = [j for j in range(k) if j not in path]
        least = min(uses[j] for j in free)
        pool = [j for j in free if uses[j] == least]
        pick = pool[int(torch.randint(len(pool), (1,), generator=g))]
        uses[pick] += 1
        node_attr.append(pick)
    return node_attr


def key_leaf(a: torch.Tensor, node_attr: list[int]) -> torch.Tensor:
    """The leaf (0 .. 2^D - 1, left to right) that each row of ``a`` reaches: at node ``i`` go right iff
    ``a[node_attr[i]] == 1``; nodes in heap order (children of ``i``: ``2i+1`` left, ``2i+2`` right)."""
    n_internal = len(node_attr)
    node = torch.zeros(len(a), dtype=torch.long)
    attr = torch.tensor(node_attr, dtype=torch.long)
    while True:
        inside = node < n_internal
        if not bool(inside.any()):
            return node - n_internal
        idx = inside.nonzero().squeeze(1)
        go_right = a[idx, attr[node[idx]]].long()
        node[idx] = 2 * node[idx] + 1 + go_right


def hidden_attributes(
    n_attributes: int = 8,
    n_classes: int = 16,
    input_dim: int = 32,
    n_train: int = 4000,
    n_test: int = 2000,
    latent_noise: float = 0.3,
    gain: float = 2.0,
    p_on: float = 0.5,
    labels: str = "key",
    seed: int = 0,
) -> tuple[Dataset, torch.Tensor, torch.Tensor]:
    """``(dataset, attributes_train, attributes_test)``; attributes are float 0/1 tensors ``(n, k)``."""
    k = n_attributes
    if k < 1 or k > 20:
        raise PhenomlabError(f"n_attributes must be in [1, 20], got {k}")
    depth = n_classes.bit_length() - 1
    if n_classes < 2 or 2**depth != n_classes or depth > k:
        raise PhenomlabError(f"n_classes must be a power of 2 in [2, 2^n_attributes = {2**k}], got {n_classes}")
    if input_dim < 1 or n_train < 1 or n_test < 1:
        raise PhenomlabError("input_dim, n_train and n_test must be positive")
    if latent_noise < 0 or gain <= 0 or not 0 < p_on < 1:
        raise PhenomlabError(f"need latent_noise >= 0, gain > 0, 0 < p_on < 1; got {latent_noise}, {gain}, {p_on}")
    if labels not in LABELINGS:
        raise PhenomlabError(f"labels must be one of {LABELINGS}, got {labels!r}")
    g = torch.Generator().manual_seed(seed)
    bits = 2 ** torch.arange(k)
    node_attr = random_key(k, depth, g)
    # a balanced random table: combination -> class
    table = torch.arange(2**k) % n_classes
    table = table[torch.randperm(2**k, generator=g)]
    w1 = torch.randn(input_dim, k, generator=g) / k**0.5
    w2 = torch.randn(input_dim, input_dim, generator=g) / input_dim**0.5

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = (torch.rand(n, k, generator=g) < p_on).float()
        y = table[(a.long() * bits).sum(-1)] if labels == "random_partition" else key_leaf(a, node_attr)
        s = 2 * a - 1 + latent_noise * torch.randn(n, k, generator=g)
        x = torch.tanh(gain * s @ w1.T) @ w2.T
        return x, y, a

    xt, yt, at = sample(n_train)
    xe, ye, ae = sample(n_test)
    mu, sd = xt.mean(0), xt.std(0).clamp(min=1e-6)
    meta = {
        "name": "hidden_attributes",
        "n_attributes": k,
        "n_classes": n_classes,
        "input_dim": input_dim,
        "n_train": n_train,
        "n_test": n_test,
        "latent_noise": latent_noise,
        "gain": gain,
        "p_on": p_on,
        "labels": labels,
        "seed": seed,
    }
    ds = Dataset((xt - mu) / sd, yt, (xe - mu) / sd, ye, n_classes=n_classes, name="hidden_attributes", meta=meta)
    return ds, at, ae
