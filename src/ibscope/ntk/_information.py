"""Information quantities of an infinite ensemble of infinitely wide networks.

Shwartz-Ziv & Alemi [1]_ take the representation ``Z`` to be the network's
output and draw the randomness from the initialization: across the ensemble,
``p(z | x, D)`` at training time ``t`` is the Gaussian of
:class:`~ibscope.ntk.GradientFlowMSE`, ``N(mu_t(x), s_t(x) I_k)`` for each
input (the ``k`` outputs are independent with the same variance), and jointly
over a set of inputs ``N(mu_t, Sigma_t)`` per output. Everything below is
exact given that Gaussian, apart from the Monte Carlo average in the I(X;Z)
bounds. Let ``x_1..x_N`` be the evaluation inputs (``X`` uniform over them),
``y_i`` their targets, ``mu_i = mu_t(x_i)``, ``s_i = s_t(x_i) + var_floor``.

**I(X;Z) bounds** (Poole et al. [2]_). With ``z_i ~ p(z | x_i)`` and the
Gaussian log-densities ``L_ij = log p(z_i | x_j) = -||z_i - mu_j||**2 /
(2 s_j) - (k / 2) log(2 pi s_j)``::

    I_lower = E[ (1/N) sum_i ( L_ii - log (1/N)     sum_j     exp(L_ij) ) ]   (InfoNCE)
    I_upper = E[ (1/N) sum_i ( L_ii - log (1/(N-1)) sum_{j!=i} exp(L_ij) ) ] (leave-one-out)

``I_lower <= log N``. The expectation over ``z`` is a Monte Carlo average over
``n_samples`` draws per point (common random numbers across times).

**Gibbs and Bayes losses** (proxies of I(Y;Z), lower is more information about
Y). With the Gaussian observation model ``q(y | z) = N(y; z, obs_var I_k)``::

    Gibbs = (1/N) sum_i E_{z ~ p(z|x_i)} [-log q(y_i | z)]
          = (1/N) sum_i [ (||y_i - mu_i||**2 + k s_i) / (2 obs_var) + (k/2) log(2 pi obs_var) ]
    Bayes = -(1/N) sum_c log N(Y_c; mu_c, Sigma_t + obs_var I)

the expected loss of one member of the ensemble and the loss of the ensemble's
predictive distribution (jointly over the ``N`` points, per output column
``c``); ``Bayes <= Gibbs`` by Jensen's inequality.

**KL to the prior, bound on I(Z;D|X).** For any ``r(z|x)`` independent of the
data ``D``, ``I(Z;D|X) = E KL(p(z|x,D) || p(z|x)) <= E KL(p(z|x,D) ||
r(z|x))``; with ``r`` the ensemble at initialization, ``N(0, K(x, x) I_k)``::

    KL_t = (1/N) sum_i [ (k/2) (s_i / p_i - 1 - log(s_i / p_i)) + ||mu_i||**2 / (2 p_i) ]

with ``p_i = K(x_i, x_i) + var_floor``; ``KL_0 = 0``.

**Fisher information.** For the Gaussian likelihood the Fisher information
matrix per example is ``F = E_x J(x)' J(x)`` with ``J`` the Jacobian of the
``k`` outputs, so ``tr F = k * mean_i Theta(x_i, x_i)``: constant in time at
infinite width (the NTK does not move).

``var_floor`` (default 1e-8) adds a tiny independent noise to ``Z``: at
``t = inf`` the ensemble interpolates the training targets with zero variance
and the densities above would be degenerate.

References
----------
.. [1] R. Shwartz-Ziv and A. A. Alemi, "Information in infinite ensembles of
   infinitely-wide neural networks", Symposium on Advances in Approximate
   Bayesian Inference (AABI), PMLR 118, 2020. arXiv:1911.09189.
.. [2] B. Poole, S. Ozair, A. van den Oord, A. A. Alemi and G. Tucker, "On
   variational bounds of mutual information", ICML 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._units import check_unit, unit_scale
from .._validation import Interval, check_array, check_random_state, validate_params
from ._kernels import Kernels, _as_tensor
from ._predict import GaussianPrediction

__all__ = ["EnsembleInformation", "QUANTITIES", "ensemble_information", "fisher_trace"]

QUANTITIES = ("ixz_lower", "ixz_upper", "gibbs_loss", "bayes_loss", "kl_prior")

_LOG2PI = math.log(2.0 * math.pi)
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class EnsembleInformation:
    """Information quantities over training time (see the module docstring).

    Attributes
    ----------
    t : numpy.ndarray, shape (T,)
    ixz_lower, ixz_upper : numpy.ndarray, shape (T,)
        InfoNCE lower and leave-one-out upper bounds on I(X;Z).
    gibbs_loss, bayes_loss : numpy.ndarray, shape (T,)
        Per-example Gibbs and Bayes losses (negative log-likelihoods).
    kl_prior : numpy.ndarray, shape (T,)
        Mean KL(p_t(z|x) || p_0(z|x)), the upper bound on I(Z;D|X).
    unit : str
        'bits' or 'nats', the unit of every array.
    params : dict
        The settings used (n_samples, var_floor, obs_var, seed).
    """

    t: np.ndarray
    ixz_lower: np.ndarray
    ixz_upper: np.ndarray
    gibbs_loss: np.ndarray
    bayes_loss: np.ndarray
    kl_prior: np.ndarray
    unit: str
    params: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows: columns t, quantity, value, unit."""
        rows = [
            pd.DataFrame({"t": self.t, "quantity": q, "value": getattr(self, q), "unit": self.unit})
            for q in QUANTITIES
        ]
        return pd.concat(rows, ignore_index=True)


