"""Datasets as tensors, all generated or shipped: nothing is downloaded at run time."""

from .attributes import hidden_attributes
from .base import Dataset, from_npz, from_tensors
from .causal import cause_effect_pairs, quantile_vectors
from .synthetic import digits, gaussian_mixture, mnist1d, mnist1d_templates, modular_arithmetic, teacher_student
from .wrappers import class_split, with_label_noise, with_random_labels

__all__ = [
    "Dataset",
    "from_npz",
    "from_tensors",
    "cause_effect_pairs",
    "quantile_vectors",
    "digits",
    "gaussian_mixture",
    "hidden_attributes",
    "mnist1d",
    "mnist1d_templates",
    "modular_arithmetic",
    "teacher_student",
    "class_split",
    "with_label_noise",
    "with_random_labels",
]
