"""Coverage of the subsampling intervals at a small scale (the full table: benchmarks/interval_coverage.py).

benchmarks/interval_coverage.py measured 0.94-0.975 coverage of E[theta_n] at nominal
0.95 on 8 (task, estimator, n) cases with 200 repetitions each
(benchmarks/RESULTS.md). Here: 40 repetitions of the same protocol on one
cheap case, with a binomial tolerance band, and the interval width against
the spread of the estimates over independent datasets.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from ibscope import estimators, tasks
from ibscope.estimators.base import subsample_interval

REPS = 40


def _coverage(name: str, n: int, subsample: float, **params) -> tuple[float, float]:
    task = tasks.get("gaussian_split", dim=1, mi=1.0)
    est = estimators.get(name, **params)
    runs = [est.estimate(*task.sample(n, seed=r), ci=0.95, n_resamples=30, subsample=subsample, seed=r)
            for r in range(REPS)]
    extra = [est.estimate(*task.sample(n, seed=1000 + i)) for i in range(4 * REPS)]
    values = np.array([r.value for r in runs] + extra)
    expect, sd = values.mean(), values.std(ddof=1)
    covered = np.mean([r.low <= expect <= r.high for r in runs])
    width = np.mean([r.high - r.low for r in runs]) / (2 * 1.96 * sd)
    return float(covered), float(width)


def _band() -> tuple[float, float]:
    """Coverage fractions outside which 40 Bernoulli(0.95) draws fall with probability < 0.2%."""
    return binom.ppf(0.001, REPS, 0.95) / REPS, binom.ppf(0.999, REPS, 0.95) / REPS


def test_ksg_interval_covers_the_expectation():
    covered, width = _coverage("ksg", 400, 0.5, n_jobs=1)
    lo, hi = _band()
    assert lo <= covered <= hi, covered
    assert 0.75 < width < 1.35, width  # measured 1.12 at n = 1000 with 50 subsamples


def test_rate_correction_with_small_subsamples():
    """subsample = 0.2: c = sqrt(m / (n - m)) = 0.5 must shrink the subsample spread to theta_n's."""
    covered, width = _coverage("gaussian", 500, 0.2)
    lo, _ = _band()
    assert covered >= lo, covered
    assert 0.75 < width < 1.35, width  # without the factor c the width would double


def test_interval_formula():
    reps = np.array([0.9, 1.0, 1.1, 1.0])
    low, high = subsample_interval(2.0, reps, n=100, m=50, level=0.95)
    half = 3.182446305284263 * 1.0 * reps.std(ddof=1)  # t_{3}(0.975), c = 1 for m = n/2
    assert math.isclose(low, 2.0 - half, rel_tol=1e-9) and math.isclose(high, 2.0 + half, rel_tol=1e-9)
