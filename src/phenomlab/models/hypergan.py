"""A hypernetwork that emits a small multi-scale single-image GAN (generator and discriminator) per input image.

Bensadoun, Gur, Galanti, Wolf (2021), "Meta Internal Learning", NeurIPS, arXiv 2110.02900. Two convolutional
embedding networks ``e_g`` and ``e_d`` map an image ``x_i`` to vectors; linear heads map those vectors to the
weights of a SinGAN-style pyramid (Shaham, Dekel, Michaeli 2019, arXiv 1905.01164) for that image:

- generator at scale ``s`` (coarse to fine, sizes ``size / 2^(S-1-s)``): ``y_s = u + tanh(g_s(u + sigma_s z_s))``
  with ``u`` the bilinear upsampling of ``y_{s-1}`` (zeros at the coarsest scale) and ``g_s`` a stack of
  ``layers`` 3x3 convolutions (zero padding, LeakyReLU(0.2) between them);
- discriminator at scale ``s``: a stack of 3x3 convolutions ending in one channel, a map of patch scores.

Emitted weights are ``W_i = W_0 + H e(x_i)``: the linear head's bias ``W_0`` is a shared base network (He
initialised) and ``H`` (small at init) specialises it per image. A batch of ``B`` images with ``n`` noise samples
each runs as ONE grouped convolution per layer: inputs ``[n, B, C, H, W]`` become ``[n, B*C, H, W]`` and the ``B``
emitted kernels are stacked with ``groups=B`` (exactly the per-image convolutions; see
:func:`batched_conv2d`). :func:`primary_module` builds the same network for one image as a plain ``nn.Sequential``
(the reference the tests compare against).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PhenomlabError

__all__ = ["HyperSinGAN", "batched_conv2d", "conv_stack_shapes", "primary_module", "unflatten_stack"]

_SLOPE = 0.2


def conv_stack_shapes(in_ch: int, width: int, out_ch: int, layers: int, k: int = 3) -> list[tuple[int, int, int]]:
    """``(out, in, k)`` of each convolution in a stack ``in_ch -> width -> ... -> width -> out_ch``."""
    if layers < 1:
        raise PhenomlabError(f"a convolution stack needs at least 1 layer, got {layers}")
    chans = [in_ch] + [width] * (layers - 1) + [out_ch]
    return [(chans[i + 1], chans[i], k) for i in range(layers)]


def _stack_size(shapes: list[tuple[int, int, int]]) -> int:
    return sum(o * i * k * k + o for o, i, k in shapes)


def unflatten_stack(flat: Tensor, shapes: list[tuple[int, int, int]]) -> list[tuple[Tensor, Tensor]]:
    """Split ``[B, P]`` flat parameters into per-layer ``(weight [B, out, in, k, k], bias [B, out])``."""
    if flat.shape[-1] != _stack_size(shapes):
        raise PhenomlabError(f"expected {_stack_size(shapes)} parameters per network, got {flat.shape[-1]}")
    out, pos = [], 0
    for o, i, k in shapes:
        w = flat[:, pos : pos + o * i * k * k].reshape(-1, o, i, k, k)
        pos += o * i * k * k
        b = flat[:, pos : pos + o]
        pos += o
        out.append((w, b))
    return out


def batched_conv2d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Per-image convolution (3x3 'same', zero padding) for a batch of images with their own kernels.

    ``x``: ``[n, B, C_in, H, W]`` (``n`` inputs for each of ``B`` networks), ``weight``: ``[B, C_out, C_in, k, k]``,
    ``bias``: ``[B, C_out]``. Returns ``[n, B, C_out, H, W]`` with ``out[:, b] = conv2d(x[:, b], weight[b],
    bias[b])``, computed as one convolution with ``groups=B``.
    """
    n, B, c_in, h, w = x.shape
    if weight.shape[0] != B or weight.shape[2] != c_in:
        raise PhenomlabError(f"weight {tuple(weight.shape)} does not match input {tuple(x.shape)}")
    c_out, k = weight.shape[1], weight.shape[-1]
    y = F.conv2d(
        x.reshape(n, B * c_in, h, w), weight.reshape(B * c_out, c_in, k, k), bias.reshape(-1), padding=k // 2, groups=B
    )
    return y.reshape(n, B, c_out, h, w)


def _apply_stack(x: Tensor, params: list[tuple[Tensor, Tensor]]) -> Tensor:
    for j, (w, b) in enumerate(params):
        x = batched_conv2d(x, w, b)
        if j < len(params) - 1:
            x = F.leaky_relu(x, _SLOPE)
    return x


