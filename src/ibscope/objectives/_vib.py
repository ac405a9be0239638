"""Deep variational information bottleneck (Alemi et al. 2017).

A stochastic encoder p(z|x) = N(mu(x), diag(sigma(x)^2)) with
sigma = softplus(rho - 5) (the paper's parameterization: the -5 shift makes
the initial noise small), a prior r(z) = N(0, I) and a decoder q(y|z).
The loss is

    L = E_x E_{z ~ p(z|x)} [-log q(y|z)] + beta * KL(p(z|x) || r(z)),

with one reparameterized z per example in training and several at test time
(the prediction is the average of the softmax probabilities). In closed form

    KL(N(mu, diag s^2) || N(0, I)) = 1/2 sum_k (s_k^2 + mu_k^2 - 1 - 2 log s_k).

Reported bounds (Alemi et al., section 3): the average KL is an upper bound on
I(Z;X) and H(Y) - CE is a lower bound on I(Z;Y) (H(Y) from the class
frequencies or a given prior); both are reported in bits by default, the lower
bound clipped at 0 (a negative lower bound is vacuous).

References
----------
.. [1] A. A. Alemi, I. Fischer, J. V. Dillon and K. Murphy, "Deep variational
   information bottleneck", ICLR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._units import check_unit, unit_scale
from .._validation import NONE, InstanceOf, Interval, check_finite, check_labels, validate_params
from ..models import init_linear, make_activation
from ._schedule import AnnealingSchedule, check_weight, resolve_weight

__all__ = ["StochasticEncoder", "VIBClassifier", "VIBOutput", "VIBLoss", "gaussian_kl", "vib_bounds",
           "entropy_of_labels"]


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed))


class StochasticEncoder(nn.Module):
    """x -> (mu(x), sigma(x)) with sigma = softplus(rho - std_offset).

    Parameters
    ----------
    in_features : int
    latent_dim : int
        K, the dimension of z (256 in the paper).
    hidden : sequence of int
        Widths of the deterministic trunk ((1024, 1024) in the paper).
    activation : str
        Trunk activation (ReLU in the paper).
    std_offset : float
        The shift in softplus(rho - std_offset) (5 in the paper).
    seed : int or None
        Seed of the initialization.
    """

    def __init__(self, in_features: int, latent_dim: int = 256, hidden: Sequence[int] = (1024, 1024), *,
                 activation: str = "relu", std_offset: float = 5.0, init: str = "he", seed: int | None = None):
        super().__init__()
        validate_params("StochasticEncoder", {"in_features": in_features, "latent_dim": latent_dim,
                                              "std_offset": std_offset}, {
            "in_features": [Interval(int, 1, None)], "latent_dim": [Interval(int, 1, None)],
            "std_offset": [Interval(float, None, None)]})
        gen = _generator(seed)
        layers: list[nn.Module] = []
        prev = in_features
        for w in hidden:
            lin = nn.Linear(prev, int(w))
            init_linear(lin, init, gen)
            layers += [lin, make_activation(activation)]
            prev = int(w)
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(prev, 2 * latent_dim)
        init_linear(self.head, "xavier", gen)
        self.latent_dim = latent_dim
        self.std_offset = float(std_offset)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, rho = self.head(self.trunk(x)).chunk(2, dim=-1)
        return mu, F.softplus(rho - self.std_offset)


@dataclass
class VIBOutput:
    """What a :class:`VIBClassifier` returns: logits (S, n, C), z (S, n, K), mu and std (n, K)."""

    logits: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor
    std: torch.Tensor


class VIBClassifier(nn.Module):
    """Encoder + reparameterized sampling + decoder (a linear softmax layer by default).

    ``forward(x, n_samples=1)`` returns a :class:`VIBOutput`; ``predict_proba``
    averages the softmax over ``n_samples`` draws of z (12 by default, as in
    Alemi et al.).
    """

    def __init__(self, encoder: StochasticEncoder, n_classes: int | None = None, *,
                 decoder: nn.Module | None = None, seed: int | None = None):
        super().__init__()
        validate_params("VIBClassifier", {"encoder": encoder, "n_classes": n_classes}, {
            "encoder": [InstanceOf((StochasticEncoder,), "a StochasticEncoder")],
            "n_classes": [NONE, Interval(int, 2, None)]})
        if decoder is None:
            if n_classes is None:
                raise ValueError("VIBClassifier needs 'n_classes' when no 'decoder' is given.")
            decoder = nn.Linear(encoder.latent_dim, n_classes)
            init_linear(decoder, "xavier", _generator(seed))
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor, n_samples: int = 1) -> VIBOutput:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"'n_samples' must be an int >= 1, got {n_samples!r}.")
        mu, std = self.encoder(x)
        eps = torch.randn((n_samples, *mu.shape), dtype=mu.dtype, device=mu.device)
        z = mu.unsqueeze(0) + std.unsqueeze(0) * eps
        return VIBOutput(self.decoder(z), z, mu, std)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, n_samples: int = 12) -> torch.Tensor:
        """Average of softmax(q(y|z)) over ``n_samples`` draws z ~ p(z|x)."""
        out = self(x, n_samples)
        return torch.softmax(out.logits.double(), dim=-1).mean(dim=0)


def gaussian_kl(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag std^2) || N(0, I)) per row, in nats (closed form)."""
    for name, a in (("mu", mu), ("std", std)):
        if not isinstance(a, torch.Tensor) or not a.dtype.is_floating_point:
            raise TypeError(f"'{name}' must be a floating-point torch.Tensor, got "
                            f"{a.dtype if isinstance(a, torch.Tensor) else type(a).__name__}.")
        check_finite(a, name)
    if mu.shape != std.shape:
        raise ValueError(f"'mu' and 'std' must have the same shape; got {tuple(mu.shape)} and {tuple(std.shape)}.")
    if bool((std <= 0).any()):
        raise ValueError("'std' must be > 0 everywhere (a standard deviation); got "
                         f"min {float(std.min()):g}.")
    var = std * std
    return 0.5 * (var + mu * mu - 1.0 - torch.log(var)).sum(dim=-1)


