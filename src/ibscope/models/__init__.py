"""Model builders: MLPs and small conv nets with named layers, activations, inits, noise."""

from ._layers import (
           ACTIVATION_BOUNDS,
           ACTIVATIONS,
           INITS,
           GaussianNoise,
           init_linear,
           make_activation,
)
from ._mlp import MLP, ConvNet

__all__ = ["ACTIVATIONS", "ACTIVATION_BOUNDS", "INITS", "ConvNet", "GaussianNoise", "MLP",
           "init_linear", "make_activation"]
