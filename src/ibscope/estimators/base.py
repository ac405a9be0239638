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

Diagnostics: every ``estimate``/``estimate_ci``/``plane`` call stores the
named flags of its result in ``estimator.flags_`` (a tuple of names from
:data:`ibscope.estimators.FLAG_DESCRIPTIONS`, empty when healthy; also
``MIEstimate.flags``) and warns once per run per (estimator, flag); see
:mod:`ibscope.estimators._diagnostics`. A subclass declares which checks
apply in ``diagnostics`` or overrides ``_ceilings_nats`` / ``_extra_flags``.

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
from . import _diagnostics as diag

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
        Number of subsamples used (0 when none were drawn: saturated value).
    subsample_size : int
        Size m of each subsample.
    flags : tuple of str
        Diagnostic flags of the value (see ``FLAG_DESCRIPTIONS``); () when
        healthy. A saturated value (``saturated_xt``, ``saturated_ty``,
        ``saturated_bins``, ``ceiling_infonce``) has ``low = high = NaN``:
        it is set by the sample size or the estimator's cap, so no interval
        computed from the data describes it.
    """

    value: float
    low: float
    high: float
    level: float
    unit: str
    method: str
    n_resamples: int
    subsample_size: int = 0
    flags: tuple[str, ...] = ()

    def __float__(self) -> float:
        return float(self.value)

    @property
    def saturated(self) -> bool:
        """True when a saturation flag is set (then the bounds are NaN)."""
        return any(f in diag.SATURATION_FLAGS for f in self.flags)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict; ``flags`` as the table string ('a;b', '' when healthy)."""
        d = asdict(self)
        d["flags"] = diag.format_flags(self.flags)
        return d

    def __str__(self) -> str:
        if math.isnan(self.low) or math.isnan(self.high):
            interval = "[no interval]"
        else:
            interval = f"[{self.low:.4g}, {self.high:.4g}]"
        flags = f"; flags: {diag.format_flags(self.flags)}" if self.flags else ""
        return (f"{self.value:.4g} {self.unit} {interval} "
                f"({self.level:.0%} CI, {self.method}, {self.n_resamples} subsamples{flags})")


