"""The normalizing-flow MI estimators (``flow``, ``flow_tridiag``; Butakov et al., NeurIPS 2024).

Ground truth: Gaussian tasks (closed-form MI) and a cubed Gaussian (MI unchanged by the
coordinate-wise bijection t -> t^3, where the plain Gaussian estimator is far off); the
building blocks are checked against exact formulas (Jacobian log-determinants by autograd,
the tridiagonal base density against scipy's multivariate normal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ibscope import estimators, tasks
from ibscope.estimators._flow import (
    MarginalFlow,
    _FullBase,
    _TridiagBase,
    gaussian_mi_from_samples,
)

BOTH = ["flow", "flow_tridiag"]
FAST = {"n_blocks": 1}  # one block per flow: the fast-suite setting


def _sample(name, n, seed=1, **params):
    t = tasks.get(name, **params)
    x, y = t.sample(n, seed=seed)
    return t, np.asarray(x, float), np.asarray(y, float)


# ------------------------------------------------------------- building blocks
@pytest.mark.parametrize("dim", [1, 3])
def test_marginal_flow_logdet_is_the_jacobian(dim):
    torch.manual_seed(0)
    flow = MarginalFlow(dim, n_blocks=2, n_terms=4, hidden=(8,)).double()
    with torch.no_grad():  # move away from the identity initialization
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(5, dim, dtype=torch.float64)
    with torch.no_grad():
        _, logdet = flow(x)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda r: flow(r[None])[0][0], x[i])
        assert float(logdet[i]) == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet),
                                                 rel=1e-9, abs=1e-9)


def test_base_densities_match_the_multivariate_normal():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    zx, zy = rng.standard_normal((7, 3)), rng.standard_normal((7, 2))
    base = _TridiagBase(2).double()
    with torch.no_grad():
        base.raw_rho.copy_(torch.tensor([0.4, -1.1], dtype=torch.float64))
    rho = np.tanh([0.4, -1.1])
    cov = np.eye(5)
    for i in range(2):
        cov[i, 3 + i] = cov[3 + i, i] = rho[i]
    got = base(torch.from_numpy(zx), torch.from_numpy(zy)).detach().numpy()
    want = multivariate_normal(np.zeros(5), cov).logpdf(np.c_[zx, zy])
    np.testing.assert_allclose(got, want, rtol=1e-10)

    full = _FullBase(5).double()
    with torch.no_grad():
        full.raw.copy_(torch.from_numpy(0.3 * rng.standard_normal((5, 5))))
    chol = full.cholesky().detach().numpy()
    want = multivariate_normal(np.zeros(5), chol @ chol.T).logpdf(np.c_[zx, zy])
    np.testing.assert_allclose(full(torch.from_numpy(np.c_[zx, zy])).detach().numpy(), want,
                               rtol=1e-10)


def test_gaussian_mi_from_samples_closed_form():
    # 2x2 Gaussian with canonical correlations 0.8 and 0.5: I = -1/2 sum log(1 - rho^2)
    rng = np.random.default_rng(0)
    n = 200_000
    a, b = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    rho = np.array([0.8, 0.5])
    y = rho * a + np.sqrt(1 - rho**2) * b
    truth = -0.5 * np.log1p(-rho**2).sum()
    got = gaussian_mi_from_samples(torch.from_numpy(a), torch.from_numpy(y @ [[1.0, 2.0], [0.0, 1.0]]))
    assert got == pytest.approx(truth, abs=0.01)  # sd ~ 0.003 nats at n = 2e5


# ------------------------------------------------------------- ground truth
@pytest.mark.parametrize("name", BOTH)
def test_gaussian_task(name):
    t, x, y = _sample("gaussian_split", 1000, dim=2, mi=1.0)
    value = estimators.get(name, **FAST).estimate(x, y)
    # held-out n = 300: sd ~0.05 bits
    assert value == pytest.approx(t.mutual_information, abs=0.12)


@pytest.mark.parametrize("name", BOTH)
def test_cubed_gaussian_recovers_the_truth_where_gaussian_mi_fails(name):
    # t -> t^3 per coordinate: MI unchanged (1 bit); the Gaussian estimator reads ~0.67 bits
    t, x, y = _sample("gaussian_split", 1000, dim=1, mi=1.0)
    x, y = x**3, y**3
    gauss = estimators.get("gaussian").estimate(x, y)
    assert t.mutual_information - gauss > 0.2
    value = estimators.get(name, **FAST).estimate(x, y)
    assert value == pytest.approx(t.mutual_information, abs=0.12)  # measured 0.96


def test_tridiag_finds_the_canonical_pairs_of_a_dense_gaussian():
    t, x, y = _sample("gaussian_dense", 1000, dim_x=2, dim_y=2, rho=0.3)
    value = estimators.get("flow_tridiag", **FAST).estimate(x, y)
    assert value == pytest.approx(t.mutual_information, abs=0.12)


@pytest.mark.parametrize("name", BOTH)
def test_independence_about_zero(name):
    _, x, y = _sample("gaussian_split", 600, dim=2, mi=0.0)
    assert 0.0 <= estimators.get(name, **FAST).estimate(x, y) <= 0.05


# ------------------------------------------------------------- contract
def test_history_flags_units_and_torch_input():
    _, x, y = _sample("gaussian_split", 400, dim=1, mi=1.0)
    e = estimators.get("flow", **FAST)
    bits = e.estimate(x, y)
    assert e.converged_ and e.flags_ == ()
    assert set(e.history_[0]) == {"epoch", "train", "test", "mi"}
    assert e.history_[e.best_epoch_ - 1]["mi"] == pytest.approx(bits, rel=1e-9)
    nats = estimators.get("flow", unit="nats", **FAST).estimate(x, y)
    assert nats == pytest.approx(bits * math.log(2), rel=1e-9)
    tv = estimators.get("flow", device="cpu", **FAST).estimate(torch.from_numpy(x), torch.from_numpy(y))
    assert tv == pytest.approx(bits, abs=1e-4)  # float32 either way; same split and seed


@pytest.mark.parametrize("name", BOTH)
def test_not_converged_flag(name):
    _, x, y = _sample("gaussian_split", 400, dim=1, mi=1.0)
    e = estimators.get(name, max_epochs=2, **FAST)
    e.estimate(x, y)
    assert not e.converged_ and "critic_not_converged" in e.flags_


@pytest.mark.parametrize("name", BOTH)
def test_bad_inputs(name):
    _, x, y = _sample("gaussian_split", 100, dim=2, mi=1.0)
    e = estimators.get(name)
    with pytest.raises(ValueError, match="does not support"):
        e.estimate(np.arange(100) % 3, y, discrete_x=True)
    xc = x.copy()
    xc[:, 1] = 2.0
    with pytest.raises(ValueError, match="'x' has zero-variance"):
        e.estimate(xc, y)
    with pytest.raises(ValueError, match="held-out samples"):
        e.estimate(x[:20], y[:20])
    for param, bad in [("max_epochs", 0), ("marginals", "ranks"), ("lr", -1.0), ("n_blocks", 0), ("test_fraction", 1.0),
                       ("hidden", (0,))]:
        with pytest.raises(ValueError, match=param):
            estimators.get(name, **{param: bad})


# ------------------------------------------------------------- larger validation
@pytest.mark.slow
@pytest.mark.parametrize("name", BOTH)
@pytest.mark.parametrize("dim", [5])
def test_gaussian_validation_at_5000(name, dim):
    t, x, y = _sample("gaussian_split", 5000, dim=dim, mi=2.0)
    value = estimators.get(name).estimate(x, y)
    assert value == pytest.approx(t.mutual_information, abs=0.15 + 0.03 * t.mutual_information)
