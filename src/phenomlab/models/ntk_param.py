"""Networks in NTK parametrisation: an MLP, an Elman RNN and a 1-layer self-attention block.

NTK parametrisation (Jacot, Gabriel, Hongler 2018, arXiv 1806.07572; the form Tensor Programs IIb proves universal,
Yang & Littwin 2021, arXiv 2105.03703): every weight is an N(0, 1) parameter and the layer multiplies by
``1/sqrt(fan_in)`` in the forward pass, ``y = x W^T / sqrt(fan_in) + beta b``. Then the empirical NTK converges to a
deterministic kernel as the width ``n`` grows and gradient descent with a width-independent learning rate moves each
weight by ``O(1/sqrt(n))``, so training follows the kernel ODE with the NTK at initialisation.

``readout="mup"`` swaps only the readout multiplier ``1/sqrt(n)`` for ``1/n``. With a learning rate scaled by ``n``
(which a step set from ``lambda_max`` of the empirical NTK does by itself, since that kernel is then ``O(1/n)``), this
is muP in the "NTK-like" form given by the abc-symmetry ``(a, b, c) -> (a + 1/2, b - 1/2, c - 1)`` of Yang & Hu
(2021), "Tensor Programs IV: Feature Learning in Infinite-Width Neural Networks", arXiv 2011.14522: input-layer
multiplier ``1``, hidden ``1/sqrt(n)``, readout ``1/n``, N(0, 1) weights, learning rate ``eta n``. Features then move
by ``O(1)`` and the network does NOT follow its linearisation (the negative control of the ntk-universality row).

The modules are self-contained (plain ``nn.Parameter`` tensors, no ``nn.Linear``) so that the probes see exactly the
parameters the formulas name.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import PhenomlabError

__all__ = ["READOUTS", "NTKLinear", "NTKMLP", "NTKRNNCell", "NTKRNN", "NTKAttention"]

#: readout multipliers: "ntk" 1/sqrt(n) (kernel regime), "mup" 1/n (feature learning)
READOUTS = ("ntk", "mup")


def _positive(owner: str, **values: int) -> None:
    for name, v in values.items():
        if v <= 0:
            raise PhenomlabError(f"{owner} {name} must be positive, got {v}")


#: elementwise nonlinearities of the hidden layers
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu}


def _activation(name: str):  # noqa: ANN202 - a plain tensor function
    if name not in ACTIVATIONS:
        raise PhenomlabError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _readout_scale(readout: str, width: int) -> float:
    if readout not in READOUTS:
        raise PhenomlabError(f"readout must be one of {READOUTS}, got {readout!r}")
    return 1.0 / math.sqrt(width) if readout == "ntk" else 1.0 / width


class NTKLinear(nn.Module):
    """``y = x W^T * scale + bias_scale * b`` with ``W ~ N(0, 1)`` ``[out, in]``, ``b ~ N(0, 1)``.

    ``scale`` defaults to ``1/sqrt(in_features)`` (NTK parametrisation); ``bias_scale`` is Jacot et al.'s ``beta``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        bias_scale: float = 1.0,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        _positive("NTKLinear", in_features=in_features, out_features=out_features)
        if scale is not None and not scale > 0:
            raise PhenomlabError(f"NTKLinear scale must be positive, got {scale}")
        self.in_features, self.out_features = in_features, out_features
        self.scale = 1.0 / math.sqrt(in_features) if scale is None else float(scale)
        self.bias_scale = float(bias_scale)
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.randn(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise PhenomlabError(f"NTKLinear expects {self.in_features} input features, got {x.shape[-1]}")
        y = (x @ self.weight.T) * self.scale
        return y if self.bias is None else y + self.bias_scale * self.bias


class NTKMLP(nn.Module):
    """``depth`` ReLU hidden layers of ``width`` units and a linear readout, NTK-parametrised.

    ``h_1 = relu(W_1 x / sqrt(d) + b_1)``, ``h_l = relu(W_l h_{l-1} / sqrt(n) + b_l)``, ``f = v . h_L * s`` with
    ``s = 1/sqrt(n)`` (``readout="ntk"``) or ``1/n`` (``"mup"``). Inputs of any shape are flattened; output ``[N, 1]``.
    """

    def __init__(self, d_in: int, width: int, depth: int = 2, readout: str = "ntk", activation: str = "relu") -> None:
        super().__init__()
        _positive("NTKMLP", d_in=d_in, width=width, depth=depth)
        self.act = _activation(activation)
        self.hidden = nn.ModuleList([NTKLinear(d_in if i == 0 else width, width, bias=True) for i in range(depth)])
        self.readout = NTKLinear(width, 1, scale=_readout_scale(readout, width))

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.readout(h)


class NTKRNNCell(nn.Module):
    """One Elman step ``h' = tanh(W h / sqrt(n) + U x / sqrt(d) + b)``, all of ``W, U, b`` N(0, 1)."""

    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        _positive("NTKRNNCell", d_in=d_in, width=width)
        self.width = width
        self.inp = NTKLinear(d_in, width, bias=True)
        self.rec = NTKLinear(width, width)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.tanh(self.rec(h) + self.inp(x))


class NTKRNN(nn.Module):
    """An Elman RNN over ``[N, T, d]`` sequences (``h_0 = 0``), read out from the last state: ``f = v . h_T * s``.

    The recurrent weight is shared across time steps, the case Tensor Programs IIb covers and earlier NTK proofs
    (which assume fresh weights per layer) did not. Output ``[N, 1]``.
    """

    def __init__(self, d_in: int, width: int, readout: str = "ntk") -> None:
        super().__init__()
        self.cell = NTKRNNCell(d_in, width)
        self.readout = NTKLinear(width, 1, scale=_readout_scale(readout, width))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3:
            raise PhenomlabError(f"NTKRNN expects [N, T, d] sequences, got shape {tuple(x.shape)}")
        h = x.new_zeros(x.shape[0], self.cell.width)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.readout(h)


class NTKAttention(nn.Module):
    """A 1-layer self-attention block over ``[N, T, d]`` token sequences, NTK-parametrised.

    ``E = X W_e^T / sqrt(d) + P`` (``[N, T, n]``; ``P`` a learned N(0, 1) position embedding ``[max_len, n]``, an
    input-layer weight on one-hot positions, so multiplier 1; without it the block is permutation invariant),
    attention ``A = softmax_keys(E E^T / n)`` with the ``1/n`` key-query scaling that makes the logits converge to a
    deterministic limit (Yang 2020, Tensor Programs II, arXiv 2006.14548, whose transformer also uses the embedding
    as query and key), values ``V = E W_v^T / sqrt(n)``, residual ``Z = E + A V``, feed-forward
    ``H = act(Z W_1^T / sqrt(n))``, and the readout averaged over tokens,
    ``f = mean_t v . H_t * s``. Output ``[N, 1]``.
    """

    def __init__(self, d_in: int, width: int, max_len: int, readout: str = "ntk", activation: str = "relu") -> None:
        super().__init__()
        _positive("NTKAttention", d_in=d_in, width=width, max_len=max_len)
        self.act = _activation(activation)
        self.width, self.max_len = width, max_len
        self.embed = NTKLinear(d_in, width)
        self.position = nn.Parameter(torch.randn(max_len, width))
        self.value = NTKLinear(width, width)
        self.ff = NTKLinear(width, width)
        self.readout = NTKLinear(width, 1, scale=_readout_scale(readout, width))

    def embedding(self, x: Tensor) -> Tensor:
        """``E = X W_e^T / sqrt(d) + P``, ``[N, T, n]``."""
        if x.ndim != 3 or x.shape[1] > self.max_len:
            raise PhenomlabError(
                f"NTKAttention expects [N, T, d] sequences with T <= {self.max_len}, got shape {tuple(x.shape)}"
            )
        return self.embed(x) + self.position[: x.shape[1]]

    def attention(self, x: Tensor) -> Tensor:
        """The attention weights ``softmax(E E^T / n)``, ``[N, T, T]`` (rows sum to 1)."""
        e = self.embedding(x)
        return torch.softmax(e @ e.transpose(1, 2) / self.width, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        e = self.embedding(x)
        a = torch.softmax(e @ e.transpose(1, 2) / self.width, dim=-1)
        z = e + a @ self.value(e)
        return self.readout(self.act(self.ff(z))).mean(1)
