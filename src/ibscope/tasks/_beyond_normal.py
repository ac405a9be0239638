"""The "Beyond Normal" benchmark (Czyz et al. 2023, benchmark-mi v1) as ibscope tasks.

Building blocks (each a registered task):

* ``multinormal_dense``: Gaussian with every correlation (within and across X
  and Y) equal to ``off_diag``;
* ``additive_uniform``: X ~ U(0, 1), Y = X + U(-eps, eps);
* ``normal_cdf``, ``wiggly``, ``bimodal``: strictly increasing maps of every
  coordinate;
* ``swiss_roll``: the 1-D x (in [0, 1]) embedded as a 2-D Swiss roll;
* ``normalized_spiral``: the benchmark's spiral (x turned in the plane of
  coordinates 0, 1 and y in that of 1, 2 by ``speed / dim * ||.||^2`` radians).

and :func:`beyond_normal_suite` assembles the 40 tasks of the benchmark's
task list (``bmi.benchmark.BENCHMARK_TASKS_LIST``) with the parameters
published there, in the same order and under the same ids. Every truth is a
closed form: the log-determinant formula for Gaussians, the digamma formula
of Arellano-Valle et al. for the Student-t (see :mod:`._gaussian`), the
closed form below for the additive noise, and invariance of MI under
injective maps for every transformed task. The benchmark additionally
standardizes each variable (``transform_rescale``); that affine map does not
change MI and is left to the caller (``benchmarks/beyond_normal.py`` does it).

References
----------
.. [1] P. Czyz, F. Grabowski, J. E. Vogt, N. Beerenwinkel and A. Marx,
   "Beyond normal: on the evaluation of mutual information estimators",
   NeurIPS 2023.
.. [2] T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2nd
   ed., 2006 (entropy of a sum; invariance under injective maps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr

from .._validation import Interval, validate_params
from ._base import BaseTask
from ._gaussian import GaussianSparse, GaussianTask, StudentT
from ._transforms import Asinh, HalfCube, TransformedTask

__all__ = [
    "MultinormalDense", "AdditiveUniform", "NormalCDF", "Wiggly", "Bimodal", "SwissRoll",
    "NormalizedSpiral", "SuiteTask", "beyond_normal_suite", "equicorrelation_logdet",
]


def equicorrelation_logdet(dim: int, c: float) -> float:
    """log det of the (dim, dim) matrix with unit diagonal and all other entries ``c``.

    Its eigenvalues are 1 + (dim - 1) c (once) and 1 - c (dim - 1 times).
    """
    return math.log1p((dim - 1) * c) + (dim - 1) * math.log1p(-c)


class MultinormalDense(GaussianTask):
    """Gaussian whose every pair of coordinates has correlation ``off_diag`` (Czyz et al. [1]_).

    S = (1 - c) I + c 11^T over all dim_x + dim_y coordinates (also within X
    and within Y, unlike ``gaussian_dense``). With L(d) = log det of the d x d
    equicorrelation matrix, L(d) = log(1 + (d - 1) c) + (d - 1) log(1 - c), so

        I(X;Y) = 1/2 [L(dim_x) + L(dim_y) - L(dim_x + dim_y)]   (nats).

    Parameters
    ----------
    dim_x, dim_y : int
    off_diag : float in (-1 / (dim_x + dim_y - 1), 1), default 0.5
    """

    task_name = "multinormal_dense"
    _param_order = ("dim_x", "dim_y", "off_diag")
    _constraints = {
        "dim_x": [Interval(int, 1, None)],
        "dim_y": [Interval(int, 1, None)],
        "off_diag": [Interval(float, -1, 1, closed="neither")],
    }

    def __init__(self, dim_x: int = 2, dim_y: int = 2, off_diag: float = 0.5):
        self.dim_x, self.dim_y, self.off_diag = dim_x, dim_y, off_diag
        self._check_params()
        d = dim_x + dim_y
        if off_diag <= -1.0 / (d - 1):
            raise ValueError(
                f"The 'off_diag' parameter of task 'multinormal_dense' must exceed "
                f"-1 / (dim_x + dim_y - 1) = {-1.0 / (d - 1):.6g} for a positive definite "
                f"covariance. Got {off_diag!r} instead.")
        self._set_covariance((1.0 - off_diag) * np.eye(d) + off_diag, dim_x)

    def closed_form_nats(self) -> float:
        """1/2 [L(dim_x) + L(dim_y) - L(dim_x + dim_y)] with the equicorrelation log-dets."""
        c = float(self.off_diag)
        return 0.5 * (equicorrelation_logdet(self.dim_x, c) + equicorrelation_logdet(self.dim_y, c)
                      - equicorrelation_logdet(self.dim_x + self.dim_y, c))


class AdditiveUniform(BaseTask):
    """X ~ U(0, 1), Y = X + N with N ~ U(-eps, eps) independent (Czyz et al. [1]_).

    I(X;Y) = h(Y) - h(N) with h(N) = log(2 eps). The density of Y is a
    trapezoid: for eps <= 1/2 two linear ramps of width 2 eps around a plateau
    of height 1, h(Y) = eps; for eps > 1/2 ramps of width 1 around a plateau
    of height 1/(2 eps), h(Y) = log(2 eps) + 1/(4 eps). Hence (nats)

        I = eps - log(2 eps)  (eps <= 1/2),     I = 1 / (4 eps)  (eps > 1/2).

    Parameters
    ----------
    epsilon : float > 0
    """

    task_name = "additive_uniform"
    _param_order = ("epsilon",)
    _constraints = {"epsilon": [Interval(float, 0, None, closed="neither")]}

    def __init__(self, epsilon: float = 0.75):
        self.epsilon = epsilon
        self._check_params()
        self.dim_x = self.dim_y = 1

    def _mi_nats(self) -> float:
        e = float(self.epsilon)
        return e - math.log(2.0 * e) if e <= 0.5 else 0.25 / e

    def _sample(self, n, rng):
        x = rng.uniform(0.0, 1.0, size=(n, 1))
        return x, x + rng.uniform(-self.epsilon, self.epsilon, size=(n, 1))


class _PerVariableTransform(TransformedTask):
    """A transformed task whose maps of x and y may differ (``transform_x``/``transform_y``)."""

    def transform_x(self, a: np.ndarray) -> np.ndarray:
        return self.transform(a)

    def transform_y(self, a: np.ndarray) -> np.ndarray:
        return self.transform(a)

    def _sample(self, n, rng):
        x, y = self.base_task._sample(n, rng)
        if not self.discrete_x:
            x = self.transform_x(x)
        if not self.discrete_y:
            y = self.transform_y(y)
        return x, y


class NormalCDF(TransformedTask):
    """Coordinate-wise standard normal CDF: Gaussian marginals become uniform on (0, 1)."""

    task_name = "normal_cdf"

    def transform(self, a):
        return ndtr(a)


def _wiggly_x(a: np.ndarray) -> np.ndarray:
    # derivative >= 1 - 0.4 - 0.34 - 0.099 > 0: strictly increasing
    return a + 0.4 * np.sin(a) + 0.2 * np.sin(1.7 * a + 1.0) + 0.03 * np.sin(3.3 * a - 2.5)


def _wiggly_y(a: np.ndarray) -> np.ndarray:
    # derivative >= 1 - 0.16 - 0.221 - 0.086 > 0: strictly increasing
    return a - 0.4 * np.sin(0.4 * a) + 0.17 * np.sin(1.3 * a + 3.5) + 0.02 * np.sin(4.3 * a - 2.5)


class Wiggly(_PerVariableTransform):
    """The benchmark's "wiggly" maps: identity plus small sines, strictly increasing.

    x -> x + 0.4 sin x + 0.2 sin(1.7x + 1) + 0.03 sin(3.3x - 2.5) and
    y -> y - 0.4 sin(0.4y) + 0.17 sin(1.3y + 3.5) + 0.02 sin(4.3y - 2.5), per
    coordinate (Czyz et al. [1]_); their derivatives are bounded below by 0.16
    and 0.53, so both are bijections of R and MI is unchanged.
    """

    task_name = "wiggly"

    def transform_x(self, a):
        return _wiggly_x(a)

    def transform_y(self, a):
        return _wiggly_y(a)


def _mixture_quantile(z: np.ndarray, weights, means) -> np.ndarray:
    """F^{-1}(Phi(z)) for the unit-variance normal mixture F, by bisection.

    Solves F(t) = Phi(z) for z <= 0 and 1 - F(t) = Phi(-z) for z > 0, so the
    upper tail keeps its precision; 200 halvings of [-60, 60] reach float64
    resolution. Strictly increasing in z.
    """
    z = np.asarray(z, dtype=np.float64)
    w = np.asarray(weights)[:, None]
    m = np.asarray(means)[:, None]
    flat = z.ravel()
    upper = flat > 0
    target = np.where(upper, ndtr(-flat), ndtr(flat))
    lo = np.full(flat.shape, -60.0)
    hi = np.full(flat.shape, 60.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        cdf = (w * ndtr(mid[None, :] - m)).sum(0)
        sf = (w * ndtr(m - mid[None, :])).sum(0)
        too_high = np.where(upper, sf < target, cdf > target)
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return (0.5 * (lo + hi)).reshape(z.shape)


class Bimodal(_PerVariableTransform):
    """Gaussian marginals mapped onto two-component normal mixtures (Czyz et al. [1]_).

    x -> F_x^{-1}(Phi(x)) with F_x the CDF of 0.3 N(0, 1) + 0.7 N(5, 1) and
    y -> F_y^{-1}(Phi(y)) with 0.5 N(-1, 1) + 0.5 N(3, 1), per coordinate:
    strictly increasing, so MI is that of the base task, while each marginal
    becomes bimodal. (Applied by the benchmark to the bivariate normal with
    correlation 0.75.)
    """

    task_name = "bimodal"
    MIX_X = ((0.3, 0.7), (0.0, 5.0))
    MIX_Y = ((0.5, 0.5), (-1.0, 3.0))

    def transform_x(self, a):
        return _mixture_quantile(a, *self.MIX_X)

    def transform_y(self, a):
        return _mixture_quantile(a, *self.MIX_Y)


class SwissRoll(_PerVariableTransform):
    """Embed a 1-D x in [0, 1] as a 2-D Swiss roll; y is left alone (Czyz et al. [1]_).

    x -> (t cos t, t sin t) / 21 with t = 1.5 pi (1 + 2x). The radius |t|
    grows with x, so the map is injective for x > -1/2 (t > 0) and MI is
    unchanged; the base task's x must have one coordinate with values in that
    range (default base ``additive_uniform``; the benchmark uses the normal-CDF
    image of a bivariate normal, pass that task object as ``base``).
    """

    task_name = "swiss_roll"

    def __init__(self, base: Any = "additive_uniform", **base_params: Any):
        super().__init__(base, **base_params)
        if self.discrete_x or self.dim_x != 1:
            raise ValueError(f"Task 'swiss_roll' needs a continuous 1-D x; the base task's x has "
                             f"{self.dim_x} dimension(s).")
        self.dim_x = 2

    def transform_x(self, a):
        if a.size and float(a.min()) <= -0.5:
            raise ValueError("Task 'swiss_roll' is injective only for x > -1/2; the base task "
                             f"produced x = {float(a.min()):.4g}. Use a base with x in [0, 1].")
        t = 1.5 * math.pi * (1.0 + 2.0 * a[:, 0])
        return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 21.0

    def transform_y(self, a):
        return a


class NormalizedSpiral(_PerVariableTransform):
    """The benchmark's spiral: rotate by an angle growing with the squared norm (Czyz et al. [1]_).

    x is rotated in the plane of its coordinates (0, 1) by the angle
    ``speed / dim_x * ||x||^2`` and y in the plane of its coordinates (1, 2) by
    ``speed / dim_y * ||y||^2`` (bmi's ``transform_spiral_task`` with
    ``normalize_speed=True``). A rotation keeps the norm, so the inverse is the
    rotation by minus the same angle: a smooth bijection, MI unchanged. (The
    older ``spiral`` task turns the plane (0, 1) of both at a fixed speed.)

    Parameters
    ----------
    base, **base_params : as for :class:`TransformedTask`; dim_x >= 2, dim_y >= 3.
    speed : float, default 1.0
    """

    task_name = "normalized_spiral"
    _param_order = ("speed",)

    def __init__(self, base: Any = "gaussian_sparse", speed: float = 1.0, **base_params: Any):
        super().__init__(base, **base_params)
        self.speed = speed
        validate_params("task 'normalized_spiral'", {"speed": speed},
                        {"speed": [Interval(float, None, None)]})
        if self.discrete_x or self.discrete_y or self.dim_x < 2 or self.dim_y < 3:
            raise ValueError("Task 'normalized_spiral' needs a continuous x with at least 2 and a "
                             f"continuous y with at least 3 dimensions; the base task has "
                             f"{self.dim_x} and {self.dim_y}.")

    @staticmethod
    def _rotate(a: np.ndarray, i: int, j: int, speed: float) -> np.ndarray:
        theta = speed * np.einsum("ij,ij->i", a, a)
        c, s = np.cos(theta), np.sin(theta)
        out = a.copy()
        out[:, i] = c * a[:, i] - s * a[:, j]
        out[:, j] = s * a[:, i] + c * a[:, j]
        return out

    def transform_x(self, a):
        return self._rotate(a, 0, 1, self.speed / self.dim_x)

    def transform_y(self, a):
        return self._rotate(a, 1, 2, self.speed / self.dim_y)


# --------------------------------------------------------------------------- #
# The suite
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SuiteTask:
    """One benchmark task: bmi's ``task_id`` and ``title``, the ibscope ``task`` and its group."""

    task_id: str
    title: str
    task: BaseTask

    @property
    def dim_group(self) -> str:
        """'1-2', '3', '5' or '25-50' by the larger of dim_x and dim_y."""
        d = max(self.task.dim_x, self.task.dim_y)
        return "1-2" if d <= 2 else ("3" if d == 3 else ("5" if d <= 5 else "25-50"))

    @property
    def mutual_information(self) -> float:
        return self.task.mutual_information


