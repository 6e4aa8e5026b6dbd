"""A small CNN for 1-D signals (mnist1d) or 2-D images (digits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import PhenomlabError
from .mlp import activation


class SmallCNN(nn.Module):
    """``conv1, act1, ..., conv{k}, act{k}`` (stride-2 after the first), global average pool, ``fc, act_fc, out``.

    ``dims`` is 1 for inputs ``[N, L]`` or ``[N, C, L]``, 2 for ``[N, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        dims: int = 1,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 5,
        hidden: int = 64,
        activation_name: str = "relu",
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise PhenomlabError(f"SmallCNN dims must be 1 or 2, got {dims}")
        if not channels or min(channels) <= 0 or in_channels <= 0 or out_dim <= 0:
            raise PhenomlabError("SmallCNN channel counts and out_dim must be positive")
        if kernel_size <= 0 or hidden <= 0:
            raise PhenomlabError(f"SmallCNN kernel_size and hidden must be positive, got {kernel_size} and {hidden}")
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.dims = dims
        self.n_conv = len(channels)
        c = in_channels
        for i, co in enumerate(channels, 1):
            setattr(self, f"conv{i}", conv(c, co, kernel_size, stride=1 if i == 1 else 2, padding=kernel_size // 2))
            setattr(self, f"act{i}", activation(activation_name))
            c = co
        self.fc = nn.Linear(c, hidden)
        self.act_fc = activation(activation_name)
        self.out = nn.Linear(hidden, out_dim)

    penultimate = "act_fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == self.dims + 1:  # no channel axis
            x = x.unsqueeze(1)
        for i in range(1, self.n_conv + 1):
            x = getattr(self, f"act{i}")(getattr(self, f"conv{i}")(x))
        x = x.flatten(2).mean(-1)
        return self.out(self.act_fc(self.fc(x)))