def primary_module(params: list[tuple[Tensor, Tensor]]) -> nn.Sequential:
    """The conv stack of ONE image as a plain ``nn.Sequential`` (Conv2d / LeakyReLU), weights copied from
    ``params`` = per-layer ``(weight [out, in, k, k], bias [out])``."""
    mods: list[nn.Module] = []
    for j, (w, b) in enumerate(params):
        o, i, k, _ = w.shape
        conv = nn.Conv2d(i, o, k, padding=k // 2, dtype=w.dtype, device=w.device)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        mods.append(conv)
        if j < len(params) - 1:
            mods.append(nn.LeakyReLU(_SLOPE))
    return nn.Sequential(*mods)


class _Encoder(nn.Module):
    """A small conv net with global average pooling: image ``[B, C, H, W]`` -> embedding ``[B, E]``."""

    def __init__(self, channels: int, width: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(width, width, 3, padding=1, stride=2),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(width, width, 3, padding=1),
            nn.LeakyReLU(_SLOPE),
        )
        self.out = nn.Linear(2 * width, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x)
        # mean and std over positions: first- and second-order patch statistics of the image
        return self.out(torch.cat([h.mean((2, 3)), h.std((2, 3))], 1))


def _head(embed_dim: int, shapes: list[tuple[int, int, int]], scale: float) -> nn.Linear:
    head = nn.Linear(embed_dim, _stack_size(shapes))
    with torch.no_grad():
        head.weight.mul_(scale)
        base = []
        for o, i, k in shapes:
            base.append(torch.randn(o * i * k * k) * math.sqrt(2.0 / (1 + _SLOPE**2) / (i * k * k)))
            base.append(torch.zeros(o))
        head.bias.copy_(torch.cat(base))
    return head


class HyperSinGAN(nn.Module):
    """Hyper-generator and hyper-discriminator of Meta Internal Learning (Bensadoun et al. 2021, arXiv 2110.02900).

    ``embed(x, "g" | "d")`` -> ``[B, E]``; ``emit(e, "g" | "d")`` -> flat per-image parameters of all scales
    ``[B, P]``; ``generate(theta_g, noises)`` and ``discriminate(theta_d, x, scale)`` apply them batched.
    """

    def __init__(
        self,
        channels: int = 1,
        size: int = 16,
        n_scales: int = 2,
        width: int = 16,
        layers: int = 3,
        embed_dim: int = 32,
        enc_width: int = 32,
        head_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if size % (2 ** (n_scales - 1)):
            raise PhenomlabError(f"size {size} is not divisible by 2^(n_scales-1) = {2 ** (n_scales - 1)}")
        self.channels, self.size, self.n_scales = channels, size, n_scales
        self.sizes = [size // 2 ** (n_scales - 1 - s) for s in range(n_scales)]
        self.g_shapes = conv_stack_shapes(channels, width, channels, layers)
        self.d_shapes = conv_stack_shapes(channels, width, 1, layers)
        self.e_g = _Encoder(channels, enc_width, embed_dim)
        self.e_d = _Encoder(channels, enc_width, embed_dim)
        self.h_g = nn.ModuleList(_head(embed_dim, self.g_shapes, head_scale) for _ in range(n_scales))
        self.h_d = nn.ModuleList(_head(embed_dim, self.d_shapes, head_scale) for _ in range(n_scales))

    def hyper_parameters(self, which: str) -> list[nn.Parameter]:
        """The trainable parameters of the hyper-generator (``"g"``) or the hyper-discriminator (``"d"``)."""
        enc, heads = (self.e_g, self.h_g) if which == "g" else (self.e_d, self.h_d)
        return [*enc.parameters(), *heads.parameters()]

    def embed(self, x: Tensor, which: str = "g") -> Tensor:
        return (self.e_g if which == "g" else self.e_d)(x)

    def emit(self, e: Tensor, which: str = "g") -> list[list[tuple[Tensor, Tensor]]]:
        """Per-scale, per-layer ``(weight [B, ...], bias [B, out])`` from embeddings ``[B, E]``."""
        heads, shapes = (self.h_g, self.g_shapes) if which == "g" else (self.h_d, self.d_shapes)
        return [unflatten_stack(h(e), shapes) for h in heads]

    def pyramid(self, x: Tensor) -> list[Tensor]:
        """The image at every scale, coarse to fine (area downsampling): list of ``[B, C, h_s, w_s]``."""
        return [F.adaptive_avg_pool2d(x, s) if s != x.shape[-1] else x for s in self.sizes]

    def generate(
        self, theta: list[list[tuple[Tensor, Tensor]]], noises: list[Tensor], sigmas: list[float]
    ) -> list[Tensor]:
        """Samples at every scale: ``noises[s]`` is ``[n, B, C, h_s, w_s]``; returns the same shapes."""
        outs: list[Tensor] = []
        prev = torch.zeros_like(noises[0])
        for s, (params, z) in enumerate(zip(theta, noises, strict=True)):
            if s > 0:
                n, B, c, h, w = prev.shape
                up = F.interpolate(prev.reshape(n * B, c, h, w), size=self.sizes[s], mode="bilinear")
                prev = up.reshape(n, B, c, self.sizes[s], self.sizes[s])
            prev = prev + torch.tanh(_apply_stack(prev + sigmas[s] * z, params))
            outs.append(prev)
        return outs

    def discriminate(self, theta: list[list[tuple[Tensor, Tensor]]], x: Tensor, scale: int) -> Tensor:
        """Patch scores ``[n, B, 1, h, w]`` of inputs ``[n, B, C, h, w]`` by each image's scale-``scale`` critic."""
        return _apply_stack(x, theta[scale])