def entropy_of_labels(y: torch.Tensor, n_classes: int | None = None) -> float:
    """Plug-in entropy H(Y) of integer labels, in nats."""
    counts = torch.bincount(y.reshape(-1).long(), minlength=n_classes or 0).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def _check_logits_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.ndim != 3:
        raise ValueError(f"'logits' must have shape (n_samples, n, n_classes); got {tuple(logits.shape)}.")
    if y.ndim != 1 or y.shape[0] != logits.shape[1]:
        raise ValueError(
            f"'y' must be a 1-D tensor of {logits.shape[1]} labels to match the logits; got shape {tuple(y.shape)}."
        )


class VIBLoss(nn.Module):
    """CE + beta * KL of the deep variational information bottleneck.

    A module in the style of pyro's ELBO: ``loss, terms = VIBLoss(beta)(output, y)``
    with ``output`` a :class:`VIBOutput`. ``loss`` is a differentiable scalar in
    ``unit`` (bits by default: (CE + beta KL) / ln 2); ``terms`` holds floats in
    ``unit``: ``ce``, ``kl`` (= ``izx_upper``, the upper bound on I(Z;X)),
    ``izy_lower`` (H(Y) - CE, clipped at 0), and the ``beta`` used.

    Parameters
    ----------
    beta : float or AnnealingSchedule
        Weight >= 0 of the KL term (1e-3 in the paper). With a schedule, call
        :meth:`step` after every optimizer step.
    class_prior : sequence of float or None
        p(y) for H(Y); default the label frequencies of each batch.
    unit : {'bits', 'nats'}

    References
    ----------
    .. [1] Alemi et al., "Deep variational information bottleneck", ICLR 2017.
    """

    def __init__(self, beta: float | AnnealingSchedule = 1e-3, *, class_prior: Sequence[float] | None = None,
                 unit: str = "bits"):
        super().__init__()
        check_weight(beta, "beta", "VIBLoss")
        self.beta = beta
        self.unit = check_unit(unit)
        self.h_y = None if class_prior is None else _entropy_of_prior(class_prior)
        self.n_prior = None if class_prior is None else len(class_prior)
        self.step_ = 0

    def step(self) -> None:
        """Advance the schedule(s) by one optimizer step."""
        self.step_ += 1

    def forward(self, output: VIBOutput, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(output, VIBOutput):
            raise TypeError(f"'output' must be a VIBOutput (what VIBClassifier returns); got {type(output).__name__}.")
        _check_logits_labels(output.logits, y)
        beta = resolve_weight(self.beta, self.step_, "beta")
        s, n, c = output.logits.shape
        check_labels(y, c, "y")
        if self.n_prior is not None and self.n_prior != c:
            raise ValueError(f"'class_prior' has {self.n_prior} entries but the logits have {c} classes.")
        for name in ("logits", "mu", "std"):
            check_finite(getattr(output, name), f"output.{name}")
        ce = F.cross_entropy(output.logits.reshape(s * n, c), y.repeat(s))
        kl = gaussian_kl(output.mu, output.std).mean()
        scale = unit_scale(self.unit)
        loss = (ce + beta * kl) * scale
        h_y = self.h_y if self.h_y is not None else entropy_of_labels(y, c)
        terms = {"ce": float(ce.detach()) * scale, "kl": float(kl.detach()) * scale, "izx_upper": float(kl.detach()) * scale,
                 "izy_lower": max(h_y - float(ce.detach()), 0.0) * scale, "beta": beta, "unit": self.unit}
        return loss, terms


def _entropy_of_prior(prior: Sequence[float]) -> float:
    try:
        p = torch.as_tensor(prior, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"'class_prior' must be a sequence of probabilities; got {prior!r}.") from None
    if (p.numel() < 2 or not bool(torch.isfinite(p).all()) or bool((p < 0).any())
            or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-6)):
        raise ValueError(f"'class_prior' must be probabilities (>= 0) summing to 1; got {prior!r}.")
    p = p[p > 0]
    return float(-(p * p.log()).sum())


