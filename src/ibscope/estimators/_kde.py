"""Pairwise-distance (KDE) bounds on the information of a noisy layer.

Treat the layer as T + N(0, s2 I): the distribution of the noisy layer is a
mixture of N equal-weight Gaussians centred on the samples, whose entropy
Kolchinsky & Tracey [1]_ bound from above with the pairwise KL divergence and
from below with the Bhattacharyya distance. Subtracting the known noise
entropy gives, in nats,

    I_up(X;T)  = -(1/N) sum_i log[(1/N) sum_j exp(-||t_i - t_j||^2 / (2 s2))]
    I_low(X;T) = -(1/N) sum_i log[(1/N) sum_j exp(-||t_i - t_j||^2 / (8 s2))]

both at most log N, and I(T;Y) = H(T) - sum_y p(y) H(T | Y=y) with every class
its own mixture (the noise entropy cancels), as used by Saxe et al. [2]_.
The adaptive variant scales s2 to each layer's activation range so that
unbounded activations are measured fairly (Chelombiev et al. [3]_).

Everything runs in torch (float64), on the inputs' device when they are CUDA
tensors, in row chunks so memory is O(chunk * N), never N x N at once for large N.

References
----------
.. [1] A. Kolchinsky and B. D. Tracey, "Estimating mixture entropy with
   pairwise distances", Entropy 19(7), 2017.
.. [2] A. M. Saxe et al., "On the information bottleneck theory of deep
   learning", ICLR 2018.
.. [3] I. Chelombiev, C. Houghton and C. O'Donnell, ICLR 2019.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._units import from_nats
from .._validation import NONE, Interval, InstanceOf, check_array, is_torch, resolve_device
from .base import CONTINUOUS, DISCRETE, BaseMIEstimator

__all__ = ["KDEUpper", "KDELower", "AdaptiveKDE", "pairwise_mixture_term"]

_CHUNK_ELEMENTS = 1 << 24  # ~128 MiB of float64 per distance block


def pairwise_mixture_term(t: torch.Tensor, scale: float, *, chunk_size: int | None = None) -> float:
    """-(1/N) sum_i log[(1/N) sum_j exp(-||t_i - t_j||^2 / scale)] in nats.

    ``t`` is an (N, d) float64 tensor; ``scale`` is 2 s2 for the KL upper bound
    and 8 s2 for the Bhattacharyya lower bound. Computed block by block.
    """
    n = t.shape[0]
    if chunk_size is None:
        chunk_size = max(1, min(n, _CHUNK_ELEMENTS // max(n, 1)))
    sq = (t * t).sum(dim=1)
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    log_n = math.log(n)
    for start in range(0, n, chunk_size):
        block = t[start:start + chunk_size]
        d2 = sq[start:start + chunk_size, None] + sq[None, :] - 2.0 * (block @ t.T)
        d2.clamp_(min=0.0)
        # exact zeros on the diagonal (rounding can leave tiny positives)
        idx = torch.arange(block.shape[0], device=t.device)
        d2[idx, idx + start] = 0.0
        lse = torch.logsumexp(-d2 / scale, dim=1)
        total = total + (log_n - lse).sum()
    return float(total / n)


def _to_tensor(a: Any, device: Any) -> torch.Tensor:
    if is_torch(a):
        return a.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)


class _KDEBase(BaseMIEstimator):
    supports = frozenset({(CONTINUOUS, DISCRETE), (DISCRETE, CONTINUOUS)})
    keep_torch = True
    _factor: float = 2.0

    def _variance(self, t: torch.Tensor) -> float:  # overridden by the adaptive variant
        return float(self.noise_variance)

    def _pair(self, t: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(I(X;T), I(T;Y)) in nats for continuous t and integer labels."""
        scale = self._factor * self._variance(t)
        h_t = pairwise_mixture_term(t, scale, chunk_size=self.chunk_size)
        labels = labels.reshape(-1)
        classes, counts = torch.unique(labels, return_counts=True)
        n = labels.shape[0]
        h_cond = 0.0
        for c, cnt in zip(classes.tolist(), counts.tolist()):
            h_cond += (cnt / n) * pairwise_mixture_term(t[labels == c], scale, chunk_size=self.chunk_size)
        return h_t, max(h_t - h_cond, 0.0)

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        cont, disc = (y, x) if discrete_x else (x, y)
        device = resolve_device(self.device, like=cont)
        t = _to_tensor(cont, device)
        if disc.shape[1] > 1:
            from .._validation import discrete_symbols

            disc = discrete_symbols(np.asarray(disc.cpu() if is_torch(disc) else disc))[0]
        labels = _to_tensor(disc, device).to(torch.int64)
        return self._pair(t, labels)[1]

    def plane(self, t: Any, y: Any) -> tuple[float, float]:
        """(I(X;T), I(T;Y)) of a layer ``t`` (n, d) with discrete labels ``y`` (n,), in ``self.unit``."""
        t_checked = check_array(t, "t", keep_torch=True)
        y_checked = check_array(y, "y", discrete=True, keep_torch=True)
        if y_checked.shape[0] != t_checked.shape[0]:
            raise ValueError(
                f"'t' and 'y' must have the same number of samples; got {t_checked.shape[0]} and {y_checked.shape[0]}."
            )
        device = resolve_device(self.device, like=t_checked)
        tt = _to_tensor(t_checked, device)
        yy = _to_tensor(y_checked, device).to(torch.int64)
        i_xt, i_ty = self._pair(tt, yy)
        return self._finish(i_xt), self._finish(i_ty)


