"""Per-entropy whitening of the KL / WKL estimators (Butakov et al. 2024's entropy estimator)."""

import numpy as np
import pytest

from ibscope import estimators, tasks
from ibscope.estimators._knn import whiten_for_entropy


def _pair(mi_nats: float, n: int = 4000, seed: int = 1):
    return tasks.get("gaussian_split", dim=2, mi=mi_nats / np.log(2)).sample(n, seed=seed)


@pytest.mark.parametrize("name", ["kl", "wkl"])
def test_whitened_entropies_follow_high_mi_where_plain_kl_saturates(name):
    x, y = _pair(8.0)
    plain = estimators.get(name, k=5, unit="nats").estimate(x, y)
    white = estimators.get(name, k=5, whiten=True, unit="nats").estimate(x, y)
    # the joint of a strongly dependent pair is a thin sheet: isotropic balls on the raw
    # joint saturate far below the truth; on the whitened joint they follow it
    if name == "kl":  # (WKL's bias-cancelling weights already help in the 4-D joint)
        assert plain < 6.5
    assert white == pytest.approx(8.0, abs=0.6)
    # at low MI both agree with the truth
    x0, y0 = _pair(1.0)
    assert estimators.get(name, k=5, whiten=True, unit="nats").estimate(x0, y0) == pytest.approx(1.0, abs=0.1)


def test_whitened_estimate_is_invariant_to_invertible_linear_maps_of_each_variable():
    x, y = _pair(3.0, n=2000)
    a = np.array([[3.0, 0.5], [-1.0, 0.2]])  # invertible, badly conditioned, not orthogonal
    est = estimators.get("kl", k=5, whiten=True, standardize=False, unit="nats")
    base = est.estimate(x, y)
    assert est.estimate(x @ a, y) == pytest.approx(base, abs=1e-8)
    assert est.estimate(x @ a, y @ a.T + 4.0) == pytest.approx(base, abs=1e-8)
    # without whitening the same maps change the estimate
    plain = estimators.get("kl", k=5, standardize=False, unit="nats")
    assert abs(plain.estimate(x @ a, y) - plain.estimate(x, y)) > 1e-3


def test_whiten_for_entropy_returns_identity_covariance_and_the_log_determinant():
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.2, 0.0], [1.2, 1.0, 0.3], [0.0, 0.3, 0.25]])
    a = rng.multivariate_normal([1.0, -2.0, 3.0], cov, size=20000)
    w, half_logdet = whiten_for_entropy(a)
    assert np.allclose(np.cov(w.T), np.eye(3), atol=1e-10) and np.allclose(w.mean(0), 0, atol=1e-12)
    assert half_logdet == pytest.approx(0.5 * np.linalg.slogdet(np.cov(a.T))[1], abs=1e-10)
    torch = pytest.importorskip("torch")
    wt, h2 = whiten_for_entropy(torch.as_tensor(a))
    assert isinstance(wt, torch.Tensor) and np.allclose(wt.numpy(), w) and h2 == pytest.approx(half_logdet)


def test_whiten_with_a_discrete_partner_and_bad_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 2)) * [3.0, 0.5]
    labels = (x[:, 0] > 0).astype(int)
    est = estimators.get("kl", k=5, whiten=True, unit="nats").estimate(x, labels, discrete_y=True)
    assert est == pytest.approx(np.log(2), abs=0.05)  # I(X; sign X_1) = H(sign) = ln 2
    with pytest.raises(ValueError, match="whiten=True needs x to have a non-singular"):
        estimators.get("kl", k=5, whiten=True).estimate(np.c_[x, 2 * x[:, 0]], x)
    with pytest.raises((TypeError, ValueError), match="whiten"):
        estimators.get("wkl", whiten="yes")


def test_compressed_images_whitens_each_entropy_like_the_paper():
    from ibscope.experiments._compressed_images import Config

    assert Config().inner_params == {"k": 5, "whiten": True}
    assert Config(whiten_entropies=False).inner_params == {"k": 5}
    assert Config(estimator="ksg").inner_params == {"k": 5}
    with pytest.raises(ValueError, match="whiten_entropies"):
        Config(estimator="ksg", whiten_entropies=True)
    with pytest.raises(ValueError, match="whiten_entropies"):
        Config(whiten_entropies="yes")
