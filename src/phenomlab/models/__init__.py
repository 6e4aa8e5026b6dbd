"""Models with named layers: MLP, small CNN, embedding+MLP, 1-layer transformer; a stacked MLP ensemble."""

from .cnn import SmallCNN
from .ensemble import MLPEnsemble
from .mlp import ACTIVATIONS, MLP
from .multiplicative import MultiplicativeNet, StackedNets, match_width, param_count
from .token import EmbedMLP, Transformer1L

__all__ = ["ACTIVATIONS", "MLP", "MLPEnsemble", "SmallCNN", "EmbedMLP", "Transformer1L"]
__all__ += ["MultiplicativeNet", "StackedNets", "match_width", "param_count"]
