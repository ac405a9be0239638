"""Tasks with discrete variables: Gaussian mixture with labels; symmetric channel.

Y is uniform on {0, ..., K-1}; X | Y=k ~ N(mu_k, I_d). The means lie on one
line, mu_k = separation * (k - (K-1)/2) * e_1, then all of X is rotated by a
Haar-random orthogonal matrix (``mixing_seed``). Rotation and the
independent unit-variance noise in the directions orthogonal to the line do
not change I(X;Y), so

    I(X;Y) = I(X_1;Y) = sum_k p_k int phi(t - m_k) log[phi(t - m_k) / sum_j p_j phi(t - m_j)] dt

with phi the standard normal density and m_k = separation * (k - (K-1)/2).
This one-dimensional integral is computed by adaptive Gauss-Kronrod
quadrature (scipy.integrate.quad) over [m_0 - 12, m_{K-1} + 12] (the mass
outside is below 1e-32), with absolute error below 1e-10 nats; the value is
cached per (K, separation).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import integrate
from scipy.special import logsumexp

from .._validation import NONE, Interval
from ._base import BaseTask
from ._gaussian import random_orthogonal

__all__ = ["MixtureLabels", "SymmetricChannel", "mixture_label_mi_nats"]


@functools.lru_cache(maxsize=256)
def mixture_label_mi_nats(n_classes: int, separation: float) -> float:
    """I(X_1; Y) in nats for equal-weight unit-variance 1-D Gaussians at spacing ``separation``."""
    k = int(n_classes)
    m = float(separation) * (np.arange(k) - (k - 1) / 2.0)
    log_p = -math.log(k)

    def integrand(t: float) -> float:
        log_phi = -0.5 * (t - m) ** 2  # the common constant cancels in the log ratio
        log_mix = logsumexp(log_phi + log_p)
        return float(np.sum(np.exp(log_p + log_phi - 0.5 * math.log(2 * math.pi)) * (log_phi - log_mix)))

    lo, hi = float(m[0]) - 12.0, float(m[-1]) + 12.0
    points = list(m) if k <= 50 else None
    val, _err = integrate.quad(integrand, lo, hi, points=points, limit=500,
                               epsabs=1e-12, epsrel=1e-12)
    return min(max(val, 0.0), math.log(k))


class MixtureLabels(BaseTask):
    """Gaussian mixture with discrete labels; MI by numerical integration.

    ``sample`` returns x of shape (n, dim) (float64) and y of shape (n,)
    (int64 labels in {0..K-1}); ``discrete_y`` is True.

    Parameters
    ----------
    n_classes : int >= 2
    dim : int >= 1
    separation : float >= 0
        Distance between neighbouring class means (in units of the noise sd).
    mixing_seed : int or None, default 0
        Seed of the random rotation of X (None: means along the first axis).

    Notes
    -----
    I(X;Y) <= H(Y) = log2(K) bits; 0 for separation 0. Accuracy of the
    ground truth: quadrature error < 1e-10 nats (see the module docstring).
    """

    task_name = "mixture_labels"
    discrete_y = True
    _param_order = ("n_classes", "dim", "separation", "mixing_seed")
    _constraints = {
        "n_classes": [Interval(int, 2, None)],
        "dim": [Interval(int, 1, None)],
        "separation": [Interval(float, 0, None)],
        "mixing_seed": [NONE, Interval(int, 0, None)],
    }

    def __init__(self, n_classes: int = 2, dim: int = 2, separation: float = 2.0,
                 mixing_seed: int | None = 0):
        self.n_classes, self.dim, self.separation, self.mixing_seed = n_classes, dim, separation, mixing_seed
        self._check_params()
        self.dim_x, self.dim_y = dim, 1
        self._rot = random_orthogonal(dim, mixing_seed)
        offsets = np.arange(n_classes) - (n_classes - 1) / 2.0
        means = np.zeros((n_classes, dim))
        means[:, 0] = float(separation) * offsets
        self.means = means @ self._rot.T

    def _mi_nats(self) -> float:
        return mixture_label_mi_nats(int(self.n_classes), float(self.separation))

    def _sample(self, n, rng):
        y = rng.integers(0, self.n_classes, size=n).astype(np.int64)
        x = self.means[y] + rng.standard_normal((n, self.dim))
        return x, y


class SymmetricChannel(BaseTask):
    """Discrete pair: X uniform on K symbols, Y = X with probability 1 - error, else
    uniform on the K - 1 other symbols (the K-ary symmetric channel).

    I(X;Y) = log K - h(error) - error log(K - 1) nats, with h the binary
    entropy (Cover & Thomas, ch. 7). Both ``x`` and ``y`` are int64 of shape
    (n,); ``discrete_x`` and ``discrete_y`` are True.

    Parameters
    ----------
    n_symbols : int >= 2
    error : float in [0, 1]
    """

    task_name = "symmetric_channel"
    discrete_x = True
    discrete_y = True
    _param_order = ("n_symbols", "error")
    _constraints = {"n_symbols": [Interval(int, 2, None)], "error": [Interval(float, 0, 1)]}

    def __init__(self, n_symbols: int = 4, error: float = 0.2):
        self.n_symbols, self.error = n_symbols, error
        self._check_params()
        self.dim_x = self.dim_y = 1

    def _mi_nats(self) -> float:
        k, e = int(self.n_symbols), float(self.error)
        h = 0.0 if e in (0.0, 1.0) else -(e * math.log(e) + (1 - e) * math.log1p(-e))
        return max(math.log(k) - h - e * math.log(k - 1), 0.0)

    def _sample(self, n, rng):
        k = int(self.n_symbols)
        x = rng.integers(0, k, size=n)
        flip = rng.random(n) < self.error
        shift = rng.integers(1, k, size=n)  # uniform over the other symbols
        y = np.where(flip, (x + shift) % k, x)
        return x.astype(np.int64), y.astype(np.int64)
