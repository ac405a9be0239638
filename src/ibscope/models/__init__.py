"""Model builders: MLPs and small conv nets with named layers, activations, inits, noise."""

from ._batched import BatchedMLP, SeedBatches, batched_cross_entropy
from ._layers import (
           ACTIVATION_BOUNDS,
           ACTIVATIONS,
           INITS,
           GaussianNoise,
           init_linear,
           make_activation,
)
from ._mlp import MLP, ConvNet

__all__ = ["ACTIVATIONS", "ACTIVATION_BOUNDS", "INITS", "BatchedMLP", "ConvNet", "GaussianNoise", "MLP", "SeedBatches",
           "batched_cross_entropy",
           "init_linear", "make_activation"]
