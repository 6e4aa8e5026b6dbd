"""A classifier with discrete top-level units read by an MLP head and a parallel soft decision tree.

Ali, Galanti, Zheltonozhskiy, Baskin, Wolf 2021, "Weakly Supervised Recovery of Semantic Attributes"
(arXiv 2103.11888; CLeaR 2022): an encoder ends in ``m`` binary units ``b(x) in {0,1}^m``; two heads read
them, an MLP and a decision tree whose stumps test single units, and both are trained on the class labels, so
that the units must suit the intersection of the two hypothesis classes; a randomized sparsity regulariser
pushes a random subset of units towards "off" at each step, since real attributes are sparse.

Pieces, each a pure function on tensors first (tested against explicit computations):

- :func:`binarize_st`: forward ``b = 1[z > 0]``; backward the straight-through sigmoid estimator
  ``db/dz := sigmoid(z) (1 - sigmoid(z))`` (Bengio, Leonard, Courville 2013, arXiv 1308.3432).
- :func:`soft_tree_leaf_probs`: the leaf distribution of a complete binary tree in heap order (node ``i`` has
  children ``2i+1`` (left) and ``2i+2`` (right)); ``P(leaf) = prod over the root-to-leaf path of p_right(node)``
  or ``1 - p_right(node)`` (Frosst & Hinton 2017, arXiv 1711.09784; Jordan & Jacobs 1994).
- :class:`SoftStumpTree`: the tree of the paper's second head on binary units. Node ``n`` routes right with
  probability ``p_n(b) = sum_j softmax(s_n)_j b_j``: a convex mixture of single units, which is an exact
  axis-aligned stump ``b_j`` once the selection ``softmax(s_n)`` is one-hot (our differentiable stand-in for
  the paper's decision tree on the discrete features). Output: ``log sum_leaf P(leaf | b) softmax(phi_leaf)``.
- :func:`randomized_sparsity`: ``mean over batch and the units in a random mask M of sigmoid(z)``, the
  expected number of active units among a random subset (our reading of the abstract's "randomized sparsity
  regularization"; the paper's exact form was not available to us).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import PhenomlabError

__all__ = ["DiscreteAttributeNet", "SoftStumpTree", "binarize_st", "randomized_sparsity", "soft_tree_leaf_probs"]


class _BinarizeST(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors  # type: ignore[attr-defined]
        s = torch.sigmoid(z)
        return grad * s * (1 - s)


def binarize_st(z: torch.Tensor) -> torch.Tensor:
    """``1[z > 0]`` forward; gradient of ``sigmoid(z)`` backward (straight-through sigmoid estimator)."""
    return _BinarizeST.apply(z)  # type: ignore[no-any-return]


def soft_tree_leaf_probs(p_right: torch.Tensor) -> torch.Tensor:
    """Leaf probabilities ``(B, 2^D)`` of a complete depth-``D`` tree from routing probabilities ``(B, 2^D - 1)``.

    Nodes in heap order (root 0; node ``i`` has children ``2i+1`` left, ``2i+2`` right); leaves left to right.
    """
    n_internal = p_right.shape[-1]
    depth = (n_internal + 1).bit_length() - 1
    if n_internal < 1 or 2**depth - 1 != n_internal:
        raise PhenomlabError(f"a complete tree has 2^D - 1 internal nodes, got {n_internal}")
    probs = torch.ones_like(p_right[..., :1])
    start = 0
    for d in range(depth):
        level = p_right[..., start : start + 2**d]  # the 2^d nodes of level d, left to right
        # children of level-d node k are level-(d+1) nodes 2k (left) and 2k+1 (right)
        probs = torch.stack([probs * (1 - level), probs * level], dim=-1).flatten(-2)
        start += 2**d
    return probs


class SoftStumpTree(nn.Module):
    """A soft decision tree whose nodes test (mixtures of) single input units; see the module docstring."""

    def __init__(self, n_units: int, n_classes: int, depth: int, temperature: float = 0.1) -> None:
        super().__init__()
        if n_units <= 0 or n_classes < 2 or depth < 1 or temperature <= 0:
            raise PhenomlabError(
                f"tree needs n_units > 0, n_classes >= 2, depth >= 1, temperature > 0; "
                f"got {n_units}, {n_classes}, {depth}, {temperature}"
            )
        self.depth = depth
        # the parameters are divided by the temperature: with Adam's bounded step size a stump selection (or a
        # confident leaf) needs logit gaps of several units, which 1/temperature makes reachable in few steps
        self.temperature = temperature
        self.select = nn.Parameter(torch.randn(2**depth - 1, n_units) * 0.1 * temperature)
        self.leaf = nn.Parameter(torch.randn(2**depth, n_classes) * 0.1 * temperature)

    def selection(self) -> torch.Tensor:
        """``softmax(select / temperature)``, ``(nodes, n_units)``: which unit each node tests."""
        return torch.softmax(self.select / self.temperature, dim=-1)

    def routing(self, b: torch.Tensor) -> torch.Tensor:
        """``p_right (B, nodes) = b @ selection^T``."""
        return b @ self.selection().T

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        """Log class probabilities ``log sum_leaf P(leaf | b) softmax(leaf logits / temperature)``."""
        leaf_p = soft_tree_leaf_probs(self.routing(b))
        return torch.log(leaf_p @ torch.softmax(self.leaf / self.temperature, dim=-1) + 1e-12)


def randomized_sparsity(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_{n,j} M_j sigmoid(z_nj) / (N * max(sum_j M_j, 1))``: mean activity of the masked units."""
    if mask.shape != logits.shape[-1:]:
        raise PhenomlabError(f"mask must have shape ({logits.shape[-1]},), got {tuple(mask.shape)}")
    return (torch.sigmoid(logits) * mask).sum(-1).mean() / mask.sum().clamp(min=1)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DiscreteAttributeNet(nn.Module):
    """Encoder -> ``n_units`` top-level units -> MLP head (+ a parallel :class:`SoftStumpTree` when ``tree_depth``).

    ``discrete=True``: the units are :func:`binarize_st` of the encoder's logits (the paper's model);
    ``discrete=False``: ``sigmoid`` of the same logits (the plain network of the same size, its continuous
    relaxation). ``forward`` returns the MLP head's logits; :meth:`parts` returns everything.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        n_units: int,
        width: int = 64,
        enc_depth: int = 2,
        head_width: int = 64,
        tree_depth: int = 0,
        discrete: bool = True,
        tree_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if min(in_dim, n_units, width, head_width) <= 0 or n_classes < 2 or enc_depth < 0 or tree_depth < 0:
            raise PhenomlabError("DiscreteAttributeNet sizes must be positive (depths >= 0, n_classes >= 2)")
        self.discrete = discrete
        self.encoder = _mlp([in_dim] + [width] * enc_depth + [n_units])
        self.head = _mlp([n_units, head_width, n_classes])
        self.tree = SoftStumpTree(n_units, n_classes, tree_depth, tree_temperature) if tree_depth else None

    def units(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, units)`` of the top level."""
        z = self.encoder(x.flatten(1))
        return z, (binarize_st(z) if self.discrete else torch.sigmoid(z))

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z, u = self.units(x)
        out = {"logits": z, "units": u, "mlp": self.head(u)}
        if self.tree is not None:
            out["tree"] = self.tree(u)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(x)[1])

    def loss(self, x: torch.Tensor, y: torch.Tensor, sparsity: float = 0.0, mask: torch.Tensor | None = None) -> tuple:
        """``CE(mlp) + NLL(tree) + sparsity * randomized_sparsity(z, mask)``; returns (total, parts)."""
        p = self.parts(x)
        ce = F.cross_entropy(p["mlp"], y)
        total, parts = ce, {"ce_mlp": float(ce.detach())}
        if "tree" in p:
            nll = F.nll_loss(p["tree"], y)
            total = total + nll
            parts["nll_tree"] = float(nll.detach())
        if sparsity > 0 and mask is not None:
            sp = randomized_sparsity(p["logits"], mask)
            total = total + sparsity * sp
            parts["sparsity"] = float(sp.detach())
        return total, parts
