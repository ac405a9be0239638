"""Base class and registry of mutual-information estimators.

Every estimator follows one small interface (after scikit-learn and bmi):

* the constructor only stores and validates its parameters;
* ``estimate(x, y, *, discrete_x=False, discrete_y=False) -> float`` returns
  I(X;Y) in ``unit`` ('bits' by default, 'nats' on request);
* ``get_params()`` returns the settings, to be logged next to every result;
* estimators that exploit the structure of a deterministic network (binning,
  KDE with added noise) also offer ``plane(t, y) -> (I(X;T), I(T;Y))``.

Subclasses implement ``_estimate_nats(x, y, discrete_x, discrete_y)`` on
validated 2-D inputs and declare which discrete/continuous combinations they
support in ``supports``.

Uncertainty: ``estimate(x, y, ci=0.95)`` (or ``estimate_ci``) returns an
:class:`MIEstimate` with a confidence interval from subsampling without
replacement with the finite-population rate correction (see
:meth:`BaseMIEstimator.estimate_ci`), for every estimator.

References
----------
.. [1] D. N. Politis, J. P. Romano and M. Wolf, "Subsampling", Springer, 1999.
.. [2] J. Shao and C. F. J. Wu, "A general theory for jackknife variance
   estimation", Annals of Statistics 17(3), 1989 (delete-d jackknife).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from .._units import check_unit, from_nats
from .._validation import (
    BOOLEAN,
    Interval,
    Options,
    check_random_state,
    check_xy,
    is_torch,
    validate_params,
)

CONTINUOUS, DISCRETE = "continuous", "discrete"
ALL_KINDS = frozenset(
    {(CONTINUOUS, CONTINUOUS), (CONTINUOUS, DISCRETE), (DISCRETE, CONTINUOUS), (DISCRETE, DISCRETE)}
)


@dataclass(frozen=True)
class MIEstimate:
    """An MI estimate with a confidence interval.

    Attributes
    ----------
    value : float
        The estimate on all samples.
    low, high : float
        Interval bounds (``low <= value <= high`` is typical but not enforced
        by the scheme; both are clipped at 0 because I(X;Y) >= 0).
    level : float
        Nominal coverage, e.g. 0.95.
    unit : str
        'bits' or 'nats'.
    method : str
        Registry name of the estimator.
    n_resamples : int
        Number of subsamples used.
    subsample_size : int
        Size m of each subsample.
    """

    value: float
    low: float
    high: float
    level: float
    unit: str
    method: str
    n_resamples: int
    subsample_size: int = 0

    def __float__(self) -> float:
        return float(self.value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.value:.4g} {self.unit} [{self.low:.4g}, {self.high:.4g}] "
                f"({self.level:.0%} CI, {self.method}, {self.n_resamples} subsamples)")


def subsample_interval(value: float, replicates: np.ndarray, n: int, m: int, level: float
                       ) -> tuple[float, float]:
    """Rate-corrected subsampling interval around ``value`` (see ``estimate_ci``)."""
    dev = np.asarray(replicates, dtype=np.float64)
    dev = dev - dev.mean()
    scale = math.sqrt(m / (n - m))
    alpha = 1.0 - level
    q_lo, q_hi = np.quantile(dev, [alpha / 2.0, 1.0 - alpha / 2.0])
    return value - scale * q_hi, value - scale * q_lo


class BaseMIEstimator:
    """Common machinery of the ibscope MI estimators.

    Class attributes a subclass sets:

    name : str
        Registry name.
    bound : {"upper", "lower", None}
        Direction of the estimator's guaranteed bias, if any (None: consistent
        estimator without a bound guarantee).
    supports : frozenset of (kind_x, kind_y)
        Which combinations of 'continuous'/'discrete' inputs are accepted.
    keep_torch : bool
        If True torch inputs reach ``_estimate_nats`` as tensors (so the
        computation can run on their device); otherwise everything is numpy.
    min_samples : int
        Smallest sample size the method accepts.
    """

    name: ClassVar[str] = ""
    bound: ClassVar[str | None] = None
    supports: ClassVar[frozenset] = ALL_KINDS
    keep_torch: ClassVar[bool] = False
    min_samples: ClassVar[int] = 2
    _constraints: ClassVar[dict[str, list]] = {}
    _base_constraints: ClassVar[dict[str, list]] = {"unit": [Options(("bits", "nats"))]}

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The estimator's settings (constructor arguments), for logging with results."""
        return {k: getattr(self, k) for k in self._param_names()}

    def _check_params(self) -> None:
        constraints = {**self._base_constraints, **self._constraints}
        validate_params(type(self).__name__, self.get_params(), constraints)
        check_unit(self.unit)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- estimate
    def _check_support(self, discrete_x: bool, discrete_y: bool) -> None:
        kinds = (DISCRETE if discrete_x else CONTINUOUS, DISCRETE if discrete_y else CONTINUOUS)
        if kinds not in self.supports:
            ok = ", ".join(f"x {a} / y {b}" for a, b in sorted(self.supports))
            raise ValueError(
                f"{type(self).__name__} does not support x {kinds[0]} with y {kinds[1]} "
                f"(supported: {ok}). Choose another estimator or change 'discrete_x'/'discrete_y'."
            )

    def _validate_xy(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool) -> tuple[Any, Any]:
        validate_params(
            type(self).__name__ + ".estimate",
            {"discrete_x": discrete_x, "discrete_y": discrete_y},
            {"discrete_x": [BOOLEAN], "discrete_y": [BOOLEAN]},
        )
        self._check_support(bool(discrete_x), bool(discrete_y))
        return check_xy(
            x, y,
            discrete_x=bool(discrete_x), discrete_y=bool(discrete_y),
            min_samples=self.min_samples, keep_torch=self.keep_torch,
        )

    def estimate(self, x: Any, y: Any, *, discrete_x: bool = False, discrete_y: bool = False,
                 ci: float | None = None, n_resamples: int = 50, subsample: float = 0.5,
                 seed: Any = 0) -> Any:
        """Estimate I(X;Y) in ``self.unit``.

        Parameters
        ----------
        x, y : array-like or torch.Tensor of shape (n,) or (n, d)
            Paired samples (row i of ``x`` goes with row i of ``y``).
        discrete_x, discrete_y : bool
            Declare a variable discrete (integer-valued symbols). Nothing is
            guessed: a float array declared discrete must hold integers.
        ci : float in (0, 1) or None, default None
            If given, return an :class:`MIEstimate` with a confidence interval
            of this level (see :meth:`estimate_ci`); otherwise a float.
        n_resamples, subsample, seed
            Passed to :meth:`estimate_ci` when ``ci`` is given.

        Returns
        -------
        float, or MIEstimate when ``ci`` is given.
        """
        if ci is not None:
            return self.estimate_ci(x, y, discrete_x=discrete_x, discrete_y=discrete_y, level=ci,
                                    n_resamples=n_resamples, subsample=subsample, seed=seed)
        xa, ya = self._validate_xy(x, y, discrete_x, discrete_y)
        nats = float(self._estimate_nats(xa, ya, bool(discrete_x), bool(discrete_y)))
        return self._finish(nats)

    def estimate_ci(self, x: Any, y: Any, *, discrete_x: bool = False, discrete_y: bool = False,
                    level: float = 0.95, n_resamples: int = 50, subsample: float = 0.5,
                    seed: Any = 0) -> MIEstimate:
        """The estimate with a subsampling confidence interval.

        Scheme (subsampling without replacement with the finite-population
        rate correction, i.e. the delete-d jackknife of Shao & Wu [2]_ read as
        a distribution, cf. Politis, Romano & Wolf [1]_):

        1. theta_n = estimate on all n rows;
        2. draw ``n_resamples`` subsets of m = floor(subsample * n) distinct
           rows, theta_m^b = estimate on each;
        3. with d_b = theta_m^b - mean_b(theta_m^b) and c = sqrt(m / (n - m)),
           the interval is [theta_n - c q_{1-a/2}(d), theta_n - c q_{a/2}(d)],
           a = 1 - level, clipped at 0.

        Why this scheme: the bootstrap (resampling *with* replacement)
        duplicates rows, which kNN and KDE estimators read as zero distances,
        biasing every replicate upward; subsets of distinct rows keep the
        data's geometry. For an asymptotically normal statistic with variance
        s^2/n, the spread of a half-sample estimate around the full one is
        s^2 (n - m) / (m n), hence the factor c (c = 1 for m = n/2; c ->
        sqrt(m/n), classical subsampling, for m << n). Centring on the mean of
        the replicates removes the difference between the estimator's bias at
        m and at n, so the interval describes the sampling variability of
        theta_n around its expectation: it does NOT cover the estimator's own
        bias (e.g. KSG's underestimation at high MI; see each docstring).

        Parameters
        ----------
        level : float in (0, 1), default 0.95
        n_resamples : int >= 2, default 50
        subsample : float in (0, 1), default 0.5
            Fraction of rows in each subsample.
        seed : int, numpy Generator or None, default 0
            Seed of the subsets (the estimator's own randomness is governed
            by its parameters).

        Returns
        -------
        MIEstimate
        """
        validate_params(
            type(self).__name__ + ".estimate_ci",
            {"level": level, "n_resamples": n_resamples, "subsample": subsample},
            {"level": [Interval(float, 0, 1, closed="neither")],
             "n_resamples": [Interval(int, 2, None)],
             "subsample": [Interval(float, 0, 1, closed="neither")]},
        )
        rng = check_random_state(seed)
        xa, ya = self._validate_xy(x, y, discrete_x, discrete_y)
        dx, dy = bool(discrete_x), bool(discrete_y)
        value = self._finish(float(self._estimate_nats(xa, ya, dx, dy)))
        n = xa.shape[0]
        m = int(math.floor(subsample * n))
        if m < max(self.min_samples, 2) or m >= n:
            raise ValueError(
                f"The subsample size floor(subsample * n) = {m} for n = {n} is too small for "
                f"{type(self).__name__}; pass more samples or a larger 'subsample'."
            )
        reps = np.empty(n_resamples)
        for b in range(n_resamples):
            idx = np.sort(rng.choice(n, size=m, replace=False))
            if is_torch(xa) or is_torch(ya):
                import torch

                tidx = torch.from_numpy(idx)
                xs = xa[tidx.to(xa.device)] if is_torch(xa) else xa[idx]
                ys = ya[tidx.to(ya.device)] if is_torch(ya) else ya[idx]
            else:
                xs, ys = xa[idx], ya[idx]
            try:
                reps[b] = self._finish(float(self._estimate_nats(xs, ys, dx, dy)))
            except ValueError as e:
                raise ValueError(f"In a subsample of {m} of the {n} rows (for the confidence "
                                 f"interval): {e}") from None
        low, high = subsample_interval(value, reps, n, m, level)
        return MIEstimate(value=value, low=max(low, 0.0), high=max(high, 0.0), level=float(level),
                          unit=self.unit, method=self.name or type(self).__name__,
                          n_resamples=int(n_resamples), subsample_size=m)

    def plane_ci(self, t: Any, y: Any, *, level: float = 0.95, n_resamples: int = 50,
                 subsample: float = 0.5, seed: Any = 0, **paired: Any) -> tuple[MIEstimate, MIEstimate]:
        """Both information-plane coordinates with subsampling confidence intervals.

        The one implementation behind ``plane(t, y, ci=level)`` of every plane
        estimator (binning, adaptive binning, the KDE bounds): the same scheme
        as :meth:`estimate_ci` (subsets of m = floor(subsample * n) distinct
        rows, the rate-corrected interval of :func:`subsample_interval`), with
        one set of subsets shared by I(X;T) and I(T;Y), so the two intervals
        describe the same resampled layers.

        Parameters
        ----------
        t, y
            As for ``plane``.
        level, n_resamples, subsample, seed
            As for :meth:`estimate_ci`.
        **paired
            Further row-aligned arguments of ``plane`` (e.g. binning's ``x``),
            subsampled with the same rows; None is passed through.

        Returns
        -------
        (MIEstimate, MIEstimate)
            I(X;T) and I(T;Y) in ``self.unit``. Each estimate's ``flags`` (when
            the MIEstimate has that field) are not set here; read the
            estimator's ``flags_`` after the call.
        """
        validate_params(
            type(self).__name__ + ".plane",
            {"ci": level, "n_resamples": n_resamples, "subsample": subsample},
            {"ci": [Interval(float, 0, 1, closed="neither")],
             "n_resamples": [Interval(int, 2, None)],
             "subsample": [Interval(float, 0, 1, closed="neither")]},
        )
        plane = getattr(self, "plane", None)
        if plane is None:
            raise TypeError(f"{type(self).__name__} has no plane(); use estimate_ci for each coordinate.")
        rng = check_random_state(seed)
        value = plane(t, y, **paired)
        n = int(t.shape[0]) if hasattr(t, "shape") else len(t)
        m = int(math.floor(subsample * n))
        if m < max(self.min_samples, 2) or m >= n:
            raise ValueError(
                f"The subsample size floor(subsample * n) = {m} for n = {n} is too small for "
                f"{type(self).__name__}; pass more samples or a larger 'subsample'."
            )
        reps = np.empty((n_resamples, 2))
        for b in range(n_resamples):
            idx = np.sort(rng.choice(n, size=m, replace=False))
            sub = {k: None if v is None else _take_rows(v, idx) for k, v in paired.items()}
            try:
                reps[b] = plane(_take_rows(t, idx), _take_rows(y, idx), **sub)
            except ValueError as e:
                raise ValueError(f"In a subsample of {m} of the {n} rows (for the confidence "
                                 f"interval): {e}") from None
        out = []
        for j in range(2):
            low, high = subsample_interval(float(value[j]), reps[:, j], n, m, level)
            out.append(MIEstimate(value=float(value[j]), low=max(low, 0.0), high=max(high, 0.0),
                                  level=float(level), unit=self.unit,
                                  method=self.name or type(self).__name__,
                                  n_resamples=int(n_resamples), subsample_size=m))
        return out[0], out[1]

    def _finish(self, nats: float) -> float:
        if not math.isfinite(nats):
            raise FloatingPointError(
                f"{type(self).__name__} produced a non-finite estimate ({nats}); "
                f"check the input scale and the estimator's parameters {self.get_params()}."
            )
        return from_nats(nats, self.unit)

    def _estimate_nats(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool) -> float:
        raise NotImplementedError  # every registered subclass implements this


def _take_rows(a: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a numpy array, a torch tensor (on its device) or a sequence."""
    if is_torch(a):
        import torch

        return a[torch.from_numpy(idx).to(a.device)]
    return np.asarray(a)[idx]
