"""Self-consistency checks of an MI estimate that need no ground truth.

Properties every value of I(X;Y) satisfies, checked on the data at hand by
re-estimating on transformed or resampled copies of (x, y):

* ``invertible`` (invariance): I(f(X); Y) = I(X;Y) for an injective f. Here
  f(x) = Q sinh(x): every (standardized) column goes through the
  strictly increasing map t -> sinh(t) (heavy tails), then, for dim >= 2, a
  Haar-random rotation Q mixes the columns. The two values must agree within
  the tolerance.
* ``lossy`` (data processing): I(g(X); Y) <= I(X;Y) for any g. Here g folds
  every column about its median, t -> |t - median|, which forgets the sign
  (non-injective). The value on (g(x), y) must not exceed the value on (x, y)
  by more than the tolerance.
* ``additivity``: for independent pairs (X1, Y1), (X2, Y2),
  I((X1, X2); (Y1, Y2)) = I(X1;Y1) + I(X2;Y2). The rows are split into two
  disjoint halves (independent draws of the same pair), the halves are
  placed side by side as one sample of the concatenated pair, and the value
  on it must match the sum of the values on the two halves.
* ``convergence``: values on random subsamples of n/4, n/2 and n rows; the
  change from n/2 to n must be within the tolerance (an estimate that still
  drifts with n is dominated by its finite-sample bias).

Tolerance of every check: ``max(atol, rtol * |I|, 2 * noise)`` bits, with I
the value on all rows and ``noise`` = |I(half 1) - I(half 2)| / 2, the spread
of the estimator between the two disjoint halves (an estimate of its
standard deviation at n rows, from two replicates: coarse, hence the floor
``atol``).

These are necessary conditions: an estimator can pass them all and still be
biased (e.g. a consistent underestimate that is stable in n and additive),
but a failure shows the value is not a property of the distribution alone.
Data-processing and additivity are the consistency tests of Abdelaleem,
Martini and Nemenman [1]_ and of the Beyond Normal benchmark's invariance
tasks [2]_.

References
----------
.. [1] E. Abdelaleem, K. M. Martini and I. Nemenman, "Accurate estimation of
   mutual information in high dimensional data", arXiv:2506.00330, 2025.
.. [2] P. Czyz, F. Grabowski, J. E. Vogt, N. Beerenwinkel and A. Marx,
   "Beyond normal: on the evaluation of mutual information estimators",
   NeurIPS 2023.
.. [3] T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2nd
   ed., 2006 (data-processing inequality, chain rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_random_state

__all__ = ["CHECKS", "CheckResult", "SelfConsistency", "self_consistency"]

CHECKS = ("invertible", "lossy", "additivity", "convergence")


@dataclass(frozen=True)
class CheckResult:
    """One self-consistency check.

    Attributes
    ----------
    check : str
        One of :data:`CHECKS`.
    passed : bool
    value : float
        The value under test, in bits: the value on f(x), on g(x), on the
        concatenated pair, or at n rows.
    reference : float
        What it is compared with, in bits: the value on (x, y) (invertible,
        lossy), the sum over the halves (additivity), the value at n/2 rows
        (convergence).
    difference : float
        value - reference, in bits.
    tolerance : float
        The allowed |difference| (one-sided for 'lossy': only an excess counts).
    detail : str
        One line for a report.
    """

    check: str
    passed: bool
    value: float
    reference: float
    difference: float
    tolerance: float
    detail: str


@dataclass(frozen=True)
class SelfConsistency:
    """The result of :func:`self_consistency`.

    Attributes
    ----------
    estimate : float
        The value on all rows, in bits.
    results : tuple of CheckResult
    noise : float
        Half the difference between the values on the two disjoint halves (bits).
    values : dict
        Every value computed, in bits, keyed by what it was computed on
        ('all', 'invertible', 'lossy', 'half_1', 'half_2', 'concatenated',
        'n/4', 'n/2').
    """

    estimate: float
    results: tuple[CheckResult, ...]
    noise: float
    values: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the failed checks."""
        return tuple(r.check for r in self.results if not r.passed)

    @property
    def flags(self) -> tuple[str, ...]:
        """``selfcheck_<name>`` for every failed check (for a ``flags`` column)."""
        return tuple(f"selfcheck_{c}" for c in self.failed)

    def __getitem__(self, check: str) -> CheckResult:
        for r in self.results:
            if r.check == check:
                return r
        raise KeyError(f"no check {check!r}; ran {[r.check for r in self.results]}")

    def to_frame(self):
        """A tidy DataFrame: one row per check, values in bits (column ``unit``)."""
        import pandas as pd

        rows = [{**r.__dict__, "unit": "bits"} for r in self.results]
        return pd.DataFrame(rows, columns=["check", "passed", "value", "reference", "difference",
                                           "tolerance", "unit", "detail"])


