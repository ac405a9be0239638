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
from ._mlp import MLP, ConvNet, conv_classifier
from ._zoo import ResidualBlock, ResNet, TokenEmbedding, TokenTransformer

__all__ = ["ACTIVATIONS", "ACTIVATION_BOUNDS", "INITS", "BatchedMLP", "ConvNet", "GaussianNoise", "MLP", "ResNet", "ResidualBlock", "SeedBatches", "TokenEmbedding",
           "TokenTransformer",
           "batched_cross_entropy", "conv_classifier",
           "init_linear", "make_activation"]
