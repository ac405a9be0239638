"""Gaussian-mixture tasks with Monte Carlo ground truth (the "mixtures" of Czyz et al. 2023).

Czyz et al. [1]_ build hard benchmark distributions as finite mixtures of
Gaussians (and transformations of them): their MI has no closed form but the
densities of the joint and of both marginals do (a marginal of a Gaussian
mixture is the mixture of the component marginals), so the truth is the
Monte Carlo mean of the pointwise MI,

    I(X;Y) = E_{p(x,y)}[log p(x,y) - log p(x) - log p(y)],

over ``mc_samples`` draws from a fixed seed, with its standard error
(``mutual_information_se``). The bmi package (benchmark-mi) that implements
them is not a dependency; these classes follow the construction, not its code.

Tasks:

* ``mixture_x``: the "X" distribution: an equal mixture of two centred 2-D
  Gaussians (X and Y scalar) with correlations +rho and -rho. X and Y are
  uncorrelated, yet dependent (|Y| grows with |X|); a Gaussian or
  correlation-based estimator reads ~0.
* ``gaussian_mixture``: ``n_components`` Gaussians in dim_x + dim_y
  dimensions with random means (scale ``separation``), each with its own
  random cross-correlation ``rho`` between coordinate pairs after a random
  rotation, equal weights (``mixing_seed`` fixes the draw): multimodal,
  with dependence that changes from mode to mode.

References
----------
.. [1] P. Czyz, F. Grabowski, J. E. Vogt, N. Beerenwinkel and A. Marx, "The
   mixtures and the neural critics: on the pointwise mutual information
   profiles of fine distributions", arXiv:2310.10240, 2023.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import logsumexp

from .._validation import Interval
from ._base import BaseTask
from ._gaussian import random_orthogonal

__all__ = ["MixtureTask", "XMixture", "GaussianMixture", "mixture_pmi"]


def _mvn_logpdf(z: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    d = z.shape[1]
    u = np.linalg.solve(chol, (z - mean).T)
    return -0.5 * (u * u).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi)


def _mixture_logpdf(z: np.ndarray, weights: np.ndarray, means: list, chols: list) -> np.ndarray:
    comps = np.stack([math.log(w) + _mvn_logpdf(z, m, c) for w, m, c in zip(weights, means, chols)])
    return logsumexp(comps, axis=0)


def mixture_pmi(x: np.ndarray, y: np.ndarray, weights: np.ndarray, means: list, covs: list
                ) -> np.ndarray:
    """Pointwise MI log p(x,y) - log p(x) - log p(y) (nats) of a Gaussian mixture at rows (x, y).

    ``means`` / ``covs``: the joint components over (x, y) (x the first
    ``x.shape[1]`` coordinates); the marginals are the mixtures of the
    component marginals with the same weights.
    """
    dx = x.shape[1]
    w = np.asarray(weights, dtype=np.float64)
    chol = [np.linalg.cholesky(c) for c in covs]
    chol_x = [np.linalg.cholesky(c[:dx, :dx]) for c in covs]
    chol_y = [np.linalg.cholesky(c[dx:, dx:]) for c in covs]
    joint = _mixture_logpdf(np.hstack([x, y]), w, list(means), chol)
    px = _mixture_logpdf(x, w, [m[:dx] for m in means], chol_x)
    py = _mixture_logpdf(y, w, [m[dx:] for m in means], chol_y)
    return joint - px - py


class MixtureTask(BaseTask):
    """A finite Gaussian mixture over (X, Y) whose MI is a Monte Carlo mean of the pointwise MI.

    Subclasses set ``weights_``, ``means_`` and ``covs_`` (joint components)
    and ``dim_x``/``dim_y`` in their constructor.

    Attributes
    ----------
    mutual_information_se : float
        Standard error (bits) of the Monte Carlo truth.
    """

    mc_samples = 200_000
    mc_seed = 20231017

    weights_: np.ndarray
    means_: list
    covs_: list

    def _sample(self, n, rng):
        comp = rng.choice(len(self.weights_), size=n, p=self.weights_)
        d = self.dim_x + self.dim_y
        z = np.empty((n, d))
        for j, (m, c) in enumerate(zip(self.means_, self.covs_)):
            idx = np.flatnonzero(comp == j)
            z[idx] = m + rng.standard_normal((idx.size, d)) @ np.linalg.cholesky(c).T
        return z[:, :self.dim_x].copy(), z[:, self.dim_x:].copy()

    @functools.cached_property
    def _mc(self) -> tuple[float, float]:
        x, y = self._sample(self.mc_samples, np.random.default_rng(self.mc_seed))
        pmi = mixture_pmi(x, y, self.weights_, self.means_, self.covs_)
        return float(pmi.mean()), float(pmi.std(ddof=1) / math.sqrt(pmi.size))

    def _mi_nats(self) -> float:
        return max(self._mc[0], 0.0)

    @property
    def mutual_information_se(self) -> float:
        """Standard error of the Monte Carlo truth, bits."""
        return self._mc[1] / math.log(2)


class XMixture(MixtureTask):
    """The "X" distribution: equal mixture of N(0, [[1, rho], [rho, 1]]) and N(0, [[1, -rho], [-rho, 1]]).

    Czyz et al. [1]_ (see the module docstring). Scalar X and Y, uncorrelated
    but dependent; truth by Monte Carlo (2e5 draws, standard error
    ``mutual_information_se``).

    Parameters
    ----------
    rho : float in (0, 1), default 0.9
    """

    task_name = "mixture_x"
    _param_order = ("rho",)
    _constraints = {"rho": [Interval(float, 0, 1, closed="neither")]}

    def __init__(self, rho: float = 0.9):
        self.rho = rho
        self._check_params()
        self.dim_x = self.dim_y = 1
        self.weights_ = np.array([0.5, 0.5])
        self.means_ = [np.zeros(2), np.zeros(2)]
        self.covs_ = [np.array([[1.0, s * rho], [s * rho, 1.0]]) for s in (1.0, -1.0)]


class GaussianMixture(MixtureTask):
    """Equal mixture of ``n_components`` random Gaussians over (X, Y) (Czyz et al. [1]_ style).

    Component j: mean ``separation`` * N(0, I) (drawn once from
    ``mixing_seed``), covariance Q_j S Q_j^T with S = [[I, rho_j I'], [rho_j I', I]]
    (I' pairs x_i with y_i for i < min(dim_x, dim_y)), rho_j = ``rho`` times a
    random sign, and Q_j a block-diagonal random rotation (one orthogonal
    block for X, one for Y). Truth by Monte Carlo (2e5 draws).

    Parameters
    ----------
    dim_x, dim_y : int, default 1
    n_components : int >= 1, default 3
    separation : float >= 0, default 3.0
    rho : float in (-1, 1), default 0.8
    mixing_seed : int, default 0
    """

    task_name = "gaussian_mixture"
    _param_order = ("dim_x", "dim_y", "n_components", "separation", "rho", "mixing_seed")
    _constraints = {
        "dim_x": [Interval(int, 1, None)],
        "dim_y": [Interval(int, 1, None)],
        "n_components": [Interval(int, 1, None)],
        "separation": [Interval(float, 0, None)],
        "rho": [Interval(float, -1, 1, closed="neither")],
        "mixing_seed": [Interval(int, 0, None)],
    }

    def __init__(self, dim_x: int = 1, dim_y: int = 1, n_components: int = 3,
                 separation: float = 3.0, rho: float = 0.8, mixing_seed: int = 0):
        self.dim_x, self.dim_y, self.n_components = dim_x, dim_y, n_components
        self.separation, self.rho, self.mixing_seed = separation, rho, mixing_seed
        self._check_params()
        rng = np.random.default_rng([mixing_seed, 2310, 10240])
        d, k = dim_x + dim_y, min(dim_x, dim_y)
        self.weights_ = np.full(n_components, 1.0 / n_components)
        self.means_, self.covs_ = [], []
        for _ in range(n_components):
            self.means_.append(separation * rng.standard_normal(d))
            r = rho * (1.0 if rng.random() < 0.5 else -1.0)
            s = np.eye(d)
            s[np.arange(k), dim_x + np.arange(k)] = s[dim_x + np.arange(k), np.arange(k)] = r
            q = np.zeros((d, d))
            q[:dim_x, :dim_x] = random_orthogonal(dim_x, int(rng.integers(0, 2**31)))
            q[dim_x:, dim_x:] = random_orthogonal(dim_y, int(rng.integers(0, 2**31)))
            self.covs_.append(q @ s @ q.T)
