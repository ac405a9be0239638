"""Gaussian-copula MI (Ince et al. 2017) and the bias-corrected discrete entropies."""

import math

import numpy as np
import pytest
from scipy.special import ndtr

from ibscope import estimators, tasks
from ibscope.estimators._copula import copula_normal_scores
from ibscope.estimators._discrete import entropy_from_counts


@pytest.mark.parametrize("name,params", [
    ("gaussian_sparse", dict(dim_x=3, dim_y=3, rho=0.8, n_interacting=2)),
    ("multinormal_dense", dict(dim_x=5, dim_y=5, off_diag=0.5)),
    ("gaussian_split", dict(dim=2, mi=0.0)),
])
def test_exact_on_gaussians(name, params):
    t = tasks.get(name, **params)
    x, y = t.sample(20_000, seed=0)
    v = estimators.get("gaussian_copula").estimate(x, y)
    assert v == pytest.approx(t.mutual_information, abs=0.03)  # sd ~0.01 at this n


def test_invariant_to_monotone_maps():
    t = tasks.get("gaussian_sparse", dim_x=3, dim_y=2, rho=0.7, n_interacting=2)
    x, y = t.sample(3000, seed=1)
    e = estimators.get("gaussian_copula")
    v = e.estimate(x, y)
    xm = np.column_stack([np.exp(x[:, 0]), x[:, 1] ** 3, ndtr(x[:, 2])])
    ym = np.column_stack([np.arcsinh(5 * y[:, 0]) - 4, np.tanh(y[:, 1])])
    assert np.array_equal(copula_normal_scores(x), copula_normal_scores(xm))  # ranks unchanged
    assert e.estimate(xm, ym) == pytest.approx(v, rel=1e-12)
    # ... while the plain Gaussian estimate moves
    assert abs(estimators.get("gaussian").estimate(xm, ym) - v) > 0.05


def test_lower_bound_in_one_dimension_and_bias_correction():
    t = tasks.get("student_t", dim=1, dof=1.0, rho=0.6)  # non-Gaussian copula
    x, y = t.sample(20_000, seed=2)
    assert estimators.get("gaussian_copula").estimate(x, y) < t.mutual_information - 0.05
    # independence: without the correction the estimate is biased up by ~dx*dy/(2N) nats
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8))
    raw = np.mean([estimators.get("gaussian_copula", bias_correction=False, unit="nats")
                   .estimate(x[:, :], np.roll(y, s, axis=0)) for s in range(5)])
    assert raw == pytest.approx(64 / 4000, rel=0.35)
    assert estimators.get("gaussian_copula").estimate(x, y) < 0.004


def test_discrete_labels_and_errors():
    t = tasks.get("mixture_labels", n_classes=3, dim=1, separation=2.0)
    x, y = t.sample(5000, seed=4)
    e = estimators.get("gaussian_copula")
    v = e.estimate(x, y, discrete_y=True)
    # 1-D class-conditional Gaussians on the scores: close to, and here below, the truth
    assert t.mutual_information - 0.12 < v <= t.mutual_information + 0.02
    assert e.estimate(y, x, discrete_x=True) == pytest.approx(v, rel=1e-12)
    # a constant variable shares nothing: 0, flagged
    assert e.estimate(np.ones((50, 1)), x[:50]) == 0.0 and e.flags_ == ("constant_variable",)
    with pytest.raises(ValueError, match="samples"):
        e.estimate(x[:5, [0, 0, 0]] + np.random.default_rng(0).standard_normal((5, 3)), x[:5] ** 3)
    with pytest.raises(ValueError, match="does not support"):
        e.estimate(y, y, discrete_x=True, discrete_y=True)


# --------------------------------------------------------------------------- #
# Bias-corrected entropies
# --------------------------------------------------------------------------- #
def _chao_shen_by_hand(counts):
    n = sum(counts)
    f1 = sum(1 for c in counts if c == 1)
    if f1 == n:
        f1 = n - 1
    cov = 1 - f1 / n
    h = 0.0
    for c in counts:
        q = cov * c / n
        h -= q * math.log(q) / (1 - (1 - q) ** n)
    return h