def _infonce_bounds(mean: torch.Tensor, var: torch.Tensor, eps: torch.Tensor) -> tuple[float, float]:
    """One Monte Carlo draw per row of ``eps``: (lower, upper) in nats, averaged over draws."""
    n, k = mean.shape
    sq_mu = (mean * mean).sum(dim=1)                                # (N,)
    log_norm = -0.5 * k * (torch.log(var) + _LOG2PI)                # (N,)
    inv = 1.0 / var
    chunk = max(1, min(n, _CHUNK_ELEMENTS // max(n, 1)))
    lower = upper = 0.0
    for e in eps:                                                   # (N, k)
        z = mean + var.sqrt()[:, None] * e
        sq_z = (z * z).sum(dim=1)
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            d2 = (sq_z[r0:r1, None] + sq_mu[None, :] - 2.0 * (z[r0:r1] @ mean.T)).clamp_(min=0.0)
            rows = torch.arange(r0, r1, device=mean.device)
            d2[rows - r0, rows] = ((z[r0:r1] - mean[r0:r1]) ** 2).sum(dim=1)  # exact own distance
            scores = -0.5 * d2 * inv[None, :] + log_norm[None, :]
            own = scores[rows - r0, rows]
            lse_all = torch.logsumexp(scores, dim=1)
            scores[rows - r0, rows] = -math.inf
            lse_loo = torch.logsumexp(scores, dim=1)
            lower += float((own - lse_all).sum())
            upper += float((own - lse_loo).sum())
    s = eps.shape[0] * n
    return lower / s + math.log(n), upper / s + math.log(n - 1)


def ensemble_information(
    prediction: GaussianPrediction,
    y: Any,
    prior_var: Any,
    *,
    n_samples: int = 16,
    var_floor: float = 1e-8,
    obs_var: float = 1.0,
    seed: Any = 0,
    unit: str = "bits",
) -> EnsembleInformation:
    """I(X;Z) bounds, Gibbs / Bayes losses and the I(Z;D|X) bound over time.

    Parameters
    ----------
    prediction : GaussianPrediction
        From :meth:`GradientFlowMSE.predict` on the ``N`` evaluation points,
        with ``full_cov=True`` (the Bayes loss is joint over the points).
    y : array-like of shape (N,) or (N, k)
        Targets of the evaluation points (as used for training).
    prior_var : array-like of shape (N,) or (N, N)
        The NNGP prior variance ``K(x_i, x_i)`` of the evaluation points (a
        full matrix is reduced to its diagonal).
    n_samples : int, default 16
        Monte Carlo draws of ``z`` per point for the I(X;Z) bounds.
    var_floor : float, default 1e-8
        Variance added to every ``s_t(x)`` and ``K(x, x)`` (see the module docstring).
    obs_var : float, default 1.0
        Variance of the Gaussian observation model of the losses.
    seed : None, int or numpy.random.Generator
    unit : {'bits', 'nats'}

    Returns
    -------
    EnsembleInformation

    References
    ----------
    .. [1] R. Shwartz-Ziv and A. A. Alemi, "Information in infinite ensembles
       of infinitely-wide neural networks", AABI 2020.
    .. [2] B. Poole et al., "On variational bounds of mutual information", ICML 2019.
    """
    check_unit(unit)
    validate_params(
        "ensemble_information",
        {"n_samples": n_samples, "var_floor": var_floor, "obs_var": obs_var},
        {"n_samples": [Interval(int, 1, None)], "var_floor": [Interval(float, 0, None, closed="neither")],
         "obs_var": [Interval(float, 0, None, closed="neither")]},
    )
    if not isinstance(prediction, GaussianPrediction):
        raise TypeError(f"'prediction' must be a GaussianPrediction; got {type(prediction).__name__}.")
    if prediction.cov is None:
        raise ValueError("'prediction' has no covariance between points; predict with full_cov=True "
                         "(the Bayes loss is joint over the evaluation points).")
    mean_all = _as_tensor(prediction.mean)
    dev = mean_all.device
    cov_all = _as_tensor(prediction.cov, dev)
    var_all = _as_tensor(prediction.var, dev)
    n_t, n, k = mean_all.shape
    if n < 2:
        raise ValueError("At least 2 evaluation points are needed for the I(X;Z) bounds.")
    yt = _as_tensor(check_array(y, "y", min_samples=1, keep_torch=True), dev)
    if tuple(yt.shape) != (n, k):
        raise ValueError(f"'y' must have shape ({n}, {k}) like the prediction's mean; got {tuple(yt.shape)}.")
    p = _as_tensor(prior_var.nngp if isinstance(prior_var, Kernels) else prior_var, dev)
    if p.ndim == 2 and tuple(p.shape) == (n, n):
        p = torch.diagonal(p)
    if tuple(p.shape) != (n,):
        raise ValueError(f"'prior_var' must have shape ({n},) or ({n}, {n}); got {tuple(p.shape)}.")
    if bool((p < 0).any()):
        raise ValueError("'prior_var' must be non-negative (it is K(x, x)).")
    p = p + var_floor

    rng = check_random_state(seed)
    eps = torch.as_tensor(rng.standard_normal((n_samples, n, k)), dtype=torch.float64, device=dev)
    out = {q: np.empty(n_t) for q in QUANTITIES}
    eye = torch.eye(n, dtype=torch.float64, device=dev)
    for i in range(n_t):
        mu, s = mean_all[i], var_all[i] + var_floor
        lo, up = _infonce_bounds(mu, s, eps)
        out["ixz_lower"][i] = max(lo, 0.0)
        out["ixz_upper"][i] = max(up, 0.0)
        resid = ((yt - mu) ** 2).sum(dim=1)
        gibbs = (resid + k * s) / (2.0 * obs_var) + 0.5 * k * (math.log(obs_var) + _LOG2PI)
        out["gibbs_loss"][i] = float(gibbs.mean())
        chol = torch.linalg.cholesky(cov_all[i] + obs_var * eye)
        white = torch.linalg.solve_triangular(chol, yt - mu, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(chol)).sum()
        nll = 0.5 * (white * white).sum() + 0.5 * k * logdet + 0.5 * n * k * _LOG2PI
        out["bayes_loss"][i] = float(nll) / n
        ratio = s / p
        kl = 0.5 * k * (ratio - 1.0 - torch.log(ratio)) + (mu * mu).sum(dim=1) / (2.0 * p)
        out["kl_prior"][i] = max(float(kl.mean()), 0.0)
    scale = unit_scale(unit)
    return EnsembleInformation(
        t=np.asarray(prediction.t, dtype=np.float64),
        **{q: v * scale for q, v in out.items()},
        unit=unit,
        params={"n_samples": n_samples, "var_floor": var_floor, "obs_var": obs_var,
                "seed": seed if isinstance(seed, (int, type(None))) else "generator"},
    )


def fisher_trace(k_train: Any, n_outputs: int = 1) -> float:
    """Trace of the per-example Fisher information, ``n_outputs * mean_i Theta(x_i, x_i)``.

    Parameters
    ----------
    k_train : Kernels or array of shape (n, n) or (n,)
        The NTK on the training inputs (a full matrix, or its diagonal).
    n_outputs : int, default 1
        Number ``k`` of network outputs.

    Returns
    -------
    float
        ``tr F`` for the Gaussian likelihood ``N(y; f(x), I_k)`` (unitless).

    References
    ----------
    .. [1] R. Shwartz-Ziv and A. A. Alemi, "Information in infinite ensembles
       of infinitely-wide neural networks", AABI 2020.
    """
    validate_params("fisher_trace", {"n_outputs": n_outputs}, {"n_outputs": [Interval(int, 1, None)]})
    ntk = k_train.ntk if isinstance(k_train, Kernels) else k_train
    t = _as_tensor(ntk)
    if t.ndim == 2:
        if t.shape[0] != t.shape[1]:
            raise ValueError(f"'k_train' must be square (n, n) or a diagonal (n,); got shape {tuple(t.shape)}.")
        t = torch.diagonal(t)
    elif t.ndim != 1:
        raise ValueError(f"'k_train' must be square (n, n) or a diagonal (n,); got shape {tuple(t.shape)}.")
    return float(n_outputs * t.to(torch.float64).mean())