@torch.no_grad()
def vib_bounds(model: VIBClassifier, x: torch.Tensor, y: torch.Tensor, *, n_samples: int = 12,
               class_prior: Sequence[float] | None = None, batch_size: int = 1024,
               unit: str = "bits") -> dict[str, float]:
    """Bounds on I(Z;X) (upper: mean KL) and I(Z;Y) (lower: H(Y) - CE) of a VIB model on (x, y).

    CE is E_z[-log q(y|z)] averaged over ``n_samples`` draws; H(Y) is that of
    ``class_prior`` or of the label frequencies in ``y``. Also returns the
    accuracy of the sample-averaged prediction. Values in ``unit``.
    """
    check_unit(unit)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"'x' and 'y' must have the same number of samples; got {x.shape[0]} and {y.shape[0]}.")
    was_training = model.training
    model.eval()
    ce_sum = kl_sum = correct = 0.0
    n_classes = None
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model(xb, n_samples)
        s, n, c = out.logits.shape
        if n_classes is None:
            check_labels(y, c, "y")
            if class_prior is not None and len(class_prior) != c:
                raise ValueError(f"'class_prior' has {len(class_prior)} entries but the model has {c} classes.")
        n_classes = c
        ce_sum += float(F.cross_entropy(out.logits.reshape(s * n, c).double(), yb.repeat(s), reduction="sum")) / s
        kl_sum += float(gaussian_kl(out.mu.double(), out.std.double()).sum())
        correct += float((torch.softmax(out.logits.double(), -1).mean(0).argmax(-1) == yb).sum())
    model.train(was_training)
    n = x.shape[0]
    h_y = _entropy_of_prior(class_prior) if class_prior is not None else entropy_of_labels(y, n_classes)
    scale = unit_scale(unit)
    ce = ce_sum / n
    return {"izx_upper": kl_sum / n * scale, "izy_lower": max(h_y - ce, 0.0) * scale, "ce": ce * scale,
            "h_y": h_y * scale, "accuracy": correct / n, "unit": unit}
