"""Patch statistics of single images: a fixed random patch feature extractor and single-image FID on patches.

Single-image FID (SIFID; Shaham, Dekel, Michaeli 2019, arXiv 1905.01164) treats the feature vectors at all
spatial positions of ONE image as a sample and compares the Gaussians fitted to two such samples with the
Frechet distance (Heusel et al. 2017, arXiv 1706.08500). Here the features are those of a FIXED RANDOM
convolution (no pretrained network is downloaded): for a ``k x k`` patch ``p`` (flattened, ``C k^2`` values),
``phi(p) = relu(W p + b)`` (or ``W p + b`` without the ReLU), ``W`` ``[F, C k^2]`` with i.i.d. ``N(0, 1/(C k^2))``
entries and ``b`` ``N(0, 0.1^2)``, drawn from a seed. Patches are all valid ``k x k`` windows (no padding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from phenomlab.errors import PhenomlabError
from phenomlab.probes._checks import as_float_tensor
from phenomlab.probes.generative import fid

__all__ = ["random_patch_extractor", "patch_features", "patch_fid"]


def random_patch_extractor(channels: int, n_features: int, patch: int, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed random linear map on ``patch x patch`` patches: ``(W [F, C, k, k], b [F])`` from ``seed``."""
    if channels < 1 or n_features < 1 or patch < 1:
        raise PhenomlabError(f"channels, n_features and patch must be >= 1, got {channels}, {n_features}, {patch}")
    g = torch.Generator().manual_seed(int(seed))
    fan_in = channels * patch * patch
    w = torch.randn(n_features, channels, patch, patch, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
    b = 0.1 * torch.randn(n_features, generator=g, dtype=torch.float64)
    return w, b


def patch_features(images: Tensor, extractor: tuple[Tensor, Tensor], relu: bool = True) -> Tensor:
    """Features of every valid patch of ``images`` ``[N, C, H, W]``: ``[N * (H-k+1) * (W-k+1), F]`` (float64)."""
    x = as_float_tensor(images, "images").to(torch.float64)
    w, b = extractor
    if x.dim() != 4:
        raise PhenomlabError(f"images must be [N, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != w.shape[1] or x.shape[2] < w.shape[2] or x.shape[3] < w.shape[3]:
        raise PhenomlabError(f"images {tuple(x.shape)} do not fit the extractor's patches {tuple(w.shape[1:])}")
    y = F.conv2d(x, w.to(x.device), b.to(x.device))
    if relu:
        y = y.clamp_min(0)
    return y.permute(0, 2, 3, 1).reshape(-1, w.shape[0])


def patch_fid(a: Tensor, b: Tensor, extractor: tuple[Tensor, Tensor], relu: bool = True) -> float:
    """Squared Frechet distance between the patch-feature Gaussians of image sets ``a`` and ``b`` (SIFID-style).

    ``a`` and ``b`` are ``[N, C, H, W]`` (one image is ``N = 1``): every patch of every image is one sample.
    """
    return fid(patch_features(a, extractor, relu), patch_features(b, extractor, relu))
