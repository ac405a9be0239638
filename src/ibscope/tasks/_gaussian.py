"""Multivariate normal and Student-t tasks with closed-form mutual information.

For a jointly Gaussian pair with covariance ``S = [[S_xx, S_xy], [S_yx, S_yy]]``

    I(X;Y) = 1/2 [log det S_xx + log det S_yy - log det S]   (nats),

which for unit marginal variances is ``-1/2 log det(corr)`` when the blocks
are identities, and equals ``-1/2 sum_i log(1 - rho_i^2)`` over the canonical
correlations ``rho_i`` [1]_. Orthogonal maps of X and of Y leave it unchanged.

References
----------
.. [1] T. M. Cover and J. A. Thomas, "Elements of Information Theory",
   2nd ed., Wiley, 2006, ch. 8 (entropy of the multivariate normal).
.. [2] I. Butakov, A. Tolmachev, S. Malanchuk, A. Neopryatnaya, A. Frolov and
   K. Andreev, "Information bottleneck analysis of deep neural networks via
   lossy compression", ICLR 2024.
.. [3] P. Czyz, F. Grabowski, J. E. Vogt, N. Beerenwinkel and A. Marx,
   "Beyond normal: on the evaluation of mutual information estimators",
   NeurIPS 2023.
.. [4] R. B. Arellano-Valle, J. E. Contreras-Reyes and M. G. Genton, "Shannon
   entropy and mutual information for multivariate skew-elliptical
   distributions", Scandinavian Journal of Statistics 40(1), 2013.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln
from scipy.stats import ortho_group

from .._units import LN2
from .._validation import NONE, Interval
from ._base import BaseTask

__all__ = [
    "GaussianTask", "GaussianSplit", "GaussianDense", "GaussianSparse", "StudentT",
    "gaussian_mi_nats", "random_orthogonal", "student_t_mi_correction",
]


def gaussian_mi_nats(cov: np.ndarray, dim_x: int) -> float:
    """I(X;Y) in nats of a Gaussian with joint covariance ``cov``; X = first ``dim_x`` columns."""
    cov = np.asarray(cov, dtype=np.float64)
    _, ld = np.linalg.slogdet(cov)
    _, ldx = np.linalg.slogdet(cov[:dim_x, :dim_x])
    _, ldy = np.linalg.slogdet(cov[dim_x:, dim_x:])
    return max(0.5 * (ldx + ldy - ld), 0.0)


def random_orthogonal(dim: int, seed: int | None) -> np.ndarray:
    """A Haar-random orthogonal (dim, dim) matrix from ``seed`` (identity if seed is None)."""
    if seed is None:
        return np.eye(dim)
    if dim == 1:
        return np.ones((1, 1))
    return ortho_group.rvs(dim, random_state=np.random.default_rng(seed))


class GaussianTask(BaseTask):
    """A jointly Gaussian pair with zero mean and joint covariance ``covariance``.

    Subclasses build ``self.covariance`` ((dim_x + dim_y) square) in their
    constructor. MI is the log-determinant formula of the module docstring.
    """

    covariance: np.ndarray

    def _set_covariance(self, cov: np.ndarray, dim_x: int) -> None:
        cov = np.asarray(cov, dtype=np.float64)
        self.dim_x, self.dim_y = dim_x, cov.shape[0] - dim_x
        self.covariance = cov
        try:
            self._chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            params = ", ".join(f"{k}={getattr(self, k)!r}" for k in getattr(self, "_param_order", ()))
            raise ValueError(
                f"The covariance of task {getattr(self, 'task_name', type(self).__name__)!r} with "
                f"{params} is not numerically positive definite (the MI is too large to represent "
                f"in float64); lower the dependence parameter."
            ) from None

    def _mi_nats(self) -> float:
        return gaussian_mi_nats(self.covariance, self.dim_x)

    def _sample(self, n, rng):
        z = rng.standard_normal((n, self.covariance.shape[0])) @ self._chol.T
        return z[:, : self.dim_x].copy(), z[:, self.dim_x:].copy()


class GaussianSplit(GaussianTask):
    """Equal MI split over ``dim`` correlated pairs, then random orthogonal mixing.

    Construction of Butakov et al. [2]_: independent pairs (u_i, v_i) with
    unit variances and correlation ``rho`` for i = 1..dim, each carrying
    ``I/dim`` nats, so ``-1/2 log(1 - rho^2) = I/dim`` gives

        rho = sqrt(1 - exp(-2 I / dim)),     I in nats.

    Then x = Q_x u and y = Q_y v with independent Haar-random orthogonal Q_x,
    Q_y (seeded by ``mixing_seed``; None: no mixing). An invertible linear map
    of X (and of Y) does not change I(X;Y), so the task's MI is exactly ``mi``.

    Parameters
    ----------
    dim : int
        Dimension of x and of y.
    mi : float
        The mutual information in bits, in [0, 16 dim]: beyond 16 bits per
        pair, 1 - rho = 2^(-2 mi/dim)/2 is below 1e-10 and the covariance is
        no longer numerically positive definite (at 60 bits in one pair rho
        rounds to exactly 1).
    mixing_seed : int or None, default 0
    """

    MAX_BITS_PER_PAIR = 16.0

    task_name = "gaussian_split"
    _param_order = ("dim", "mi", "mixing_seed")
    _constraints = {
        "dim": [Interval(int, 1, None)],
        "mi": [Interval(float, 0, None)],
        "mixing_seed": [NONE, Interval(int, 0, None)],
    }

    def __init__(self, dim: int = 2, mi: float = 1.0, mixing_seed: int | None = 0):
        self.dim, self.mi, self.mixing_seed = dim, mi, mixing_seed
        self._check_params()
        if mi > self.MAX_BITS_PER_PAIR * dim:
            raise ValueError(
                f"The 'mi' parameter of gaussian_split must be at most {self.MAX_BITS_PER_PAIR:g} bits "
                f"per dimension ({self.MAX_BITS_PER_PAIR * dim:g} for dim={dim}): beyond that the "
                f"covariance is numerically singular. Got mi={mi!r}; raise 'dim' or lower 'mi'."
            )
        rho = self.rho
        raw = np.block([[np.eye(dim), rho * np.eye(dim)], [rho * np.eye(dim), np.eye(dim)]])
        qx = random_orthogonal(dim, mixing_seed)
        qy = random_orthogonal(dim, None if mixing_seed is None else mixing_seed + 1_000_003)
        q = np.block([[qx, np.zeros((dim, dim))], [np.zeros((dim, dim)), qy]])
        self._set_covariance(q @ raw @ q.T, dim)

    @property
    def rho(self) -> float:
        """Per-pair correlation sqrt(1 - exp(-2 I_nats / dim))."""
        return math.sqrt(-math.expm1(-2.0 * self.mi * LN2 / self.dim))

    def _mi_nats(self) -> float:
        return float(self.mi) * LN2  # exact by construction (equals the log-det formula)


class GaussianDense(GaussianTask):
    """Gaussian with identity marginal covariances and all cross-correlations equal.

    S = [[I, rho 11^T], [rho 11^T, I]]. The cross block has one non-zero
    singular value rho sqrt(dim_x dim_y), so S is positive definite iff
    |rho| sqrt(dim_x dim_y) < 1 and

        I(X;Y) = -1/2 log(1 - rho^2 dim_x dim_y)   (nats).

    Parameters
    ----------
    dim_x, dim_y : int
    rho : float
        The common correlation between every x_i and every y_j.
    """

    task_name = "gaussian_dense"
    _param_order = ("dim_x", "dim_y", "rho")
    _constraints = {
        "dim_x": [Interval(int, 1, None)],
        "dim_y": [Interval(int, 1, None)],
        "rho": [Interval(float, -1, 1, closed="neither")],
    }

    def __init__(self, dim_x: int = 2, dim_y: int = 2, rho: float = 0.2):
        self.dim_x, self.dim_y, self.rho = dim_x, dim_y, rho
        self._check_params()
        limit = 1.0 / math.sqrt(dim_x * dim_y)
        if abs(rho) >= limit:
            raise ValueError(
                f"The 'rho' parameter of task 'gaussian_dense' gives a covariance that is not "
                f"positive definite: all-equal cross-correlations need |rho| * sqrt(dim_x * dim_y) "
                f"< 1, i.e. |rho| < {limit:.6g} for dim_x={dim_x}, dim_y={dim_y}. Got {rho!r} instead."
            )
        cross = np.full((dim_x, dim_y), float(rho))
        self._set_covariance(np.block([[np.eye(dim_x), cross], [cross.T, np.eye(dim_y)]]), dim_x)

    def closed_form_nats(self) -> float:
        """-1/2 log(1 - rho^2 dim_x dim_y)."""
        return -0.5 * math.log1p(-self.rho ** 2 * self.dim_x * self.dim_y)


class GaussianSparse(GaussianTask):
    """Gaussian where only the first ``n_interacting`` pairs (x_i, y_i) are correlated.

    S = [[I, R], [R^T, I]] with R_ii = rho for i < n_interacting and 0
    elsewhere, so I(X;Y) = -n_interacting/2 log(1 - rho^2) nats; the other
    coordinates are independent noise (as in Czyz et al. [3]_).

    Parameters
    ----------
    dim_x, dim_y : int
    rho : float in (-1, 1)
    n_interacting : int in [0, min(dim_x, dim_y)]
    """

    task_name = "gaussian_sparse"
    _param_order = ("dim_x", "dim_y", "rho", "n_interacting")
    _constraints = {
        "dim_x": [Interval(int, 1, None)],
        "dim_y": [Interval(int, 1, None)],
        "rho": [Interval(float, -1, 1, closed="neither")],
        "n_interacting": [Interval(int, 0, None)],
    }

    def __init__(self, dim_x: int = 3, dim_y: int = 3, rho: float = 0.8, n_interacting: int = 1):
        self.dim_x, self.dim_y, self.rho, self.n_interacting = dim_x, dim_y, rho, n_interacting
        self._check_params()
        if n_interacting > min(dim_x, dim_y):
            raise ValueError(
                f"The 'n_interacting' parameter of task 'gaussian_sparse' must be at most "
                f"min(dim_x, dim_y) = {min(dim_x, dim_y)}. Got {n_interacting!r} instead."
            )
        cross = np.zeros((dim_x, dim_y))
        idx = np.arange(n_interacting)
        cross[idx, idx] = rho
        self._set_covariance(np.block([[np.eye(dim_x), cross], [cross.T, np.eye(dim_y)]]), dim_x)

    def closed_form_nats(self) -> float:
        """-n_interacting/2 log(1 - rho^2)."""
        return -0.5 * self.n_interacting * math.log1p(-self.rho ** 2)


def _student_entropy_shape_term(k: int, dof: float) -> float:
    """Entropy of Student-t(0, I_k, dof) minus its (k/2) log(dof pi) term (nats), Eq. (7) of [4]_."""
    h = 0.5 * (dof + k)
    return float(gammaln(0.5 * dof) - gammaln(h) + h * (digamma(h) - digamma(0.5 * dof)))


def student_t_mi_correction(dof: float, dim_x: int, dim_y: int) -> float:
    """Non-Gaussian part c(dof, m, n) of the MI of a multivariate Student-t (nats).

    With H_k = -log G((v+k)/2) + log G(v/2) + (k/2) log(v pi)
    + (v+k)/2 [psi((v+k)/2) - psi(v/2)] + 1/2 log det S (Arellano-Valle et al.
    [4]_, Eq. 7; used by Czyz et al. [3]_), I = H_m + H_n - H_{m+n} splits into
    the Gaussian log-det term and c = g(m) + g(n) - g(m+n) with g the
    dimension-dependent terms (the (k/2) log(v pi) terms cancel). c > 0 and
    c -> 0 as dof -> inf.
    """
    return (_student_entropy_shape_term(dim_x, dof) + _student_entropy_shape_term(dim_y, dof)
            - _student_entropy_shape_term(dim_x + dim_y, dof))


class StudentT(BaseTask):
    """Multivariate Student-t pair with known MI (Czyz et al. [3]_).

    (X, Y) = Z / sqrt(W / dof) with Z ~ N(0, S), S = [[I, rho I], [rho I, I]]
    (pairs (x_i, y_i) with dispersion correlation ``rho``), W ~ chi2(dof).
    The shared scale W makes X and Y dependent even when rho = 0:

        I(X;Y) = -dim/2 log(1 - rho^2) + c(dof, dim, dim)    (nats)

    with ``c`` from :func:`student_t_mi_correction` (Arellano-Valle et al.
    [4]_). The formula is checked by Monte Carlo integration of
    log p(x,y) - log p(x) - log p(y) in tests/test_tasks.py.

    Parameters
    ----------
    dim : int
        Dimension of x and of y.
    dof : float
        Degrees of freedom (> 0); heavy tails for small dof.
    rho : float in (-1, 1)
    """

    task_name = "student_t"
    _param_order = ("dim", "dof", "rho")
    _constraints = {
        "dim": [Interval(int, 1, None)],
        "dof": [Interval(float, 0, None, closed="neither")],
        "rho": [Interval(float, -1, 1, closed="neither")],
    }

    def __init__(self, dim: int = 1, dof: float = 3.0, rho: float = 0.5):
        self.dim, self.dof, self.rho = dim, dof, rho
        self._check_params()
        self.dim_x = self.dim_y = dim
        eye = np.eye(dim)
        self.shape_matrix = np.block([[eye, rho * eye], [rho * eye, eye]])

    def _mi_nats(self) -> float:
        gauss = -0.5 * self.dim * math.log1p(-self.rho ** 2)
        return gauss + student_t_mi_correction(float(self.dof), self.dim, self.dim)

    def _sample(self, n, rng):
        d, r = self.dim, float(self.rho)
        u = rng.standard_normal((n, d))
        v = r * u + math.sqrt(1.0 - r * r) * rng.standard_normal((n, d))
        scale = np.sqrt(rng.chisquare(self.dof, size=(n, 1)) / self.dof)
        return u / scale, v / scale
