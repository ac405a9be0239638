"""Activations, initialization schemes and noise layers shared by the model builders."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "ACTIVATION_BOUNDS", "INITS", "make_activation", "init_linear", "GaussianNoise"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "linear": nn.Identity,
}

# (floor, ceiling) of each activation's range; None where unbounded. Used to
# pick binning ranges and the floor bin of adaptive binning.
ACTIVATION_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
    "relu": (0.0, None),
    "softplus": (0.0, None),
    "elu": (-1.0, None),
    "silu": (None, None),
    "swish": (None, None),
    "leaky_relu": (None, None),
    "linear": (None, None),
    "softmax": (0.0, 1.0),
}

INITS = ("truncated_normal", "he", "xavier", "default")


def make_activation(name: str, *, argument: str = "activation") -> nn.Module:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r} (argument '{argument}'). Choose one of: {', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]()


def init_linear(layer: nn.Module, scheme: str, generator: torch.Generator | None) -> None:
    """Initialize a Linear/Conv layer in place; biases are set to zero (except 'default').

    * 'truncated_normal': N(0, 1/fan_in) truncated at two standard deviations,
      the scheme of the Shwartz-Ziv & Tishby reference code;
    * 'he': Kaiming normal (fan_in, ReLU gain);
    * 'xavier': Glorot normal;
    * 'default': PyTorch's own initialization.
    """
    if scheme not in INITS:
        raise ValueError(f"Unknown init {scheme!r} (argument 'init'). Choose one of: {', '.join(INITS)}.")
    w = layer.weight
    fan_in = w[0].numel()
    with torch.no_grad():
        if scheme == "truncated_normal":
            std = 1.0 / math.sqrt(fan_in)
            nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std, generator=generator)
        elif scheme == "he":
            nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
        elif scheme == "xavier":
            nn.init.xavier_normal_(w, generator=generator)
        else:
            layer.reset_parameters()
            return
        if layer.bias is not None:
            layer.bias.zero_()


class GaussianNoise(nn.Module):
    """Adds Gaussian noise, making the network stochastic (Goldfeld et al. 2019).

    Parameters
    ----------
    std : float
        Noise scale beta.
    mode : {'additive', 'multiplicative'}
        'additive': t + N(0, std^2 I) (isotropic, Goldfeld et al.);
        'multiplicative': t + std * |t| * N(0, I), noise proportional to the
        activation (what the Butakov et al. reference code does).
    in_eval : bool
        Keep the noise in eval mode (a stochastic network is noisy whenever it
        runs); False makes it a training-only regularizer.
    """

    def __init__(self, std: float, mode: str = "additive", in_eval: bool = True):
        super().__init__()
        if isinstance(std, bool) or not (float(std) >= 0.0) or not math.isfinite(float(std)):
            raise ValueError(f"'noise_std' must be a finite float >= 0, got {std!r}.")
        if mode not in ("additive", "multiplicative"):
            raise ValueError(f"'noise_mode' must be 'additive' or 'multiplicative', got {mode!r}.")
        self.std = float(std)
        self.mode = mode
        self.in_eval = in_eval

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.std == 0.0 or (not self.training and not self.in_eval):
            return t
        eps = torch.randn_like(t) * self.std
        return t + (eps * t.abs() if self.mode == "multiplicative" else eps)

    def extra_repr(self) -> str:
        return f"std={self.std}, mode={self.mode!r}, in_eval={self.in_eval}"
