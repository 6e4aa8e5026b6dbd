"""Models with named layers: MLP, small CNN, embedding+MLP, 1-layer transformer, multiplicative-gate nets,
hypernetworks (NTK-parametrised; a single-image-GAN emitter), a discrete-attribute net; a stacked MLP ensemble;
SP/NTK/muP parametrisations of any of them (``models.parametrisation``)."""

from .cnn import SmallCNN
from .discrete import DiscreteAttributeNet
from .ensemble import MLPEnsemble
from .hypergan import HyperSinGAN
from .hypernet import HyperNet, hyperkernel_limit
from .mlp import ACTIVATIONS, MLP
from .multiplicative import MultiplicativeNet, StackedNets, match_width, param_count
from .ntk_param import NTKMLP, NTKRNN, NTKAttention, NTKLinear, NTKRNNCell
from .parametrisation import param_groups, parametrisation_rules, parametrise
from .resnet import StackedResNet
from .subspace import SubspaceModel
from .token import EmbedMLP, Transformer1L

__all__ = [
    "ACTIVATIONS",
    "DiscreteAttributeNet",
    "MLP",
    "MLPEnsemble",
    "MultiplicativeNet",
    "SmallCNN",
    "StackedNets",
    "EmbedMLP",
    "Transformer1L",
    "match_width",
    "param_count",
    "HyperNet",
    "hyperkernel_limit",
    "HyperSinGAN",
    "parametrise",
    "param_groups",
    "parametrisation_rules",
    "SubspaceModel",
    "NTKLinear",
    "NTKMLP",
    "NTKRNNCell",
    "NTKRNN",
    "NTKAttention",
    "StackedResNet",
]
