"""Tests of ibscope.ntk: closed-form kernels, gradient-flow predictions, information.

Ground truth: the arc-cosine formula written out independently, Monte Carlo over
finite networks of width 2048 (independent torch implementation below), direct
linear algebra (solve, expm) for the dynamics, and closed-form Gaussian facts
for the information quantities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from ibscope.ntk import (
    GaussianPrediction,
    GradientFlowMSE,
    Kernels,
    ensemble_information,
    fisher_trace,
    gradient_flow_predict,
    kernels,
)


def _data(n=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d))


# --------------------------------------------------------------------------- #
# Kernels: closed forms
# --------------------------------------------------------------------------- #
def test_relu_depth1_equals_arccos_formula():
    x = _data(7, 4)
    sw, sb = 1.3, 0.4
    k = kernels(x, depth=1, activation="relu", weight_std=sw, bias_std=sb)
    # independent arc-cosine kernel (Cho & Saul 2009), degree 1 and 0
    k1 = sw**2 * (x @ x.T) / x.shape[1] + sb**2
    norms = np.sqrt(np.outer(np.diag(k1), np.diag(k1)))
    ang = np.arccos(np.clip(k1 / norms, -1.0, 1.0))
    relu_cov = norms / (2 * np.pi) * (np.sin(ang) + (np.pi - ang) * np.cos(ang))
    relu_deriv = (np.pi - ang) / (2 * np.pi)
    nngp = sw**2 * relu_cov + sb**2
    ntk = sw**2 * k1 * relu_deriv + nngp
    np.testing.assert_allclose(k.nngp, nngp, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(k.ntk, ntk, rtol=1e-7, atol=1e-12)


def test_depth0_is_linear_kernel():
    x = _data(4, 3)
    k = kernels(x, depth=0, weight_std=2.0, bias_std=0.5)
    lin = 4.0 * x @ x.T / 3 + 0.25
    np.testing.assert_allclose(k.nngp, lin, rtol=1e-12)
    np.testing.assert_allclose(k.ntk, lin, rtol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_chunking_diagonal_and_torch_agree(activation):
    x, z = _data(9, 4, 1), _data(5, 4, 2)
    kw = dict(depth=3, activation=activation, weight_std=1.4, bias_std=0.2)
    full = kernels(x, **kw)
    small = kernels(x, chunk_size=2, **kw)
    np.testing.assert_allclose(small.nngp, full.nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(small.ntk, full.ntk, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(full.nngp, full.nngp.T)
    diag = kernels(x, diagonal=True, **kw)
    np.testing.assert_allclose(diag.ntk, np.diag(full.ntk), rtol=1e-12)
    cross = kernels(x, z, chunk_size=3, **kw)
    both = kernels(np.vstack([x, z]), **kw)
    np.testing.assert_allclose(cross.ntk, both.ntk[:9, 9:], rtol=1e-10)
    kt = kernels(torch.as_tensor(x), **kw)
    assert isinstance(kt.ntk, torch.Tensor) and kt.ntk.dtype == torch.float64
    np.testing.assert_allclose(kt.ntk.numpy(), full.ntk, rtol=1e-12)
    # positive semi-definite
    assert np.linalg.eigvalsh(full.ntk).min() > -1e-10


# --------------------------------------------------------------------------- #
# Kernels vs Monte Carlo over finite networks (NTK parameterization)
# --------------------------------------------------------------------------- #
def _finite_net_kernels(x, depth, activation, sw, sb, width, n_nets, seed):
    """Per network: NNGP given the hidden layers (readout integrated out exactly)
    and the empirical NTK from autograd Jacobians."""
    phi = torch.relu if activation == "relu" else torch.erf
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x)
    n, d = xt.shape
    nngps, ntks = [], []
    for _ in range(n_nets):
        dims = [d] + [width] * depth + [1]
        ws = [torch.randn(dims[i + 1], dims[i], generator=gen, dtype=torch.float64).requires_grad_()
              for i in range(len(dims) - 1)]
        bs = [torch.randn(dims[i + 1], generator=gen, dtype=torch.float64).requires_grad_()
              for i in range(len(dims) - 1)]
        a = xt
        for w, b in zip(ws[:-1], bs[:-1], strict=True):
            a = phi(sw / math.sqrt(w.shape[1]) * a @ w.T + sb * b)
        nngps.append((sw**2 * a @ a.T / width + sb**2).detach())
        out = (sw / math.sqrt(width) * a @ ws[-1].T + sb * bs[-1]).squeeze(1)
        rows = []
        for i in range(n):
            grads = torch.autograd.grad(out[i], ws + bs, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        jac = torch.stack(rows)
        ntks.append((jac @ jac.T).detach())
    return torch.stack(nngps).numpy(), torch.stack(ntks).numpy()


def _relative(mc, exact):
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    return (mc - exact) / scale


@pytest.mark.parametrize("activation,sw,sb", [("relu", 1.5, 0.3), ("erf", 1.2, 0.2)])
def test_depth1_kernels_match_finite_width_monte_carlo(activation, sw, sb):
    x = _data(4, 6, 3)
    k = kernels(x, depth=1, activation=activation, weight_std=sw, bias_std=sb)
    nngp_mc, ntk_mc = _finite_net_kernels(x, 1, activation, sw, sb, width=2048, n_nets=96, seed=0)
    # NNGP within Monte Carlo error: 4 standard errors over 96 networks (each
    # averaging 2048 units; the readout is integrated out exactly)
    r = _relative(nngp_mc, k.nngp)
    se = r.std(0, ddof=1) / math.sqrt(r.shape[0])
    assert np.all(np.abs(r.mean(0)) <= 4 * se), (r.mean(0), se)
    # NTK within 2 percent (of sqrt(Theta(x,x) Theta(x',x')))
    assert np.abs(_relative(ntk_mc, k.ntk).mean(0)).max() < 0.02


@pytest.mark.parametrize("activation,sw,sb", [("relu", 1.5, 0.3), ("erf", 1.2, 0.2)])
def test_depth2_kernels_within_monte_carlo_error(activation, sw, sb):
    x = _data(4, 6, 3)
    k = kernels(x, depth=2, activation=activation, weight_std=sw, bias_std=sb)
    nngp_mc, ntk_mc = _finite_net_kernels(x, 2, activation, sw, sb, width=2048, n_nets=4, seed=1)
    for mc, exact in ((nngp_mc, k.nngp), (ntk_mc, k.ntk)):
        r = _relative(mc, exact)
        se = r.std(0, ddof=1) / math.sqrt(r.shape[0])
        assert np.all(np.abs(r.mean(0)) <= 4 * se + 0.005), (r.mean(0), se)
        assert np.abs(r.mean(0)).max() < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("activation,sw,sb", [("relu", 1.5, 0.3), ("erf", 1.2, 0.2)])
def test_depth2_ntk_within_two_percent_slow(activation, sw, sb):
    x = _data(4, 6, 3)
    k = kernels(x, depth=2, activation=activation, weight_std=sw, bias_std=sb)
    _, ntk_mc = _finite_net_kernels(x, 2, activation, sw, sb, width=2048, n_nets=120, seed=2)
    assert np.abs(_relative(ntk_mc, k.ntk).mean(0)).max() < 0.02


# --------------------------------------------------------------------------- #
# Gradient-flow predictions
# --------------------------------------------------------------------------- #
def _problem(n=12, m=7, d=5, k=3, seed=4, activation="erf"):
    rng = np.random.default_rng(seed)
    x, xs = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y = np.eye(k)[rng.integers(0, k, n)] - 1.0 / k
    kw = dict(depth=2, activation=activation, weight_std=1.3, bias_std=0.1)
    return x, xs, y, kernels(x, **kw), kernels(xs, x, **kw), kernels(xs, **kw)


def test_infinite_time_mean_is_kernel_regression_and_train_fit():
    x, xs, y, ktt, kst, kss = _problem()
    pred = gradient_flow_predict(ktt, y, [np.inf], kst, kss.nngp)
    want = kst.ntk @ np.linalg.solve(ktt.ntk, y)
    np.testing.assert_allclose(pred.mean[0], want, rtol=1e-8, atol=1e-10)
    # covariance at t = inf, written out with solves
    a = kst.ntk @ np.linalg.inv(ktt.ntk)
    cov = kss.nngp - a @ kst.nngp.T - kst.nngp @ a.T + a @ ktt.nngp @ a.T
    np.testing.assert_allclose(pred.cov[0], cov, rtol=1e-7, atol=1e-9)
    # on the training points the ensemble interpolates with zero variance
    tr = GradientFlowMSE(ktt, y).predict(np.inf)
    np.testing.assert_allclose(tr.mean[0], y, atol=1e-8)
    assert tr.var[0].max() < 1e-8


def test_finite_time_matches_matrix_exponential():
    x, xs, y, ktt, kst, kss = _problem()
    n, k = y.shape
    flow = GradientFlowMSE(ktt, y)
    ts = [0.5, 7.0, 60.0]
    pred = flow.predict(ts, kst, kss.nngp)
    diag = flow.predict(ts, kst, np.diag(kss.nngp), full_cov=False)
    for i, t in enumerate(ts):
        op = np.linalg.solve(ktt.ntk, np.eye(n) - scipy.linalg.expm(-ktt.ntk * t / (n * k)))
        a = kst.ntk @ op
        np.testing.assert_allclose(pred.mean[i], a @ y, rtol=1e-7, atol=1e-10)
        cov = kss.nngp - a @ kst.nngp.T - kst.nngp @ a.T + a @ ktt.nngp @ a.T
        np.testing.assert_allclose(pred.cov[i], cov, rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(diag.var[i], np.diag(cov), rtol=1e-6, atol=1e-10)
    # linearized network from a given initialization
    rng = np.random.default_rng(0)
    f0x, f0s = rng.normal(size=y.shape), rng.normal(size=(xs.shape[0], k))
    lin = flow.linearized(ts, f0x, f0s, kst)
    for i, t in enumerate(ts):
        op = np.linalg.solve(ktt.ntk, np.eye(n) - scipy.linalg.expm(-ktt.ntk * t / (n * k)))
        np.testing.assert_allclose(lin[i], f0s + kst.ntk @ op @ (y - f0x), rtol=1e-7, atol=1e-10)


def test_discrete_gradient_descent_matches_iteration():
    x, xs, y, ktt, kst, kss = _problem()
    n, k = y.shape
    flow = GradientFlowMSE(ktt, y)
    lr = 0.9 * n * k / np.linalg.eigvalsh(ktt.ntk).max()
    rng = np.random.default_rng(2)
    f, fs = rng.normal(size=y.shape), rng.normal(size=(xs.shape[0], k))
    lin = flow.linearized(np.arange(6) * lr, f, fs, kst, learning_rate=lr)
    for s in range(6):   # linearized network, explicit full-batch GD on 0.5 * mean squared error
        np.testing.assert_allclose(lin[s], fs, rtol=1e-8, atol=1e-10)
        resid = f - y
        f, fs = f - lr / (n * k) * ktt.ntk @ resid, fs - lr / (n * k) * kst.ntk @ resid
    with pytest.raises(ValueError, match="whole number"):
        flow.predict(0.5 * lr, learning_rate=lr)


def test_time_zero_is_the_prior():
    x, xs, y, ktt, kst, kss = _problem(activation="relu")
    pred = gradient_flow_predict(ktt, y, 0.0, kst, kss.nngp)
    assert np.all(pred.mean[0] == 0.0)
    np.testing.assert_allclose(pred.cov[0], kss.nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pred.var[0], np.diag(kss.nngp), rtol=1e-12)


def test_predictions_follow_torch_inputs():
    x, xs, y, ktt, kst, kss = _problem()
    flow = GradientFlowMSE(ktt.to_torch(), torch.as_tensor(y))
    pred = flow.predict([1.0, np.inf], kst.to_torch(), torch.as_tensor(kss.nngp))
    assert isinstance(pred.mean, torch.Tensor) and pred.mean.shape == (2, xs.shape[0], y.shape[1])
    ref = gradient_flow_predict(ktt, y, [1.0, np.inf], kst, kss.nngp)
    np.testing.assert_allclose(pred.cov.numpy(), ref.cov, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- #
# Information quantities
# --------------------------------------------------------------------------- #
def _info_setup(n_times=6):
    x, xs, y, ktt, kst, kss = _problem(n=16, m=10, seed=5)
    rng = np.random.default_rng(1)
    ys = np.eye(3)[rng.integers(0, 3, xs.shape[0])] - 1 / 3
    ts = np.concatenate([[0.0], np.logspace(-1, 4, n_times - 2), [np.inf]])
    return ts, ktt, kst, kss, y, ys


def test_information_bounds_ordered_and_prior_kl_zero():
    ts, ktt, kst, kss, y, ys = _info_setup()
    flow = GradientFlowMSE(ktt, y)
    for pred, yy, prior in ((flow.predict(ts, kst, kss.nngp), ys, kss.nngp),
                            (flow.predict(ts), y, ktt.nngp)):
        info = ensemble_information(pred, yy, prior, n_samples=8, seed=0)
        assert info.unit == "bits"
        n = yy.shape[0]
        assert np.all(info.ixz_lower <= info.ixz_upper + 1e-12)
        assert np.all(info.ixz_lower >= 0) and np.all(info.ixz_lower <= math.log2(n) + 1e-9)
        assert np.all(info.bayes_loss <= info.gibbs_loss + 1e-12)
        assert info.kl_prior[0] == pytest.approx(0.0, abs=1e-10)
        assert np.all(info.kl_prior >= 0)
        frame = info.to_frame()
        assert set(frame.columns) == {"t", "quantity", "value", "unit"} and len(frame) == 5 * len(ts)
    nats = ensemble_information(pred, y, ktt.nngp, n_samples=8, seed=0, unit="nats")
    np.testing.assert_allclose(nats.gibbs_loss, info.gibbs_loss * math.log(2), rtol=1e-12)


def test_information_closed_forms():
    n, k = 6, 2
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(1, n, k))
    a = rng.normal(size=(n, n))
    cov = (a @ a.T / n + 0.1 * np.eye(n))[None]
    var = np.diag(cov[0])[None]
    y = rng.normal(size=(n, k))
    prior = np.full(n, 2.0)
    info = ensemble_information(GaussianPrediction(np.array([1.0]), mean, var, cov), y, prior,
                                unit="nats", var_floor=1e-300)
    # Bayes loss: joint Gaussian log-density (scipy), per example
    bayes = -sum(scipy.stats.multivariate_normal(mean[0][:, c], cov[0] + np.eye(n)).logpdf(y[:, c])
                 for c in range(k)) / n
    assert info.bayes_loss[0] == pytest.approx(bayes, rel=1e-10)
    # Gibbs loss: Monte Carlo over z ~ N(mu_i, s_i I)
    z = mean[0][None] + np.sqrt(var[0])[None, :, None] * rng.normal(size=(200_000, n, k))
    mc = (0.5 * ((y[None] - z) ** 2).sum(-1) + 0.5 * k * math.log(2 * math.pi)).mean()
    assert info.gibbs_loss[0] == pytest.approx(mc, rel=2e-3)
    # KL of Gaussians N(mu, s I_k) || N(0, p I_k), via scipy's entropy-free formula
    kl = np.mean([0.5 * (k * var[0, i] / 2.0 + (mean[0, i] ** 2).sum() / 2.0 - k
                         + k * math.log(2.0 / var[0, i])) for i in range(n)])
    assert info.kl_prior[0] == pytest.approx(kl, rel=1e-10)


def test_ixz_extremes():
    n, k = 8, 2
    far = GaussianPrediction(np.array([1.0]), (100.0 * np.arange(n))[None, :, None] * np.ones((1, n, k)),
                             np.full((1, n), 0.01), np.eye(n)[None] * 0.01)
    info = ensemble_information(far, np.zeros((n, k)), np.ones(n), n_samples=4)
    assert info.ixz_lower[0] == pytest.approx(3.0, abs=1e-6)   # log2(8): all distinguishable
    same = GaussianPrediction(np.array([1.0]), np.zeros((1, n, k)), np.ones((1, n)), np.eye(n)[None])
    info = ensemble_information(same, np.zeros((n, k)), np.ones(n), n_samples=4)
    assert info.ixz_lower[0] == pytest.approx(0.0, abs=1e-9)
    assert info.ixz_upper[0] == pytest.approx(0.0, abs=1e-9)


def test_fisher_trace():
    ts, ktt, kst, kss, y, ys = _info_setup()
    assert fisher_trace(ktt, 3) == pytest.approx(3 * np.trace(ktt.ntk) / ktt.ntk.shape[0])
    assert fisher_trace(np.diag(ktt.ntk)) == pytest.approx(np.trace(ktt.ntk) / ktt.ntk.shape[0])


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #
def test_non_positive_definite_kernel_suggests_diag_reg():
    x = _data(5, 3)
    x = np.vstack([x, x[:2]])                     # duplicated rows: singular NTK
    y = np.arange(7.0)
    k = kernels(x, depth=2)
    with pytest.raises(ValueError, match="diag_reg"):
        GradientFlowMSE(k, y)
    pred = gradient_flow_predict(k, y, np.inf, diag_reg=1e-3)   # regularized: fine
    assert np.isfinite(pred.mean).all()


def test_bad_arguments():
    x = _data(5, 3)
    with pytest.raises(ValueError, match="activation"):
        kernels(x, activation="tanh")
    with pytest.raises(ValueError, match="same number of features"):
        kernels(x, _data(4, 2))
    with pytest.raises(ValueError, match="depth"):
        kernels(x, depth=-1)
    with pytest.raises(ValueError, match="x2"):
        kernels(x, x, diagonal=True)
    k = kernels(x)
    flow = GradientFlowMSE(k, np.ones(5))
    with pytest.raises(ValueError, match="'t'"):
        flow.predict([1.0, -2.0])
    with pytest.raises(ValueError, match="'t'"):
        flow.predict(np.nan)
    with pytest.raises(ValueError, match="rows"):
        GradientFlowMSE(k, np.ones(4))
    with pytest.raises(TypeError, match="Kernels"):
        GradientFlowMSE(k.ntk, np.ones(5))
    with pytest.raises(ValueError, match="k_test_train"):
        flow.predict(1.0, kernels(_data(3, 3), _data(4, 3)), np.eye(3))
    with pytest.raises(ValueError, match="nngp_test"):
        flow.predict(1.0, kernels(_data(3, 3), x))
    pred = flow.predict([0.0, 1.0], full_cov=False)
    with pytest.raises(ValueError, match="full_cov"):
        ensemble_information(pred, np.ones(5), k.nngp)
    with pytest.raises(ValueError, match="unit"):
        ensemble_information(flow.predict(1.0), np.ones(5), k.nngp, unit="dits")
    assert isinstance(k, Kernels)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("chunk_size", [2048, 3])
@pytest.mark.parametrize("as_torch", [False, True])
def test_kernels_of_one_set_are_exactly_symmetric(activation, chunk_size, as_torch):
    # users factor these matrices: symmetric must hold bit for bit, by construction
    # (mirrored blocks), whatever BLAS path or vector width the machine takes
    x = _data(11, 7, 3)
    k = kernels(torch.as_tensor(x) if as_torch else x, depth=3, activation=activation,
                weight_std=1.4, bias_std=0.2, chunk_size=chunk_size)
    for m in (k.nngp, k.ntk):
        m = m.numpy() if as_torch else m
        assert np.array_equal(m, m.T)


def test_kernels_refuse_overflowing_inputs():
    x = _data(5, 3, 4)
    assert np.isfinite(kernels(x * 1e70).nngp).all()  # large but representable
    for bad in (x * 1e160, x * 1e76):
        with pytest.raises(ValueError, match="'x1' is too large"):
            kernels(bad)
    with pytest.raises(ValueError, match="'x2' is too large"):
        kernels(x, x * 1e160)
    with pytest.raises(ValueError, match="weight_std"):
        kernels(x, weight_std=1e200, depth=3)
