"""Models with named layers: MLP, small CNN, embedding+MLP, 1-layer transformer; a stacked MLP ensemble."""

from .cnn import SmallCNN
from .discrete import DiscreteAttributeNet
from .ensemble import MLPEnsemble
from .mlp import ACTIVATIONS, MLP
from .token import EmbedMLP, Transformer1L

__all__ = ["ACTIVATIONS", "DiscreteAttributeNet", "MLP", "MLPEnsemble", "SmallCNN", "EmbedMLP", "Transformer1L"]