def subsample_interval(value: float, replicates: np.ndarray, n: int, m: int, level: float
                       ) -> tuple[float, float]:
    """Rate-corrected subsampling interval around ``value`` (see ``estimate_ci``).

    ``value +- t_{B-1}(1 - a/2) * sqrt(m / (n - m)) * sd(replicates)`` with
    B replicates, a = 1 - level.
    """
    from .._intervals import t_quantile

    reps = np.asarray(replicates, dtype=np.float64)
    half = (float(t_quantile(level, reps.size - 1))
            * math.sqrt(m / (n - m)) * float(reps.std(ddof=1)))
    return value - half, value + half


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
    diagnostics : frozenset of str
        Generic checks that apply (see :meth:`_ceilings_nats` and
        :meth:`_extra_flags`): 'labels' (the value is capped by the plug-in
        entropy of a declared-discrete variable: ``saturated_ty``), 'knn'
        (``few_samples_for_dim`` and ``duplicates``).

    Attributes
    ----------
    flags_ : tuple of str
        Diagnostic flags of the last ``estimate``/``estimate_ci``/``plane``
        call (of the full-data value), () when healthy.
    """

    name: ClassVar[str] = ""
    bound: ClassVar[str | None] = None
    supports: ClassVar[frozenset] = ALL_KINDS
    keep_torch: ClassVar[bool] = False
    min_samples: ClassVar[int] = 2
    diagnostics: ClassVar[frozenset] = frozenset()
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
        value = self._finish(nats)
        self._record_flags(self._diagnose(xa, ya, bool(discrete_x), bool(discrete_y), nats))
        return value

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
        3. with s the standard deviation of the theta_m^b and c = sqrt(m / (n - m)),
           the interval is theta_n +- t_{B-1}(1 - a/2) c s (B = ``n_resamples``,
           a = 1 - level, t the Student quantile), clipped at 0.

        Why this scheme: the bootstrap (resampling *with* replacement)
        duplicates rows, which kNN and KDE estimators read as zero distances,
        biasing every replicate upward; subsets of distinct rows keep the
        data's geometry. For an asymptotically normal statistic with variance
        s^2/n, the spread of a half-sample estimate around the full one is
        s^2 (n - m) / (m n), hence the factor c (c = 1 for m = n/2; c ->
        sqrt(m/n), classical subsampling, for m << n). Only the spread of the
        replicates is used, not their centre, so the difference between the
        estimator's bias at m and at n drops out and the interval describes
        the sampling variability of theta_n around its expectation: it does
        NOT cover the estimator's own bias (e.g. KSG's underestimation at high
        MI; see each docstring). Why the standard deviation and not the
        replicates' 2.5% / 97.5% quantiles (the previous scheme): with
        B = 50 the empirical extreme quantiles sit inside the true ones on
        average, and the percentile interval under-covered (0.89 at nominal
        0.95 for KSG on a 2+2-dim Gaussian, n = 2000); the t quantile also
        accounts for the noise of s. Coverage measured on 8 tasks x
        estimators with 200 repetitions each: benchmarks/interval_coverage.py,
        table in benchmarks/RESULTS.md.

        Saturated values: when the full-data value is within tolerance of a
        ceiling of the estimator (log N, H(Y), log batch; see
        ``FLAG_DESCRIPTIONS``), or more than half of the subsamples are at
        their own ceiling, the value is set by the cap rather than by the
        data: the interval is returned as ``low = high = NaN`` with the flag
        in ``MIEstimate.flags`` (no misleading zero-width interval), and in
        the first case no subsamples are drawn (``n_resamples = 0``).

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
        nats = float(self._estimate_nats(xa, ya, dx, dy))
        value = self._finish(nats)
        flags = self._diagnose(xa, ya, dx, dy, nats)
        n = xa.shape[0]
        m = int(math.floor(subsample * n))
        if m < max(self.min_samples, 2) or m >= n:
            raise ValueError(
                f"The subsample size floor(subsample * n) = {m} for n = {n} is too small for "
                f"{type(self).__name__}; pass more samples or a larger 'subsample'."
            )
        method = self.name or type(self).__name__
        if any(f in diag.SATURATION_FLAGS for f in flags):  # no interval describes a capped value
            self._record_flags(flags)
            return MIEstimate(value=value, low=math.nan, high=math.nan, level=float(level),
                              unit=self.unit, method=method, n_resamples=0, subsample_size=0,
                              flags=flags)
        reps = np.empty(n_resamples)
        n_saturated: dict[str, int] = {}
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
                rep_nats = float(self._estimate_nats(xs, ys, dx, dy))
                reps[b] = self._finish(rep_nats)
            except ValueError as e:
                raise ValueError(f"In a subsample of {m} of the {n} rows (for the confidence "
                                 f"interval): {e}") from None
            for f in diag.saturation_flags(rep_nats, self._ceilings_nats(xs, ys, dx, dy)):
                n_saturated[f] = n_saturated.get(f, 0) + 1
        # Most subsamples at their own (lower) ceiling: their spread is the ceiling's,
        # not the data's, so the interval would be too narrow. Flag and drop it.
        capped = tuple(f for f, c in n_saturated.items() if 2 * c > n_resamples and f not in flags)
        if capped:
            flags = flags + capped
            self._record_flags(flags)
            return MIEstimate(value=value, low=math.nan, high=math.nan, level=float(level),
                              unit=self.unit, method=method, n_resamples=int(n_resamples),
                              subsample_size=m, flags=flags)
        self._record_flags(flags)
        low, high = subsample_interval(value, reps, n, m, level)
        return MIEstimate(value=value, low=max(low, 0.0), high=max(high, 0.0), level=float(level),
                          unit=self.unit, method=method, n_resamples=int(n_resamples),
                          subsample_size=m, flags=flags)

    # ------------------------------------------------------------- diagnostics
    def ceilings(self, x: Any, y: Any, *, discrete_x: bool = False, discrete_y: bool = False
                 ) -> dict[str, float]:
        """The caps of this estimator's value on (x, y), in ``self.unit``, keyed by flag.

        E.g. ``{'saturated_xt': log2 N, 'saturated_ty': H(Y)}`` for binning
        with labels, ``{'ceiling_infonce': log2 b}`` for InfoNCE; ``{}`` for
        estimators without a cap (Gaussian, continuous KSG). A value within
        tolerance of a cap gets that flag (see ``FLAG_DESCRIPTIONS``).
        """
        xa, ya = self._validate_xy(x, y, discrete_x, discrete_y)
        caps = self._ceilings_nats(xa, ya, bool(discrete_x), bool(discrete_y))
        return {k: from_nats(v, self.unit) for k, v in caps.items() if v is not None}

    def _ceilings_nats(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool
                       ) -> dict[str, float | None]:
        """Ceilings of the value on these inputs, in nats, keyed by the flag each one raises.

        Default: with 'labels' in ``diagnostics``, the plug-in entropy of each
        declared-discrete variable (``saturated_ty``). Subclasses with other
        caps (log N, log batch) extend this.
        """
        if "labels" not in self.diagnostics:
            return {}
        ents = [diag.label_entropy_nats(a) for a, d in ((x, discrete_x), (y, discrete_y)) if d]
        return {"saturated_ty": min(ents)} if ents else {}

    def _extra_flags(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool) -> tuple[str, ...]:
        """Non-saturation flags of an estimate on these inputs (called after ``_estimate_nats``)."""
        if "knn" not in self.diagnostics:
            return ()
        return diag.knn_flags(x, y, discrete_x, discrete_y, noise=float(getattr(self, "noise", 0.0)))

    def _diagnose(self, x: Any, y: Any, discrete_x: bool, discrete_y: bool, nats: float
                  ) -> tuple[str, ...]:
        """All flags of the value ``nats`` just estimated on (x, y)."""
        flags = diag.saturation_flags(nats, self._ceilings_nats(x, y, discrete_x, discrete_y))
        return tuple(dict.fromkeys(flags + tuple(self._extra_flags(x, y, discrete_x, discrete_y))))

    def _record_flags(self, flags: tuple[str, ...]) -> None:
        """Store ``flags`` as ``flags_`` and warn (once per run) about new ones."""
        self.flags_ = tuple(flags)
        if flags:
            diag.warn_flags(self.name or type(self).__name__, flags, stacklevel=4)

    def _plane_flags(self, i_xt_nats: float, i_ty_nats: float, n: int, y: Any,
                     x: Any = None) -> tuple[str, ...]:
        """Flags of an information-plane pair: I(X;T) against log N (or H(X)), I(T;Y) against H(Y)."""
        cap_xt = math.log(n) if x is None else diag.label_entropy_nats(x)
        flags = diag.saturation_flags(i_xt_nats, {"saturated_xt": cap_xt})
        flags += diag.saturation_flags(i_ty_nats, {"saturated_ty": diag.label_entropy_nats(y)})
        return flags

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
            I(X;T) and I(T;Y) in ``self.unit``. Each carries the diagnostic
            flags of its coordinate (``saturated_xt`` for I(X;T),
            ``saturated_ty`` for I(T;Y), the others for both), and
            ``flags_`` holds those of the call on all rows. A coordinate at its
            ceiling gets no interval (NaN bounds, as in :meth:`estimate_ci`):
            a capped value has no sampling spread to describe.
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
        flags = tuple(getattr(self, "flags_", ()))
        per_coord = [tuple(f for f in flags if f != "saturated_ty"), tuple(f for f in flags if f != "saturated_xt")]
        n = int(t.shape[0]) if hasattr(t, "shape") else len(t)
        m = int(math.floor(subsample * n))
        if m < max(self.min_samples, 2) or m >= n:
            raise ValueError(
                f"The subsample size floor(subsample * n) = {m} for n = {n} is too small for "
                f"{type(self).__name__}; pass more samples or a larger 'subsample'."
            )
        saturated = [any(f in diag.SATURATION_FLAGS for f in fl) for fl in per_coord]
        reps = np.empty((n_resamples, 2))
        if not all(saturated):
            for b in range(n_resamples):
                idx = np.sort(rng.choice(n, size=m, replace=False))
                sub = {k: None if v is None else _take_rows(v, idx) for k, v in paired.items()}
                try:
                    reps[b] = plane(_take_rows(t, idx), _take_rows(y, idx), **sub)
                except ValueError as e:
                    raise ValueError(f"In a subsample of {m} of the {n} rows (for the confidence "
                                     f"interval): {e}") from None
            self.flags_ = flags  # the subsamples' own calls overwrote them
        out = []
        for j in range(2):
            if saturated[j]:
                low = high = math.nan
            else:
                low, high = subsample_interval(float(value[j]), reps[:, j], n, m, level)
                low, high = max(low, 0.0), max(high, 0.0)
            out.append(MIEstimate(value=float(value[j]), low=low, high=high,
                                  level=float(level), unit=self.unit,
                                  method=self.name or type(self).__name__,
                                  n_resamples=0 if saturated[j] else int(n_resamples),
                                  subsample_size=0 if saturated[j] else m, flags=per_coord[j]))
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
