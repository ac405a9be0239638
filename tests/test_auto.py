"""The ``auto`` estimator: its rules, the recorded choice, and accuracy where each rule applies."""

import numpy as np
import pytest

from ibscope import estimators, tasks


def test_gaussian_copula_beyond_max_knn_dim_and_choice_recorded():
    t = tasks.get("multinormal_dense", dim_x=6, dim_y=6, off_diag=0.5)
    x, y = t.sample(3000, seed=0)
    a = estimators.get("auto")
    v = a.estimate(x, y)
    assert a.choice_["chosen"] == "gaussian_copula" and "max_knn_dim" in a.choice_["rule"]
    assert a.choice_["candidates"] == {"gaussian_copula": pytest.approx(v)}
    assert v == pytest.approx(t.mutual_information, abs=0.05)


def test_ksg_on_scores_where_the_copula_is_not_gaussian():
    t = tasks.get("student_t", dim=2, dof=1.0, rho=0.0)  # dependence only through the shared scale
    x, y = t.sample(3000, seed=1)
    a = estimators.get("auto")
    v = a.estimate(x, y)
    assert a.choice_["chosen"] == "ksg_copula"
    assert a.choice_["candidates"]["gaussian_copula"] < 0.05
    assert v == pytest.approx(t.mutual_information, abs=0.1)
    # rank based: a strictly increasing map of a coordinate changes nothing
    assert a.estimate(np.arcsinh(x), y ** 3) == pytest.approx(v, rel=1e-9)


def test_max_rule_keeps_the_copula_value_on_gaussians():
    t = tasks.get("gaussian_sparse", dim_x=3, dim_y=3, rho=0.8, n_interacting=2)
    x, y = t.sample(3000, seed=2)
    a = estimators.get("auto")
    v = a.estimate(x, y)
    c = a.choice_["candidates"]
    assert v == pytest.approx(max(c.values())) and set(c) == {"gaussian_copula", "ksg_copula"}
    assert v == pytest.approx(t.mutual_information, abs=0.06)


def test_discrete_and_mixed_pairs():
    a = estimators.get("auto", correction="chao_shen")
    t = tasks.get("symmetric_channel", n_symbols=4, error=0.2)
    x, y = t.sample(2000, seed=3)
    v = a.estimate(x, y, discrete_x=True, discrete_y=True)
    assert a.choice_["chosen"] == "discrete" and "chao_shen" in a.choice_["rule"]
    assert v == pytest.approx(estimators.get("discrete", correction="chao_shen").estimate(
        x, y, discrete_x=True, discrete_y=True))
    t = tasks.get("mixture_labels", n_classes=3, dim=2, separation=2.0)
    x, y = t.sample(2000, seed=4)
    v = a.estimate(x, y, discrete_y=True)
    assert a.choice_["chosen"] == "ksg_mixed_copula"
    assert v == pytest.approx(t.mutual_information, abs=0.08)
    assert a.estimate(y, x, discrete_x=True) == pytest.approx(v, rel=1e-9)
    with pytest.raises(ValueError, match="every class"):
        a.estimate(x[:20], np.r_[np.zeros(18, int), 1, 1], discrete_y=True)


def test_choice_of_the_full_sample_survives_a_confidence_interval():
    t = tasks.get("student_t", dim=1, dof=2.0, rho=0.0)
    x, y = t.sample(1000, seed=5)
    a = estimators.get("auto")
    r = a.estimate(x, y, ci=0.9, n_resamples=6)
    assert r.method == "auto" and a.choice_["candidates"][a.choice_["chosen"]] == pytest.approx(r.value)


def test_ties_are_jittered():
    rng = np.random.default_rng(6)
    x = np.round(rng.standard_normal((2000, 1)), 1)  # many ties
    y = x + 0.5 * rng.standard_normal((2000, 1))
    v = estimators.get("auto").estimate(x, y)
    assert np.isfinite(v) and 0.5 < v < 2.0
