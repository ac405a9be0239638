"""``latent_ksg``: KSG on learned low-dimensional embeddings (Gowri et al., NeurIPS 2024).

Ground truth: Gaussian tasks (closed-form MI) and a 2-D Gaussian pair embedded non-linearly in
50 dimensions with independent nuisance (``embedded_gaussian``, MI exact by injectivity), where
plain KSG in the ambient dimension is far too low.

Stated tolerances (n = 3000, seed 1, default training): the value lies in
[truth - 0.45, truth + 0.1] bits on the Gaussians (the estimator is a lower bound in the
data-processing sense, and KSG on the held-out embeddings reads low) and within 0.3 bits of the
truth on the embedded pair.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibscope import estimators, tasks
from ibscope.estimators._latent import LatentKSG


def _sample(name, n, seed=1, **params):
    t = tasks.get(name, **params)
    x, y = t.sample(n, seed=seed)
    return t, x, y


def test_registered_with_the_contract():
    est = estimators.get("latent_ksg")
    assert isinstance(est, LatentKSG)
    assert "Gowri" in LatentKSG.__doc__ and "data-processing" in LatentKSG.__doc__
    assert est.get_params()["latent_dim"] == 4


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"k": 0}, {"recon_weight": -1.0},
                                 {"hidden": (0,)}, {"lr": 0.0}, {"test_fraction": 1.0}])
def test_bad_parameters_raise(bad):
    with pytest.raises(ValueError):
        estimators.get("latent_ksg", **bad)


def test_discrete_input_and_too_few_rows_raise():
    x = np.random.default_rng(0).standard_normal((100, 2))
    with pytest.raises(ValueError):
        estimators.get("latent_ksg").estimate(x, np.arange(100) % 3, discrete_y=True)
    with pytest.raises(ValueError, match="held-out"):
        estimators.get("latent_ksg").estimate(x[:16], x[:16])


def test_not_converged_flag_and_deterministic():
    _, x, y = _sample("gaussian_split", 400, dim=2, mi=1.0)
    est = estimators.get("latent_ksg", max_epochs=1)
    est.estimate(x, y)
    assert not est.converged_ and "critic_not_converged" in est.flags_
    a = estimators.get("latent_ksg", max_epochs=5, hidden=(16,), seed=3).estimate(x, y)
    b = estimators.get("latent_ksg", max_epochs=5, hidden=(16,), seed=3).estimate(x, y)
    assert a == b
    assert len(est.history_) == 1 and set(est.history_[0]) == {"epoch", "train", "loss", "test"}


def test_independent_pair_reads_near_zero():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((1000, 10)), rng.standard_normal((1000, 10))
    v = estimators.get("latent_ksg", latent_dim=2, hidden=(32,)).estimate(x, y)
    assert abs(v) < 0.1


@pytest.mark.slow
def test_gaussian_5x5():
    t, x, y = _sample("gaussian_split", 3000, dim=5, mi=1.0)
    v = estimators.get("latent_ksg", latent_dim=5).estimate(x, y)
    assert t.mutual_information - 0.45 <= v <= t.mutual_information + 0.1


@pytest.mark.slow
def test_gaussian_20x20_low_rank_beats_ksg():
    t, x, y = _sample("gaussian_sparse", 3000, dim_x=20, dim_y=20, rho=0.6, n_interacting=2)
    v = estimators.get("latent_ksg", latent_dim=2).estimate(x, y)
    assert t.mutual_information - 0.45 <= v <= t.mutual_information + 0.1
    plain = estimators.get("ksg").estimate(x, y)
    assert abs(v - t.mutual_information) < abs(plain - t.mutual_information)


@pytest.mark.slow
def test_embedded_latent_beats_plain_ksg():
    t, x, y = _sample("embedded_gaussian", 3000, latent_dim=2, mi=1.0, ambient_dim=50)
    assert x.shape == (3000, 50)
    v = estimators.get("latent_ksg", latent_dim=2).estimate(x, y)
    plain = estimators.get("ksg").estimate(x, y)
    assert abs(v - t.mutual_information) <= 0.3
    assert abs(v - t.mutual_information) < abs(plain - t.mutual_information) - 0.15


def test_embedded_task_is_injective_and_truth_is_the_latent_mi():
    t = tasks.get("embedded_gaussian", latent_dim=2, mi=1.5, ambient_dim=12, noise_dim=4)
    assert t.mutual_information == pytest.approx(1.5)
    x, _ = t.sample(50, seed=0)
    w, c, q = t._maps[0]
    feats = x @ q  # Q orthogonal: recover [u, tanh(W u + c), e]
    u = feats[:, :2]
    np.testing.assert_allclose(feats[:, 2:8], np.tanh(u @ w.T + c), atol=1e-10)
    with pytest.raises(ValueError, match="ambient_dim"):
        tasks.get("embedded_gaussian", latent_dim=2, ambient_dim=6, noise_dim=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_the_value_range():
    t, x, y = _sample("gaussian_sparse", 3000, dim_x=20, dim_y=20, rho=0.6, n_interacting=2)
    est = estimators.get("latent_ksg", latent_dim=2, device="cuda")
    v = est.estimate(torch.as_tensor(x, device="cuda"), torch.as_tensor(y, device="cuda"))
    assert next(est.model_.parameters()).device.type == "cuda"
    assert t.mutual_information - 0.45 <= v <= t.mutual_information + 0.1
