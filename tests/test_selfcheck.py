"""Self-consistency checks without ground truth (``ibscope.estimators._selfcheck``).

A consistent estimator on an easy pair passes every check; estimators with a known defect fail
the check that targets it: the Gaussian estimator on Y = X^2 + noise (correlation ~0, so it
reads ~0 bits, while the folded |X - median| correlates with Y: the lossy map "gains"
information, violating data processing), KSG with 4 joint dimensions at n = 1000 (its
dimension-dependent downward bias makes the concatenated pair read well below the sum of the
halves), and an estimator whose value grows with the sample size (convergence).
"""

from __future__ import annotations

import numpy as np
import pytest

from ibscope import estimators, tasks
from ibscope.estimators._selfcheck import (
    CHECKS,
    invertible_map,
    lossy_map,
    self_consistency,
)


def _gauss1(n=2000, seed=0):
    return tasks.get("gaussian_split", dim=1, mi=1.0).sample(n, seed=seed)


def test_ksg_on_a_gaussian_passes_every_check():
    x, y = _gauss1()
    r = self_consistency(estimators.get("ksg"), x, y)
    assert r.passed, r.to_frame()
    assert [c.check for c in r.results] == list(CHECKS)
    assert r.estimate == pytest.approx(1.0, abs=0.1)
    df = r.to_frame()
    assert list(df["check"]) == list(CHECKS) and set(df["unit"]) == {"bits"} and df["passed"].all()


def test_gaussian_estimator_on_a_square_fails_the_lossy_check():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 1))
    y = x ** 2 + 0.1 * rng.standard_normal((2000, 1))
    r = self_consistency("gaussian", x, y)
    assert not r.passed
    assert r.failed == ("lossy",)
    assert r["lossy"].value > r["lossy"].reference + 1.0
    assert r.flags == ("selfcheck_lossy",)


def test_ksg_in_four_joint_dimensions_fails_additivity():
    x, y = tasks.get("gaussian_split", dim=2, mi=2.0).sample(1000, seed=0)
    r = self_consistency("ksg", x, y, checks=("additivity",))
    assert r.failed == ("additivity",)
    assert r["additivity"].difference < 0  # the concatenated pair reads low


def test_a_sample_size_dependent_estimator_fails_convergence():
    ksg = estimators.get("ksg")
    drifting = lambda a, b: ksg.estimate(a, b) + 1e-3 * len(a)  # noqa: E731  (grows with n)
    x, y = _gauss1()
    r = self_consistency(drifting, x, y, checks=("convergence",))
    assert r.failed == ("convergence",)
    assert r["convergence"].difference == pytest.approx(1e-3 * 1000, abs=0.3)


def test_a_non_invariant_estimator_fails_the_invertible_check():
    # the Gaussian estimator is not invariant under non-linear injective maps: on a strongly
    # dependent pair the warp lowers the correlation and the value
    x, y = tasks.get("gaussian_split", dim=1, mi=3.0).sample(2000, seed=0)
    r = self_consistency("gaussian", x, y, checks=("invertible",))
    assert r.failed == ("invertible",)


def test_maps_are_injective_and_lossy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3))
    z = invertible_map(x, np.random.default_rng(0))
    # injective: rows stay distinct and the rank structure of a monotone warp + rotation holds
    assert np.linalg.matrix_rank(z - z.mean(0)) == 3
    assert len(np.unique(np.round(z, 12), axis=0)) == 50
    one = rng.standard_normal((101, 1))
    w = invertible_map(one, np.random.default_rng(0))
    assert (np.diff(w[np.argsort(one[:, 0]), 0]) > 0).all()  # strictly increasing in 1-D
    f = lossy_map(np.array([[-1.0], [0.0], [1.0]]))
    assert f[0, 0] == f[2, 0]  # not injective


def test_bad_arguments():
    x, y = _gauss1(100)
    with pytest.raises(ValueError, match="checks"):
        self_consistency("ksg", x, y, checks=("nope",))
    with pytest.raises(ValueError, match="at least 32"):
        self_consistency("ksg", x[:20], y[:20])
    with pytest.raises(ValueError, match="same number"):
        self_consistency("ksg", x[:50], y)
    with pytest.raises(ValueError, match="atol"):
        self_consistency("ksg", x, y, atol=-1.0)
    with pytest.raises(TypeError, match="estimator"):
        self_consistency(3, x, y)
    xb = x.copy()
    xb[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        self_consistency("ksg", xb, y)


def test_a_nats_estimator_is_checked_in_bits():
    x, y = _gauss1()
    r = self_consistency(estimators.get("ksg", unit="nats"), x, y, checks=("lossy",))
    assert r.estimate == pytest.approx(self_consistency("ksg", x, y, checks=("lossy",)).estimate)


# ------------------------------------------------------------------ auto(self_check=True)
def test_auto_self_check_is_off_by_default_and_recorded_when_on():
    x, y = _gauss1(1000)
    plain = estimators.get("auto")
    v = plain.estimate(x, y)
    assert "self_check" not in plain.choice_
    checked = estimators.get("auto", self_check=True)
    assert checked.estimate(x, y) == pytest.approx(v)  # both pass on a Gaussian: same choice
    sc = checked.choice_["self_check"]
    assert set(sc) == {"gaussian_copula", "ksg_copula"}
    assert all(r["passed"] for r in sc.values()), sc
    assert "both pass" in checked.choice_["rule"]
    with pytest.raises(TypeError, match="self_check"):
        estimators.get("auto", self_check="yes")


def test_auto_prefers_the_only_candidate_that_passes():
    from ibscope.estimators._auto import prefer_passing

    checked = {"gaussian_copula": {"passed": True, "failed": []},
               "ksg_copula": {"passed": False, "failed": ["additivity"]}}
    chosen, rule = prefer_passing("ksg_copula", "max rule", checked)
    assert chosen == "gaussian_copula" and "only gaussian_copula" in rule
    checked["ksg_copula"]["passed"] = True
    assert prefer_passing("ksg_copula", "max rule", checked)[0] == "ksg_copula"


def test_auto_self_check_records_the_gaussian_copula_failing_on_a_non_gaussian_copula():
    # Y = X^2 + noise: the Gaussian copula misses the dependence (~0) and fails the lossy check
    # (the folded X correlates with Y); KSG on the scores sees it
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 1))
    y = x ** 2 + 0.5 * rng.standard_normal((2000, 1))
    est = estimators.get("auto", self_check=True)
    est.estimate(x, y)
    sc = est.choice_["self_check"]
    assert "lossy" in sc["gaussian_copula"]["failed"]
    assert est.choice_["chosen"] == "ksg_copula"
