"""Models with named layers: MLP, small CNN, embedding+MLP, 1-layer transformer; a stacked MLP ensemble."""

from .cnn import SmallCNN
from .ensemble import MLPEnsemble
from .hypernet import HyperNet, hyperkernel_limit
from .mlp import ACTIVATIONS, MLP
from .token import EmbedMLP, Transformer1L

__all__ = ["ACTIVATIONS", "MLP", "MLPEnsemble", "SmallCNN", "EmbedMLP", "Transformer1L"]
__all__ += ["HyperNet", "hyperkernel_limit"]
