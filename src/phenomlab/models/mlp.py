"""Multilayer perceptrons with named layers, so probes can address them by name."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PhenomlabError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,  # slope 0.01, torch's default
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise PhenomlabError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


INITS = ("default", "he")


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units: ``fc1, act1, ..., fc{depth}, act{depth}, out``.

    Inputs of any shape are flattened. ``penultimate`` names the module whose output is the
    last-layer feature (what neural-collapse probes read).

    ``init``: ``"default"`` keeps PyTorch's ``nn.Linear`` init (weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    variance 1/(3 fan_in)), under which the signal's second moment shrinks ~2x per ReLU layer, so deep
    nets start on a plateau; ``"he"`` draws every weight from N(0, gain^2 / fan_in) with the activation's gain (2 for
    ReLU; He, Zhang, Ren, Sun 2015, arXiv 1502.01852) and zero biases, which keeps the forward signal
    scale constant with depth.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int = 128,
        depth: int = 2,
        activation_name: str = "relu",
        bias: bool = True,
        init: str = "default",
    ) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0 or width <= 0:
            raise PhenomlabError(f"MLP sizes must be positive: in={in_dim}, out={out_dim}, width={width}")
        if depth < 0:
            raise PhenomlabError(f"MLP depth must be >= 0, got {depth}")
        if init not in INITS:
            raise PhenomlabError(f"unknown init {init!r}; choose one of {list(INITS)}")
        self.depth = depth
        self.width = width
        d = in_dim
        for i in range(1, depth + 1):
            setattr(self, f"fc{i}", nn.Linear(d, width, bias=bias))
            setattr(self, f"act{i}", activation(activation_name))
            d = width
        self.out = nn.Linear(d, out_dim, bias=bias)
        if init == "he":
            # kaiming_normal_ knows no gelu/silu gain; they, and leaky ReLU at slope 0.01, are ReLU-like at this scale
            gain = (
                "relu"
                if activation_name in ("relu", "gelu", "silu", "leaky_relu")
                else "tanh"
                if activation_name == "tanh"
                else "linear"
            )
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_normal_(m.weight, nonlinearity=gain)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    @property
    def penultimate(self) -> str:
        return f"act{self.depth}" if self.depth else "out"

    @property
    def hidden_layers(self) -> list[str]:
        return [f"fc{i}" for i in range(1, self.depth + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"act{i}")(getattr(self, f"fc{i}")(h))
        return self.out(h)
