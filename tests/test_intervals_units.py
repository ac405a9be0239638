"""The one interval module (Student t, Welch, percentile bootstrap, Bonferroni) and the one unit helper.

Checked against scipy's own implementations and closed forms; the callers
(the claims' statistics, the minimum detectable effect, the subsampling
interval of the estimators) give the same values as the formulas they used
to carry themselves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ibscope import _intervals, _units


def test_t_quantile_is_the_two_sided_student_t_multiplier():
    assert _intervals.t_quantile(0.95, 9) == pytest.approx(2.2621571627, rel=1e-9)  # tables: t_{0.975, 9}
    assert _intervals.t_quantile(0.95, 1e9) == pytest.approx(1.959963985, rel=1e-7)  # -> normal quantile
    np.testing.assert_allclose(_intervals.t_quantile(0.9, np.array([2.0, 5.5])),
                               stats.t.ppf(0.95, [2.0, 5.5]), rtol=1e-12)


def test_welch_interval_matches_scipy_ttest_ind():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.0, 3.0, 12)
    d, lo, hi, dof = _intervals.welch_interval(a, b, 0.9)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert d == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-10)
    va, vb = a.var(ddof=1) / 7, b.var(ddof=1) / 12
    assert dof == pytest.approx((va + vb) ** 2 / (va ** 2 / 6 + vb ** 2 / 11), rel=1e-12)


def test_welch_interval_degenerate_cases():
    d, lo, hi, dof = _intervals.welch_interval([1.0], [0.0, 1.0])
    assert d == pytest.approx(0.5) and math.isnan(lo) and math.isnan(hi) and math.isnan(dof)
    d, lo, hi, _ = _intervals.welch_interval([2.0, 2.0, np.nan], [1.0, 1.0])
    assert d == lo == hi == 1.0  # zero spread: the point interval; NaN values left out
    with pytest.raises(ValueError, match="'level'"):
        _intervals.welch_interval([1.0, 2.0], [1.0, 2.0], 1.5)


def test_bonferroni_level():
    assert _intervals.bonferroni_level(0.95, 1) == pytest.approx(0.95)
    assert _intervals.bonferroni_level(0.95, 5) == pytest.approx(0.99)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="'m'"):
            _intervals.bonferroni_level(0.95, bad)


def test_bootstrap_interval_is_the_percentile_bootstrap():
    x = np.random.default_rng(1).normal(size=40)
    est, lo, hi, n = _intervals.bootstrap_interval(np.mean, x, level=0.9, n_resamples=500, seed=3)
    rng = np.random.default_rng(3)
    reps = [x[rng.integers(0, 40, 40)].mean() for _ in range(500)]
    assert (est, n) == (pytest.approx(x.mean()), 40)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.05, 0.95])), rel=1e-12)
    # the reproduce package's name is the same function
    from ibscope.reproduce import bootstrap_interval

    assert bootstrap_interval is _intervals.bootstrap_interval


def test_minimum_detectable_effect_formula():
    from ibscope.reproduce import minimum_detectable_effect

    se = 0.3
    n = 6
    t = stats.t.ppf(0.975, n - 1)
    mde = minimum_detectable_effect(1.0 - t * se, 1.0 + t * se, n, 0.95)
    assert mde == pytest.approx((t + stats.t.ppf(0.8, n - 1)) * se, rel=1e-10)


def test_subsample_interval_uses_the_t_quantile():
    from ibscope.estimators.base import subsample_interval

    reps = np.array([0.9, 1.1, 1.0, 1.3, 0.7])
    lo, hi = subsample_interval(1.0, reps, 100, 50, 0.95)
    half = stats.t.ppf(0.975, 4) * math.sqrt(50 / 50) * reps.std(ddof=1)
    assert (lo, hi) == pytest.approx((1.0 - half, 1.0 + half), rel=1e-12)


# --------------------------------------------------------------------------- units


def test_nats_to_keeps_the_type_and_converts():
    t = torch.tensor([math.log(2.0), 2 * math.log(2.0)], dtype=torch.float64, requires_grad=True)
    bits = _units.nats_to(t, "bits")
    assert isinstance(bits, torch.Tensor) and bits.requires_grad and bits.dtype == torch.float64
    np.testing.assert_allclose(bits.detach().numpy(), [1.0, 2.0], rtol=1e-15)
    assert _units.nats_to(t, "nats") is t
    a = np.array([1.0, 2.0])
    np.testing.assert_array_equal(_units.nats_to(a, "bits"), a / math.log(2.0))
    assert _units.nats_to(math.log(4.0), "bits") == pytest.approx(2.0)


def test_unit_scale_and_round_trip():
    assert _units.unit_scale("bits") == 1.0 / math.log(2.0) and _units.unit_scale("nats") == 1.0
    assert _units.to_nats(_units.from_nats(0.7, "bits"), "bits") == pytest.approx(0.7, rel=1e-15)
    for f in (_units.unit_scale, lambda u: _units.nats_to(1.0, u)):
        with pytest.raises(ValueError, match="'unit'"):
            f("bit")


def test_objectives_report_bits_through_the_unit_helper():
    """The CS divergence in bits is the one in nats over ln 2 (objectives route through _units.nats_to)."""
    from ibscope.objectives import _cs

    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    kx = torch.exp(-torch.cdist(x, x) ** 2)
    kz = torch.exp(-torch.cdist(x[:, :1], x[:, :1]) ** 2)
    nats = _cs.cs_qmi(kx, kz, unit="nats")
    assert float(_cs.cs_qmi(kx, kz, unit="bits")) == pytest.approx(float(nats) / math.log(2.0), rel=1e-12)
