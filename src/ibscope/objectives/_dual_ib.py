"""Variational dual information bottleneck (Piran, Shwartz-Ziv & Tishby 2020).

The dual IB swaps the arguments of the KL in the IB distortion: instead of
d_IB = KL[p(y|x) || p(y|x_hat)] it uses d_dualIB = KL[p(y|x_hat) || p(y|x)].
Its variational form on a stochastic encoder p(z|x) with decoder
q_theta(y_hat|z) replaces the cross entropy of VIB (a forward KL to the
labels, up to a constant) by the reverse KL to a *noisy* label distribution
p_tilde(y|x):

    L = gamma * E_x E_z KL(q_theta(y_hat|z) || p_tilde(y|x))
        + ce_weight * E_x E_z [-log q_theta(y|z)]
        + beta * KL(p(z|x) || N(0, I)).

With one-hot labels the reverse KL is infinite wherever the decoder puts mass
on another class, which is why p_tilde must have full support: it comes from
label smoothing, a confusion (noise) matrix, or a teacher's softmax
(:class:`NoisyLabels`). ``ce_weight=0`` (default) is the pure dual form;
``ce_weight=1`` keeps VIB's cross entropy and adds the dual term.

Weights may be annealed with an :class:`~ibscope.objectives.AnnealingSchedule`
defined in optimizer steps (the reference code hard-coded the steps per epoch
and so annealed to the wrong value on other data sets).

References
----------
.. [1] Z. Piran, R. Shwartz-Ziv and N. Tishby, "The dual information
   bottleneck", arXiv:2006.04641, 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._units import check_unit, unit_scale
from .._validation import Interval, check_finite, check_labels, validate_params
from ._schedule import AnnealingSchedule, check_weight, resolve_weight
from ._vib import VIBOutput, _check_logits_labels, gaussian_kl

__all__ = ["NoisyLabels", "DualIBLoss"]


class NoisyLabels:
    """A noisy label distribution p_tilde(y|x) with full support.

    Build it with one of the constructors:

    * :meth:`smoothing` -- (1 - eps) one_hot(y) + eps / K;
    * :meth:`confusion` -- row ``y`` of a K x K row-stochastic matrix C,
      C[i, j] = p(observed j | true i); entries are floored at ``floor`` and
      the rows renormalized so the reverse KL stays finite;
    * :meth:`teacher` -- softmax(teacher(x) / temperature) of a trained model
      (a module or any callable returning logits).

    Calling it, ``noisy(y, x)`` returns an (n, K) tensor of probabilities.
    """

    def __init__(self, kind: str, n_classes: int, *, smoothing: float = 0.0, matrix: torch.Tensor | None = None,
                 teacher: Callable[[torch.Tensor], torch.Tensor] | None = None, temperature: float = 1.0):
        self.kind, self.n_classes = kind, n_classes
        self.smoothing_, self.matrix, self.teacher_, self.temperature = smoothing, matrix, teacher, temperature

    @classmethod
    def smoothing(cls, eps: float, n_classes: int) -> NoisyLabels:
        """Label smoothing with 0 < eps <= 1 (eps = 1 is the uniform distribution)."""
        validate_params("NoisyLabels.smoothing", {"eps": eps, "n_classes": n_classes}, {
            "eps": [Interval(float, 0, 1, closed="right")], "n_classes": [Interval(int, 2, None)]})
        return cls("smoothing", n_classes, smoothing=float(eps))

    @classmethod
    def confusion(cls, matrix: Any, *, floor: float = 1e-6) -> NoisyLabels:
        """Rows of a row-stochastic confusion matrix (floored at ``floor``, renormalized)."""
        m = torch.as_tensor(matrix, dtype=torch.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
            raise ValueError(f"'matrix' must be a square K x K matrix with K >= 2; got shape {tuple(m.shape)}.")
        if not bool(torch.isfinite(m).all()) or bool((m < 0).any()):
            raise ValueError("'matrix' must hold finite probabilities >= 0.")
        if not torch.allclose(m.sum(1), torch.ones(m.shape[0], dtype=m.dtype), atol=1e-6):
            raise ValueError(f"Every row of 'matrix' must sum to 1; row sums are {m.sum(1).tolist()}.")
        validate_params("NoisyLabels.confusion", {"floor": floor}, {"floor": [Interval(float, 0, 1, closed="neither")]})
        m = m.clamp_min(floor)
        return cls("confusion", m.shape[0], matrix=m / m.sum(1, keepdim=True))

    @classmethod
    def teacher(cls, model: Callable[[torch.Tensor], torch.Tensor], n_classes: int, *,
                temperature: float = 1.0) -> NoisyLabels:
        """softmax(model(x) / temperature) of a teacher (evaluated without gradients)."""
        if not callable(model):
            raise TypeError(f"'model' must be a callable returning logits; got {type(model).__name__}.")
        validate_params("NoisyLabels.teacher", {"n_classes": n_classes, "temperature": temperature}, {
            "n_classes": [Interval(int, 2, None)], "temperature": [Interval(float, 0, None, closed="neither")]})
        return cls("teacher", n_classes, teacher=model, temperature=float(temperature))

    def __call__(self, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        k = self.n_classes
        if y.ndim != 1:
            raise ValueError(f"'y' must be a 1-D tensor of integer labels; got shape {tuple(y.shape)}.")
        check_labels(y, k, "y")
        if self.kind == "smoothing":
            one_hot = F.one_hot(y.long(), k).double()
            return (1.0 - self.smoothing_) * one_hot + self.smoothing_ / k
        if self.kind == "confusion":
            return self.matrix.to(y.device)[y.long()]
        if x is None:
            raise ValueError("A teacher's NoisyLabels needs the inputs: call noisy(y, x).")
        with torch.no_grad():
            logits = self.teacher_(x)
        if logits.ndim != 2 or logits.shape != (y.shape[0], k):
            raise ValueError(f"The teacher must return logits of shape ({y.shape[0]}, {k}); got {tuple(logits.shape)}.")
        return torch.softmax(logits.double() / self.temperature, dim=-1)


class DualIBLoss(nn.Module):
    """Loss of the variational dual IB on a :class:`~ibscope.objectives.VIBClassifier`.

    ``loss, terms = DualIBLoss(beta, noisy_labels=...)(output, y, x)``; ``loss``
    is in ``unit`` (bits by default), ``terms`` has ``dual_kl`` (the mean
    reverse KL to p_tilde), ``ce``, ``kl`` (= ``izx_upper``), ``beta``,
    ``gamma``, all in ``unit``.

    Parameters
    ----------
    beta : float or AnnealingSchedule
        Weight >= 0 of KL(p(z|x) || N(0, I)).
    noisy_labels : NoisyLabels
        The noisy label distribution p_tilde(y|x).
    gamma : float or AnnealingSchedule
        Weight >= 0 of the dual distortion.
    ce_weight : float
        Weight >= 0 of VIB's cross entropy (0: pure dual IB).
    unit : {'bits', 'nats'}
    """

    def __init__(self, beta: float | AnnealingSchedule = 1e-3, *, noisy_labels: NoisyLabels,
                 gamma: float | AnnealingSchedule = 1.0, ce_weight: float = 0.0, unit: str = "bits"):
        super().__init__()
        check_weight(beta, "beta", "DualIBLoss")
        check_weight(gamma, "gamma", "DualIBLoss")
        check_weight(ce_weight, "ce_weight", "DualIBLoss")
        if not isinstance(noisy_labels, NoisyLabels):
            raise TypeError(f"'noisy_labels' must be a NoisyLabels; got {type(noisy_labels).__name__}.")
        self.beta, self.gamma, self.ce_weight = beta, gamma, ce_weight
        self.noisy_labels = noisy_labels
        self.unit = check_unit(unit)
        self.step_ = 0

    def step(self) -> None:
        """Advance the schedules by one optimizer step."""
        self.step_ += 1

    def forward(self, output: VIBOutput, y: torch.Tensor, x: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not isinstance(output, VIBOutput):
            raise TypeError(f"'output' must be a VIBOutput (what VIBClassifier returns); got {type(output).__name__}.")
        _check_logits_labels(output.logits, y)
        s, n, c = output.logits.shape
        if c != self.noisy_labels.n_classes:
            raise ValueError(f"The logits have {c} classes but 'noisy_labels' has {self.noisy_labels.n_classes}.")
        check_labels(y, c, "y")
        for name in ("logits", "mu", "std"):
            check_finite(getattr(output, name), f"output.{name}")
        beta = resolve_weight(self.beta, self.step_, "beta")
        gamma = resolve_weight(self.gamma, self.step_, "gamma")
        log_q = torch.log_softmax(output.logits, dim=-1)                # (S, n, C)
        log_p = torch.log(self.noisy_labels(y, x)).to(log_q.dtype)      # (n, C)
        dual_kl = (log_q.exp() * (log_q - log_p.unsqueeze(0))).sum(-1).mean()
        ce = F.nll_loss(log_q.reshape(s * n, c), y.repeat(s))
        kl = gaussian_kl(output.mu, output.std).mean()
        scale = unit_scale(self.unit)
        loss = (gamma * dual_kl + self.ce_weight * ce + beta * kl) * scale
        terms = {"dual_kl": float(dual_kl.detach()) * scale, "ce": float(ce.detach()) * scale, "kl": float(kl.detach()) * scale,
                 "izx_upper": float(kl.detach()) * scale, "beta": beta, "gamma": gamma, "unit": self.unit}
        return loss, terms