def _standardize(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def invertible_map(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The injective map of the ``invertible`` check (see the module docstring)."""
    z = _standardize(x)
    z = np.sinh(z)
    if z.shape[1] > 1:
        from scipy.stats import ortho_group

        z = z @ ortho_group.rvs(z.shape[1], random_state=rng).T
    return z


def lossy_map(x: np.ndarray) -> np.ndarray:
    """The non-injective map of the ``lossy`` check: every column folded about its median."""
    return np.abs(x - np.median(x, axis=0))


def _as_2d(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"'{name}' must be a 1-D or 2-D array; got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"'{name}' contains NaN or inf.")
    return arr


def _resolve(estimator: Any) -> Callable[[np.ndarray, np.ndarray], float]:
    """A function (x, y) -> bits from an estimator object, a registry name or a callable."""
    if isinstance(estimator, str):
        from . import get

        estimator = get(estimator)
    if hasattr(estimator, "estimate") and hasattr(estimator, "get_params"):
        est = estimator
        if est.get_params().get("unit", "bits") != "bits":
            est = type(est)(**{**est.get_params(), "unit": "bits"})
        return lambda a, b: float(est.estimate(a, b))
    if callable(estimator):
        return lambda a, b: float(estimator(a, b))
    raise TypeError("The 'estimator' argument of self_consistency must be an estimator, a "
                    f"registry name or a callable (x, y) -> bits. Got {type(estimator).__name__}.")


def self_consistency(estimator: Any, x: Any, y: Any, *, checks: Sequence[str] = CHECKS,
                     atol: float = 0.05, rtol: float = 0.1, seed: int = 0) -> SelfConsistency:
    """Run the self-consistency checks of an estimator on (x, y) (see the module docstring).

    Parameters
    ----------
    estimator : BaseMIEstimator, str or callable
        An estimator (its ``estimate`` is called; a ``unit='nats'`` one is
        rebuilt in bits), a registry name, or a function (x, y) -> bits.
        Continuous x and y.
    x, y : array-like of shape (n,) or (n, d)
        At least 32 rows (the smallest subsample, n/4, needs 8).
    checks : sequence of str, default all of ``CHECKS``
        Which checks to run ('invertible', 'lossy', 'additivity', 'convergence').
    atol : float >= 0, default 0.05
        Absolute floor of the tolerance, bits.
    rtol : float >= 0, default 0.1
        Relative tolerance (times the value on all rows).
    seed : int, default 0
        Seeds the rotation, the halves and the subsamples.

    Returns
    -------
    SelfConsistency
        ``.passed``, ``.failed``, ``.flags``, ``[check]``, ``.to_frame()``.

    Notes
    -----
    Cost: 4 estimates for the noise scale and the additivity check (all rows,
    two halves, the concatenation), plus 1 each for 'invertible' and 'lossy'
    and 2 for 'convergence' (8 in all).
    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"'x' and 'y' must have the same number of samples; got {x.shape[0]} "
                         f"and {y.shape[0]}.")
    n = x.shape[0]
    if n < 32:
        raise ValueError(f"self_consistency needs at least 32 samples (n/4 >= 8); got {n}.")
    checks = tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise ValueError(f"The 'checks' argument of self_consistency must be a non-empty subset "
                         f"of {CHECKS}. Got {checks!r}.")
    for name, v in (("atol", atol), ("rtol", rtol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"The '{name}' argument of self_consistency must be a float >= 0. "
                             f"Got {v!r}.")
    mi = _resolve(estimator)
    rng = check_random_state(seed)
    perm = rng.permutation(n)
    values: dict[str, float] = {"all": mi(x, y)}
    m = n // 2
    h1, h2 = perm[:m], perm[m:2 * m]
    values["half_1"] = mi(x[h1], y[h1])
    values["half_2"] = mi(x[h2], y[h2])
    noise = abs(values["half_1"] - values["half_2"]) / 2.0
    tol = max(atol, rtol * abs(values["all"]), 2.0 * noise)
    ref = values["all"]
    results = []
    if "invertible" in checks:
        v = values["invertible"] = mi(invertible_map(x, rng), y)
        ok = abs(v - ref) <= tol
        results.append(CheckResult("invertible", ok, v, ref, v - ref, tol,
                                   f"I(f(X);Y) = {v:.3f} vs I(X;Y) = {ref:.3f} bits for an "
                                   f"injective f: {'equal' if ok else 'differ'} within {tol:.3f}"))
    if "lossy" in checks:
        v = values["lossy"] = mi(lossy_map(x), y)
        ok = v - ref <= tol
        results.append(CheckResult("lossy", ok, v, ref, v - ref, tol,
                                   f"I(g(X);Y) = {v:.3f} vs I(X;Y) = {ref:.3f} bits for a lossy g: "
                                   + ("no excess" if ok else f"exceeds by more than {tol:.3f} "
                                      "(data-processing inequality violated)")))
    if "additivity" in checks:
        v = values["concatenated"] = mi(np.hstack([x[h1], x[h2]]), np.hstack([y[h1], y[h2]]))
        s = values["half_1"] + values["half_2"]
        t2 = max(tol, rtol * abs(s))
        ok = abs(v - s) <= t2
        results.append(CheckResult("additivity", ok, v, s, v - s, t2,
                                   f"I on two independent halves side by side = {v:.3f} vs the "
                                   f"sum {s:.3f} bits: {'additive' if ok else 'not additive'} "
                                   f"within {t2:.3f}"))
    if "convergence" in checks:
        q = values["n/4"] = mi(x[perm[:n // 4]], y[perm[:n // 4]])
        v2 = values["n/2"] = values["half_1"]
        ok = abs(ref - v2) <= tol
        results.append(CheckResult("convergence", ok, ref, v2, ref - v2, tol,
                                   f"n/4: {q:.3f}, n/2: {v2:.3f}, n: {ref:.3f} bits: "
                                   + ("stable" if ok else "still drifting") + f" within {tol:.3f}"))
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(f"the estimator returned a non-finite value: {values}")
    return SelfConsistency(ref, tuple(results), noise, values)