def _jackknife_by_hand(counts):
    samples = [i for i, c in enumerate(counts) for _ in range(c)]
    n = len(samples)

    def plug(s):
        m = len(s)
        return -sum((s.count(v) / m) * math.log(s.count(v) / m) for v in set(s))

    loo = [plug(samples[:j] + samples[j + 1:]) for j in range(n)]
    return n * plug(samples) - (n - 1) / n * sum(loo)


@pytest.mark.parametrize("counts", [[3, 1, 1, 2], [5, 5], [1, 1, 1, 4, 9, 2], [7]])
def test_corrections_match_hand_formulas(counts):
    n, m = sum(counts), len(counts)
    plug = -sum(c / n * math.log(c / n) for c in counts)
    assert entropy_from_counts(counts, "none") == pytest.approx(plug, abs=1e-12)
    assert entropy_from_counts(counts, "miller_madow") == pytest.approx(plug + (m - 1) / (2 * n))
    assert entropy_from_counts(counts, "chao_shen") == pytest.approx(_chao_shen_by_hand(counts), rel=1e-10)
    assert entropy_from_counts(counts + [0, 0], "jackknife") == pytest.approx(
        max(_jackknife_by_hand(counts), 0.0), rel=1e-10, abs=1e-12)


def test_corrections_reduce_the_bias_on_a_uniform_distribution():
    k = 64
    truth = math.log(k)
    rng = np.random.default_rng(0)
    err = {c: [] for c in ("none", "miller_madow", "chao_shen", "jackknife")}
    for _ in range(40):
        counts = np.bincount(rng.integers(0, k, size=100), minlength=k)  # N < 2K: many unseen
        for c in err:
            err[c].append(entropy_from_counts(counts, c) - truth)
    bias = {c: abs(np.mean(v)) for c, v in err.items()}
    assert bias["none"] > 0.3  # the plug-in misses about (K-1)/(2N) nats and more
    assert bias["chao_shen"] < 0.5 * bias["none"] and bias["jackknife"] < 0.6 * bias["none"]
    assert bias["miller_madow"] < bias["none"]
    big = np.bincount(rng.integers(0, k, size=200_000), minlength=k)
    for c in err:  # every estimator converges
        assert entropy_from_counts(big, c) == pytest.approx(truth, abs=2e-3)


def test_correction_parameter_of_the_estimators():
    t = tasks.get("symmetric_channel", n_symbols=4, error=0.2)
    x, y = t.sample(500, seed=0)
    vals = {c: estimators.get("discrete", correction=c).estimate(x, y, discrete_x=True, discrete_y=True)
            for c in ("none", "miller_madow", "chao_shen", "jackknife")}
    assert vals["miller_madow"] == pytest.approx(
        estimators.get("discrete", miller_madow=True).estimate(x, y, discrete_x=True, discrete_y=True))
    assert len({round(v, 10) for v in vals.values()}) == 4
    for c, v in vals.items():
        assert v == pytest.approx(t.mutual_information, abs=0.1), c
    b = estimators.get("binning", correction="chao_shen", n_bins=8)
    tt = np.random.default_rng(1).standard_normal((300, 2))
    lab = (tt[:, 0] > 0).astype(int)
    i_xt, i_ty = b.plane(tt, lab)
    assert 0 < i_ty <= i_xt
    assert i_xt != estimators.get("binning", n_bins=8).plane(tt, lab)[0]
    with pytest.raises(ValueError, match="contradicts"):
        estimators.get("adaptive_binning", miller_madow=True, correction="jackknife")
    with pytest.raises(ValueError, match="correction"):
        estimators.get("discrete", correction="nsb_typo")
    with pytest.raises(ValueError, match="correction"):
        entropy_from_counts([1, 2], "bad")
