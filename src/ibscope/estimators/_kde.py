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

from .._validation import (
    NONE,
    InstanceOf,
    Interval,
    check_array,
    discrete_symbols,
    is_torch,
    resolve_device,
    to_numpy,
)
from .base import CONTINUOUS, DISCRETE, BaseMIEstimator

__all__ = ["KDEUpper", "KDELower", "AdaptiveKDE", "mixture_terms", "pairwise_mixture_term"]

# Distance blocks of ~2 MiB stay in cache on a CPU (3x faster than one big block);
# on a GPU large blocks are better.
_CPU_BLOCK_ELEMENTS = 1 << 18
_GPU_BLOCK_ELEMENTS = 1 << 26


def _default_chunk(n: int, device: torch.device) -> int:
    if device.type == "cuda":
        return max(1, min(n, _GPU_BLOCK_ELEMENTS // max(n, 1)))
    return max(1, min(n, max(32, _CPU_BLOCK_ELEMENTS // max(n, 1))))


def mixture_terms(t: torch.Tensor, scale: float, labels: torch.Tensor | None = None, *,
                  chunk_size: int | None = None) -> tuple[float, float]:
    """Pairwise mixture terms of a sample, in nats, from one pass over the distances.

    Returns ``(h, h_cond)`` with

        h      = -(1/N) sum_i log[(1/N)   sum_j        exp(-||t_i - t_j||^2 / scale)]
        h_cond = -(1/N) sum_i log[(1/N_c) sum_{j in c(i)} exp(-||t_i - t_j||^2 / scale)]

    where c(i) is the class of sample i (``h_cond`` is sum_c p(c) h(T | c), and
    0 when ``labels`` is None). ``scale`` is 2 s2 for the KL upper bound and
    8 s2 for the Bhattacharyya lower bound. The (N, N) distances are
    computed block by block, each block used for both terms.

    The sample is first centred on its per-column midrange (computed without
    overflow): the distance formula ``|a|^2 + |b|^2 - 2 a.b`` cancels
    catastrophically for a large common offset (1e8 with unit spread lost half
    the information, 1e10 all of it). Should the centred squared norms still
    overflow, the blocks are computed from the differences directly (exact,
    slower).
    """
    n = t.shape[0]
    if chunk_size is None:
        chunk_size = _default_chunk(n, t.device)
    t = t - (t.amax(dim=0) * 0.5 + t.amin(dim=0) * 0.5)
    sq = (t * t).sum(dim=1)
    direct = not bool(torch.isfinite(sq).all())
    h = torch.zeros((), dtype=torch.float64, device=t.device)
    h_cond = torch.zeros((), dtype=torch.float64, device=t.device)
    if labels is not None:
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        onehot = torch.nn.functional.one_hot(inverse, counts.numel()).to(torch.float64)
        log_n_class = torch.log(counts.to(torch.float64))[inverse]
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if direct:  # inf distances (exp -> 0) without inf - inf
            e = torch.cdist(t[start:stop], t, compute_mode="donot_use_mm_for_euclid_dist").square_()
        else:
            e = torch.addmm(sq[None, :], t[start:stop], t.T, beta=1.0, alpha=-2.0)
            e.add_(sq[start:stop, None]).clamp_(min=0.0)
        idx = torch.arange(stop - start, device=t.device)
        e[idx, idx + start] = 0.0  # exact zeros on the diagonal (rounding leaves tiny positives)
        # Every row holds exp(0) = 1 on the diagonal, so its sums lie in [1, N]:
        # summing the exponentials directly is stable (no log-sum-exp needed).
        e.mul_(-1.0 / scale).exp_()
        h = h + (math.log(n) - torch.log(e.sum(dim=1))).sum()
        if labels is not None:
            own = (e @ onehot).gather(1, inverse[start:stop, None]).squeeze(1)
            h_cond = h_cond + (log_n_class[start:stop] - torch.log(own)).sum()
    return float(h / n), float(h_cond / n)


def pairwise_mixture_term(t: torch.Tensor, scale: float, *, chunk_size: int | None = None) -> float:
    """-(1/N) sum_i log[(1/N) sum_j exp(-||t_i - t_j||^2 / scale)] in nats (see :func:`mixture_terms`)."""
    return mixture_terms(t, scale, None, chunk_size=chunk_size)[0]


def _to_tensor(a: Any, device: Any) -> torch.Tensor:
    if is_torch(a):
        return a.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)


class _KDEBase(BaseMIEstimator):
    supports = frozenset({(CONTINUOUS, DISCRETE), (DISCRETE, CONTINUOUS)})
    keep_torch = True
    diagnostics = frozenset({"labels"})  # estimate() is I(T;Y) <= H(Y): saturated_ty
    _factor: float = 2.0

    def _variance(self, t: torch.Tensor) -> float:  # overridden by the adaptive variant
        return float(self.noise_variance)

    def _pair(self, t: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(I(X;T), I(T;Y)) in nats for continuous t and integer labels."""
        h_t, h_cond = mixture_terms(t, self._factor * self._variance(t), labels.reshape(-1),
                                    chunk_size=self.chunk_size)
        return h_t, max(h_t - h_cond, 0.0)

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        cont, disc = (y, x) if discrete_x else (x, y)
        device = resolve_device(self.device, like=cont)
        symbols = discrete_symbols(np.asarray(to_numpy(disc)))[0]  # rows of a 2-D label are joint symbols
        return self._pair(_to_tensor(cont, device), torch.as_tensor(symbols, device=device))[1]

    def plane(self, t: Any, y: Any, *, ci: float | None = None, n_resamples: int = 50,
              subsample: float = 0.5, seed: Any = 0) -> tuple[Any, Any]:
        """(I(X;T), I(T;Y)) of a layer ``t`` (n, d) with discrete labels ``y`` (n,), in ``self.unit``.

        With ``ci`` (a level in (0, 1)) a pair of MIEstimate with subsampling
        intervals (:meth:`BaseMIEstimator.plane_ci`; ``n_resamples``,
        ``subsample``, ``seed`` as in ``estimate_ci``).
        """
        if ci is not None:
            return self.plane_ci(t, y, level=ci, n_resamples=n_resamples, subsample=subsample, seed=seed)
        t_checked = check_array(t, "t", keep_torch=True)
        y_checked = check_array(y, "y", discrete=True)
        if y_checked.shape[0] != t_checked.shape[0]:
            raise ValueError(
                f"'t' and 'y' must have the same number of samples; got {t_checked.shape[0]} and {y_checked.shape[0]}."
            )
        device = resolve_device(self.device, like=t_checked)
        tt = _to_tensor(t_checked, device)
        # rows of a 2-D label are joint symbols, as in estimate()
        yy = torch.as_tensor(discrete_symbols(y_checked)[0], device=device)
        i_xt, i_ty = self._pair(tt, yy)
        out = self._finish(i_xt), self._finish(i_ty)
        flags = self._plane_flags(i_xt, i_ty, tt.shape[0], y_checked)  # vs log N, H(Y)
        self._record_flags(flags + self._noise_flags(tt))
        return out

    def _noise_flags(self, t: torch.Tensor) -> tuple[str, ...]:
        """``noise_dominated`` when a fixed noise variance s2 blurs the samples into each other.

        Two samples at the typical squared distance 2 tr Cov(T) have kernel
        weight exp(-tr Cov(T) / s2); summed over N samples this stays below 1
        (each sample resolved by the noise, I(X;T) near log N for an injective
        layer) only when tr Cov(T) >= s2 ln N. Below that the value is set
        by s2. The adaptive KDE scales s2 with the layer and is never flagged.
        """
        n = t.shape[0]
        if self.name not in ("kde_upper", "kde_lower") or n < 2:
            return ()
        spread = float(t.var(dim=0).sum())
        return ("noise_dominated",) if spread < float(self.noise_variance) * math.log(n) else ()


_COMMON_DOC = """
    Parameters
    ----------
    noise_variance : float, default 0.1
        Variance s2 of the isotropic Gaussian noise added to the layer (Saxe
        et al. used 0.1). The result depends strongly on it; report it.
    chunk_size : int or None
        Rows per distance block (None: ~2 MiB blocks on CPU, ~512 MiB on GPU).
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
        # called on t / max|t| (see _pair), so s2 = noise_fraction * max|t|^2
        # never under- or overflows, whatever the layer's scale
        return float(self.noise_fraction)

    def _pair(self, t, labels):
        m = t.abs().max()
        if float(m) == 0.0:
            return 0.0, 0.0
        return super()._pair(t / m, labels)
