"""Models for token tasks such as modular arithmetic: embedding+MLP and a 1-layer transformer."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import PhenomlabError
from .mlp import activation


class EmbedMLP(nn.Module):
    """Embed each of ``n_tokens`` input tokens, concatenate, then an MLP: ``embed, fc1, act1, ..., out``.

    The grokking architecture of Liu et al. 2022 (arXiv 2205.10343) and Gromov 2023 (arXiv 2301.02679)
    in spirit: a token embedding followed by a small MLP.
    """

    def __init__(
        self,
        vocab_size: int,
        out_dim: int,
        n_tokens: int = 2,
        embed_dim: int = 128,
        width: int = 256,
        depth: int = 1,
        activation_name: str = "relu",
    ) -> None:
        super().__init__()
        if min(vocab_size, out_dim, n_tokens, embed_dim, width) <= 0 or depth < 1:
            raise PhenomlabError("EmbedMLP sizes must be positive and depth >= 1")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.depth = depth
        d = n_tokens * embed_dim
        for i in range(1, depth + 1):
            setattr(self, f"fc{i}", nn.Linear(d, width))
            setattr(self, f"act{i}", activation(activation_name))
            d = width
        self.out = nn.Linear(d, out_dim)

    @property
    def penultimate(self) -> str:
        return f"act{self.depth}"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens).flatten(1)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"act{i}")(getattr(self, f"fc{i}")(h))
        return self.out(h)


class Transformer1L(nn.Module):
    """A one-layer pre-norm-free transformer (attention + MLP, residual), read out at the last position.

    The model of Nanda et al. 2023 (arXiv 2301.05217): learned token and position embeddings,
    ``n_heads`` attention heads, a ReLU MLP of width ``d_mlp``, unembedding ``out``.
    """

    def __init__(
        self, vocab_size: int, out_dim: int, seq_len: int = 2, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512
    ) -> None:
        super().__init__()
        sizes = dict(vocab_size=vocab_size, out_dim=out_dim, seq_len=seq_len, d_model=d_model, n_heads=n_heads)
        bad = [f"{k}={v}" for k, v in (sizes | {"d_mlp": d_mlp}).items() if not (isinstance(v, int) and v > 0)]
        if bad:
            raise PhenomlabError(f"Transformer1L sizes must be positive whole numbers, got {', '.join(bad)}")
        if d_model % n_heads:
            raise PhenomlabError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) / math.sqrt(d_model))
        self.attn = nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
        self.fc1 = nn.Linear(d_model, d_mlp)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(d_mlp, d_model)
        self.out = nn.Linear(d_model, out_dim, bias=False)

    penultimate = "fc2"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        a, _ = self.attn(h, h, h, need_weights=False)
        h = h + a
        h = h + self.fc2(self.act1(self.fc1(h)))
        return self.out(h[:, -1])
