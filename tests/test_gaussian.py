"""Gaussian (canonical-correlation) estimator and the subsampling confidence intervals."""

import math

import numpy as np
import pytest
import torch

import ibscope
from ibscope import estimators, tasks
from ibscope.estimators._gaussian import canonical_correlations


def test_canonical_correlations_recover_construction():
    t = tasks.get("gaussian_split", dim=3, mi=3.0, mixing_seed=4)
    x, y = t.sample(200_000, seed=0)
    rho = canonical_correlations(x, y)
    assert np.allclose(rho, t.rho, atol=5e-3)  # mixing is undone by CCA
    rho_t = canonical_correlations(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    assert np.allclose(rho, rho_t, atol=1e-12)


def test_equals_logdet_formula_on_the_sample():
    t = tasks.get("gaussian_dense", dim_x=3, dim_y=2, rho=0.2)
    x, y = t.sample(500, seed=1)
    c = np.cov(np.hstack([x, y]).T)
    logdet = 0.5 * (np.linalg.slogdet(c[:3, :3])[1] + np.linalg.slogdet(c[3:, 3:])[1] - np.linalg.slogdet(c)[1])
    assert estimators.get("gaussian", unit="nats").estimate(x, y) == pytest.approx(logdet, rel=1e-10)


def test_bias_correction_removes_small_sample_bias():
    t = tasks.get("gaussian_sparse", dim_x=4, dim_y=4, rho=0.6, n_interacting=2)
    plain, corr = [], []
    for s in range(60):
        x, y = t.sample(60, seed=s)
        plain.append(estimators.get("gaussian").estimate(x, y))
        corr.append(estimators.get("gaussian", bias_correction=True).estimate(x, y))
    truth = t.mutual_information
    assert np.mean(plain) - truth > 0.15  # plug-in is biased upward (~dx dy / 2n nats)
    assert abs(np.mean(corr) - truth) < 0.06


def test_torch_input_and_errors():
    t = tasks.get("gaussian_split", dim=2, mi=1.0)
    x, y = t.sample(300, seed=2)
    e = estimators.get("gaussian")
    assert e.estimate(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(e.estimate(x, y), rel=1e-12)
    forced = estimators.get("gaussian", device="cpu")  # the torch path
    assert forced.estimate(x, y) == pytest.approx(e.estimate(x, y), rel=1e-10)
    with pytest.raises(ValueError, match="infinite"):
        e.estimate(x, x @ np.array([[1.0, 2.0], [0.5, -1.0]]))
    with pytest.raises(ValueError, match="more samples than dimensions"):
        e.estimate(x[:4], y[:4])
    # a linearly dependent column is dropped (tests/test_auto.py checks the values against the truth)
    full = e.estimate(x, y)
    assert e.estimate(np.c_[x, x[:, 0] + x[:, 1]], y) == pytest.approx(full, rel=1e-9)
    assert e.flags_ == ("rank_deficient",) and len(e.columns_["x"]["dependent"]) == 1
    with pytest.raises(ValueError, match="does not support"):
        e.estimate(x, np.arange(300) % 2, discrete_y=True)


def test_interval_width_matches_sampling_spread():
    """The subsampling interval has the width of the estimator's sampling distribution."""
    t = tasks.get("gaussian_split", dim=2, mi=1.0)
    e = estimators.get("gaussian")
    values, widths, cover = [], [], []
    results = [e.estimate(*t.sample(1000, seed=s), ci=0.9, n_resamples=50, seed=s) for s in range(60)]
    values = np.array([r.value for r in results])
    widths = np.array([r.high - r.low for r in results])
    sd = values.std()
    assert np.mean(widths) / (2 * 1.645 * sd) == pytest.approx(1.0, abs=0.3)
    cover = np.mean([(r.low <= values.mean() <= r.high) for r in results])
    assert 0.75 <= cover <= 1.0


def test_interval_api_and_validation():
    t = tasks.get("gaussian_split", dim=1, mi=0.5)
    x, y = t.sample(400, seed=0)
    r = ibscope.mutual_information(x, y, method="ksg", ci=0.95, n_resamples=10, unit="nats")
    assert r.unit == "nats" and r.method == "ksg" and float(r) == r.value
    assert r.value == pytest.approx(ibscope.mutual_information(x, y, method="ksg", unit="nats"))
    assert "95% CI" in str(r) and r.as_dict()["n_resamples"] == 10
    e = estimators.get("ksg")
    with pytest.raises(ValueError, match="'level' parameter"):
        e.estimate_ci(x, y, level=1.5)
    with pytest.raises(ValueError, match="'n_resamples' parameter"):
        e.estimate(x, y, ci=0.9, n_resamples=1)
    with pytest.raises(ValueError, match="subsample"):
        e.estimate(x[:7], y[:7], ci=0.9, subsample=0.5)  # 3 rows cannot hold k=3 neighbours
    assert math.isfinite(e.estimate(x, y, ci=0.5, subsample=0.8, n_resamples=5).high)
