"""Models with named layers: MLP, small CNN, embedding+MLP, 1-layer transformer; a stacked MLP ensemble."""

from .cnn import SmallCNN
from .ensemble import MLPEnsemble
from .hypergan import HyperSinGAN
from .mlp import ACTIVATIONS, MLP
from .token import EmbedMLP, Transformer1L

__all__ = ["ACTIVATIONS", "MLP", "MLPEnsemble", "SmallCNN", "EmbedMLP", "Transformer1L", "HyperSinGAN"]