def _binormal(rho: float = 0.75) -> GaussianTask:
    from ._gaussian import GaussianDense

    return GaussianDense(dim_x=1, dim_y=1, rho=rho)


def _two_pair(d: int) -> GaussianSparse:
    # bmi's multinormal_2pair: latent-variable model with lambda = eta = 2, eps = 1 gives
    # unit variances and corr(x_i, y_i) = lambda^2 / (eps^2 + lambda^2) = 0.8 for i < 2
    return GaussianSparse(dim_x=d, dim_y=d, rho=0.8, n_interacting=2)


def beyond_normal_suite() -> list[SuiteTask]:
    """The 40 tasks of benchmark-mi v1 (Czyz et al. [1]_), in the order of bmi's task list.

    Parameters as published: bivariate normal with correlation 0.75; additive
    noise eps in {0.1, 0.75}; dense multinormals with all correlations 0.5
    (2, 3, 5, 25, 50 dims each); "2-pair" sparse multinormals with two pairs
    of correlation 0.8 (2, 3, 5, 25 dims); Student-t with identity dispersion
    (dims and dof (2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3), and 1 x 1
    with dof 1); and the transforms normal CDF, half-cube, spiral (speed 1),
    spiral after normal CDF, asinh, wiggly, bimodal and Swiss roll.
    """
    b = _binormal()
    uniform = NormalCDF(b)
    s11 = StudentT(dim=1, dof=1, rho=0.0)
    out = [
        SuiteTask("1v1-normal-0.75", "Bivariate normal 1 x 1", b),
        SuiteTask("normal_cdf-1v1-normal-0.75", "Normal CDF @ Bivariate normal 1 x 1", uniform),
        SuiteTask("1v1-additive-0.1", "Uniform 1 x 1 (additive noise=0.1)", AdditiveUniform(0.1)),
        SuiteTask("1v1-additive-0.75", "Uniform 1 x 1 (additive noise=0.75)", AdditiveUniform(0.75)),
        SuiteTask("1v1-bimodal-0.75", "Bimodal 1 x 1", Bimodal(_binormal())),
        SuiteTask("wiggly-1v1-normal-0.75", "Wiggly @ Bivariate normal 1 x 1", Wiggly(_binormal())),
        SuiteTask("half_cube-1v1-normal-0.75", "Half-cube @ Bivariate normal 1 x 1", HalfCube(_binormal())),
        SuiteTask("student-identity-1-1-1", "Student-t 1 x 1 (dof=1)", s11),
        SuiteTask("asinh-student-identity-1-1-1", "Asinh @ Student-t 1 x 1 (dof=1)",
                  Asinh(StudentT(dim=1, dof=1, rho=0.0))),
        SuiteTask("swissroll_x-normal_cdf-1v1-normal-0.75", "Swiss roll 2 x 1",
                  SwissRoll(NormalCDF(_binormal()))),
    ]
    for d in (2, 3, 5, 25, 50):
        out.append(SuiteTask(f"multinormal-dense-{d}-{d}-0.5", f"Multinormal {d} x {d} (dense)",
                             MultinormalDense(d, d, 0.5)))
    for d in (2, 3, 5, 25):
        out.append(SuiteTask(f"multinormal-sparse-{d}-{d}-2-2.0", f"Multinormal {d} x {d} (2-pair)",
                             _two_pair(d)))
    for d, dof in ((2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3)):
        out.append(SuiteTask(f"student-identity-{d}-{d}-{dof}", f"Student-t {d} x {d} (dof={dof})",
                             StudentT(dim=d, dof=dof, rho=0.0)))
    dims = (3, 5, 25)
    sparse_id = "multinormal-sparse-{d}-{d}-2-2.0"
    sparse_title = "Multinormal {d} x {d} (2-pair)"
    for prefix, title, make in (
        ("normal_cdf", "Normal CDF", lambda d: NormalCDF(_two_pair(d))),
        ("half_cube", "Half-cube", lambda d: HalfCube(_two_pair(d))),
        ("spiral", "Spiral", lambda d: NormalizedSpiral(_two_pair(d))),
        ("spiral-normal_cdf", "Spiral @ Normal CDF", lambda d: NormalizedSpiral(NormalCDF(_two_pair(d)))),
    ):
        for d in dims:
            out.append(SuiteTask(f"{prefix}-{sparse_id.format(d=d)}",
                                 f"{title} @ {sparse_title.format(d=d)}", make(d)))
    for d, dof in ((2, 1), (3, 2), (5, 2)):
        out.append(SuiteTask(f"asinh-student-identity-{d}-{d}-{dof}",
                             f"Asinh @ Student-t {d} x {d} (dof={dof})",
                             Asinh(StudentT(dim=d, dof=dof, rho=0.0))))
    return out