_COMMON_DOC = """
    Parameters
    ----------
    noise_variance : float, default 0.1
        Variance s2 of the isotropic Gaussian noise added to the layer (Saxe
        et al. used 0.1). The result depends strongly on it; report it.
    chunk_size : int or None
        Rows per distance block (None: chosen so a block has ~16M entries).
    device : str, torch.device or None
        Where to compute; None uses the input tensor's device (CPU for numpy).
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    ``estimate(x, y)`` needs one continuous and one discrete variable (the
    continuous one is the noisy layer). Cost: O(N^2 d) time, O(chunk * N)
    memory.
"""


class KDEUpper(_KDEBase):
    __doc__ = (
        "Kolchinsky-Tracey pairwise-KL upper bound on the information of T + N(0, s2 I).\n\n"
        "    Bias: an upper bound on I(X; T+noise) (<= log N); the I(T;Y) value is a\n"
        "    difference of bounds, not itself a bound.\n"
        + _COMMON_DOC
        + "\n    References\n    ----------\n    .. [1] Kolchinsky & Tracey, Entropy 19(7), 2017.\n"
        "    .. [2] Saxe et al., ICLR 2018.\n"
    )
    name = "kde_upper"
    bound = "upper"
    _factor = 2.0
    _constraints = {
        "noise_variance": [Interval(float, 0, None, closed="neither")],
        "chunk_size": [NONE, Interval(int, 1, None)],
        "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
    }

    def __init__(self, *, noise_variance: float = 0.1, chunk_size: int | None = None,
                 device: Any = None, unit: str = "bits"):
        self.noise_variance = noise_variance
        self.chunk_size = chunk_size
        self.device = device
        self.unit = unit
        self._check_params()


class KDELower(KDEUpper):
    __doc__ = (
        "Kolchinsky-Tracey Bhattacharyya lower bound on the information of T + N(0, s2 I).\n\n"
        "    Same as :class:`KDEUpper` with 8 s2 in place of 2 s2.\n"
        "    Bias: a lower bound on I(X; T+noise).\n"
        + _COMMON_DOC
        + "\n    References\n    ----------\n    .. [1] Kolchinsky & Tracey, Entropy 19(7), 2017.\n"
    )
    name = "kde_lower"
    bound = "lower"
    _factor = 8.0


class AdaptiveKDE(_KDEBase):
    """KDE bound with the noise variance scaled to the layer's activation range.

    s2 = ``noise_fraction`` * max|t|^2, computed per call (one layer at one
    snapshot), so that a ReLU layer whose activations grow is measured at the
    same relative resolution as a saturating tanh layer (Chelombiev et al.
    2019). With ``noise_fraction=0.1`` a tanh layer near saturation gets the
    s2 = 0.1 of Saxe et al.

    Parameters
    ----------
    noise_fraction : float, default 0.1
    bound : {'upper', 'lower'}, default 'upper'
        Pairwise-KL upper or Bhattacharyya lower bound.
    chunk_size, device, unit : as for :class:`KDEUpper`.

    Notes
    -----
    Bias: the chosen bound on I(X; T + N(0, s2 I)) for the adapted s2. An
    all-zero layer has no range; it carries no information and gives 0.

    References
    ----------
    .. [1] Chelombiev, Houghton & O'Donnell, ICLR 2019.
    .. [2] Kolchinsky & Tracey, Entropy 19(7), 2017.
    """

    name = "adaptive_kde"
    _constraints = {
        "noise_fraction": [Interval(float, 0, None, closed="neither")],
        "chunk_size": [NONE, Interval(int, 1, None)],
        "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
    }

    def __init__(self, *, noise_fraction: float = 0.1, bound: str = "upper",
                 chunk_size: int | None = None, device: Any = None, unit: str = "bits"):
        self.noise_fraction = noise_fraction
        self.bound = bound
        self.chunk_size = chunk_size
        self.device = device
        self.unit = unit
        if bound not in ("upper", "lower"):
            raise ValueError(f"The 'bound' parameter of AdaptiveKDE must be 'upper' or 'lower'. Got {bound!r} instead.")
        self._check_params()
        self._factor = 2.0 if bound == "upper" else 8.0

    def _variance(self, t: torch.Tensor) -> float:
        m = float(t.abs().max())
        return self.noise_fraction * m * m if m > 0 else self.noise_fraction

    def _pair(self, t, labels):
        if float(t.abs().max()) == 0.0:
            return 0.0, 0.0
        return super()._pair(t, labels)
