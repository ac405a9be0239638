"""Fully connected networks with named, recordable layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._layers import GaussianNoise, init_linear, make_activation

__all__ = ["MLP", "ConvNet", "conv_classifier"]


def _activation_list(activation: str | Sequence[str], n: int) -> list[str]:
    if isinstance(activation, str):
        return [activation] * n
    acts = list(activation)
    if len(acts) != n:
        raise ValueError(f"'activation' must be one name or one per hidden layer ({n}); got {len(acts)}.")
    return acts


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"'seed' must be an int or None, got {seed!r}.")
    return torch.Generator().manual_seed(seed)


class _Recordable(nn.Module):
    """Common part: ``layer_names`` (hidden activations then 'output') and the softmax output."""

    layer_names: list[str]

    def _output(self, logits: torch.Tensor) -> torch.Tensor:
        # The softmax module exists so the output layer's probabilities can be
        # recorded with a forward hook; it only runs when someone listens.
        if self.output._forward_hooks:
            self.output(logits)
        return logits


class MLP(_Recordable):
    """A multilayer perceptron whose layers have stable names for recording.

    ``forward`` returns logits (use ``nn.CrossEntropyLoss``). Named modules:
    ``fc1..fcK`` (linear), ``hidden1..hiddenK`` (activation outputs, the
    layers T of the information plane), optional ``noise1..noiseK``
    (stochastic network), ``logits`` and ``output`` (softmax probabilities).

    Parameters
    ----------
    in_features : int
    hidden : sequence of int
        Hidden widths, e.g. (10, 7, 5, 4, 3) for the 12-bit network.
    out_features : int
    activation : str or sequence of str
        One of tanh, relu, elu, softplus, silu (swish), sigmoid, leaky_relu,
        linear; or one per hidden layer.
    init : {'truncated_normal', 'he', 'xavier', 'default'}
        'truncated_normal' is the reference's N(0, 1/fan_in) truncated at 2 std.
    seed : int or None
        Seed of the initialization (independent of the global RNG).
    noise_std, noise_mode, noise_in_eval
        Gaussian noise after every hidden activation (see
        :class:`~ibscope.models.GaussianNoise`); 0 disables it.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (10, 7, 5, 4, 3), out_features: int = 2,
                 *, activation: str | Sequence[str] = "tanh", init: str = "truncated_normal",
                 seed: int | None = None, noise_std: float = 0.0, noise_mode: str = "additive",
                 noise_in_eval: bool = True):
        super().__init__()
        widths = [int(w) for w in hidden]
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"'{name}' must be a positive int, got {v!r}.")
        if any(w < 1 for w in widths):
            raise ValueError(f"'hidden' widths must be positive ints, got {list(hidden)!r}.")
        acts = _activation_list(activation, len(widths))
        self.activations = acts
        gen = _generator(seed)
        self.layer_names = []
        prev = in_features
        self._order: list[str] = []
        for i, (w, a) in enumerate(zip(widths, acts), start=1):
            fc = nn.Linear(prev, w)
            init_linear(fc, init, gen)
            setattr(self, f"fc{i}", fc)
            setattr(self, f"hidden{i}", make_activation(a))
            self._order += [f"fc{i}", f"hidden{i}"]
            if noise_std:
                setattr(self, f"noise{i}", GaussianNoise(noise_std, noise_mode, noise_in_eval))
                self._order.append(f"noise{i}")
            self.layer_names.append(f"hidden{i}")
            prev = w
        self.logits = nn.Linear(prev, out_features)
        init_linear(self.logits, init, gen)
        self.output = nn.Softmax(dim=-1)
        self.layer_names.append("output")
        self.layer_activations = dict(zip(self.layer_names, [*acts, "softmax"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name in self._order:
            h = getattr(self, name)(h)
        return self._output(self.logits(h))


class ConvNet(_Recordable):
    """A small convolutional classifier (Butakov et al.'s MNIST net shape by default).

    conv(channels[0]) - ... - conv(channels[-1]) (3x3, stride 2, padding 1),
    each followed by the activation (``hidden1..``), then a dense layer of
    ``dense`` units (``hidden{k+1}``) and the logits / softmax ``output``.
    Inputs of shape (n, C*H*W) are reshaped to (n, C, H, W).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: Sequence[int] = (8, 16, 32),
                 dense: int = 32, n_classes: int = 10, *, activation: str = "leaky_relu",
                 init: str = "he", seed: int | None = None):
        super().__init__()
        gen = _generator(seed)
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        self.layer_names = []
        self._order = []
        prev, size = self.in_channels, self.image_size
        for i, c in enumerate(channels, start=1):
            conv = nn.Conv2d(prev, int(c), kernel_size=3, stride=2, padding=1)
            init_linear(conv, init, gen)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"hidden{i}", make_activation(activation))
            self._order += [f"conv{i}", f"hidden{i}"]
            self.layer_names.append(f"hidden{i}")
            prev, size = int(c), (size + 1) // 2
        k = len(channels) + 1
        self.flatten = nn.Flatten()
        fc = nn.Linear(prev * size * size, int(dense))
        init_linear(fc, init, gen)
        setattr(self, f"fc{k}", fc)
        setattr(self, f"hidden{k}", make_activation(activation))
        self._order += ["flatten", f"fc{k}", f"hidden{k}"]
        self.layer_names.append(f"hidden{k}")
        self.logits = nn.Linear(int(dense), int(n_classes))
        init_linear(self.logits, init, gen)
        self.output = nn.Softmax(dim=-1)
        self.layer_names.append("output")
        self.layer_activations = {n: activation for n in self.layer_names[:-1]} | {"output": "softmax"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        h = x
        for name in self._order:
            h = getattr(self, name)(h)
        return self._output(self.logits(h))


def conv_classifier(in_features: int, channels: Sequence[int], dense: int, n_classes: int, *,
                    activation: str = "relu", seed: int | None = None, dropout: float = 0.0,
                    owner: str = "conv_classifier") -> nn.Sequential:
    """The small CNN of flat square one-channel images (n, side * side) -> logits, as an ``nn.Sequential``.

    ``Unflatten`` to (n, 1, side, side), then the layers of :class:`ConvNet`
    built with ``seed`` (3 x 3 stride-2 convolutions of ``channels``, each
    followed by the activation; a dense layer of ``dense`` units and its
    activation), an ``nn.Dropout(dropout)`` when ``dropout > 0``, and the
    logits (no softmax). He initialization. Shared by ``ib_compare``'s and
    ``lagrangian``'s ``model='cnn'``, so both train the same network.

    Parameters
    ----------
    in_features : int
        Features per example; must be a square (MNIST: 784 = 28 x 28).
    channels : sequence of int
        Output channels of the convolutions.
    dense : int
        Units of the dense layer.
    n_classes : int
        Number of logits.
    activation : str, default 'relu'
        Activation after every convolution and the dense layer.
    seed : int or None
        Seed of the initialization (None: torch's global generator).
    dropout : float, default 0
        Dropout after the dense layer's activation (0: none).
    owner : str
        Names the caller in the error message.

    Returns
    -------
    nn.Sequential
        Modules in order; the dense layer's activation is the one before the
        logits (and before the dropout, when there is one).

    Raises
    ------
    ValueError
        When ``in_features`` is not a square.
    """
    import math

    side = math.isqrt(int(in_features))
    if side * side != in_features:
        raise ValueError(f"The 'model' 'cnn' of {owner} needs square one-channel images; the data has "
                         f"{in_features} features per example.")
    net = ConvNet(1, side, channels=channels, dense=dense, n_classes=n_classes, activation=activation,
                  init="he", seed=seed)
    layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
    k = len(channels) + 1
    for i in range(1, k):
        layers += [getattr(net, f"conv{i}"), getattr(net, f"hidden{i}")]
    layers += [net.flatten, getattr(net, f"fc{k}"), getattr(net, f"hidden{k}")]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(net.logits)
    return nn.Sequential(*layers)
