"""Gaussian (canonical-correlation) mutual information.

For jointly Gaussian (X, Y) with canonical correlations rho_1..rho_r
(r = min(d_x, d_y)), I(X;Y) = -1/2 sum_i log(1 - rho_i^2) nats [1]_, [2]_;
the rho_i are the singular values of S_xx^{-1/2} S_xy S_yy^{-1/2}. With
sample covariances this is the maximum-likelihood estimate, exact in the
limit for Gaussian data and, for any data, the MI of the Gaussian with the
same covariance (a lower bound on I(X;Y) for a fixed covariance only in the
sense of the maximum-entropy argument; not a bound in general).

References
----------
.. [1] H. Hotelling, "Relations between two sets of variates", Biometrika
   28, 1936.
.. [2] T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2006.
.. [3] N. A. Ahmed and D. V. Gokhale, "Entropy expressions and their
   estimators for multivariate distributions", IEEE Trans. Inf. Theory 35(3),
   1989 (unbiased Gaussian entropy estimator).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.linalg import solve_triangular
from scipy.special import digamma

from .._validation import BOOLEAN, NONE, InstanceOf, is_torch, resolve_device
from .base import CONTINUOUS, BaseMIEstimator

__all__ = ["Gaussian", "canonical_correlations", "gaussian_mi"]


def _whiten(c: Any, name: str) -> Any:
    """Inverse Cholesky factor L^{-1} of a covariance block (L L^T = c); numpy or torch."""
    if is_torch(c):
        chol, info = torch.linalg.cholesky_ex(c)
        ok = int(info) == 0
    else:
        try:
            chol, ok = np.linalg.cholesky(c), True
        except np.linalg.LinAlgError:
            ok = False
    if not ok:
        raise ValueError(
            f"The sample covariance of '{name}' is singular (collinear columns or too few "
            f"samples); drop redundant columns or pass more samples."
        )
    if is_torch(c):
        eye = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
        return torch.linalg.solve_triangular(chol, eye, upper=False)
    return solve_triangular(chol, np.eye(c.shape[0]), lower=True)


def canonical_correlations(x: Any, y: Any) -> Any:
    """Canonical correlations (descending) of samples x (n, dx), y (n, dy).

    numpy float64 arrays (computed with numpy/scipy) or torch tensors
    (computed on their device).
    """
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    n = x.shape[0]
    sxx = xc.T @ xc / (n - 1)
    syy = yc.T @ yc / (n - 1)
    sxy = xc.T @ yc / (n - 1)
    m = _whiten(sxx, "x") @ sxy @ _whiten(syy, "y").T
    if is_torch(m):
        return torch.linalg.svdvals(m)
    return np.linalg.svd(m, compute_uv=False)


def _logdet_bias(n: int, d: int) -> float:
    """E[log det S] - log det Sigma for the unbiased sample covariance of n Gaussian samples."""
    i = np.arange(1, d + 1)
    return float(np.sum(digamma((n - i) / 2.0)) + d * np.log(2.0 / (n - 1)))


def gaussian_mi(x: Any, y: Any, *, bias_correction: bool = False) -> float:
    """-1/2 sum log(1 - rho_i^2) in nats; optionally with the exact Gaussian log-det bias removed."""
    rho = canonical_correlations(x, y)
    rho = rho.cpu().numpy() if is_torch(rho) else np.asarray(rho)
    if bool((rho >= 1.0 - 1e-12).any()):
        raise ValueError(
            "'x' and 'y' are (numerically) perfectly correlated along some direction, so the "
            "Gaussian mutual information is infinite."
        )
    mi = float(-0.5 * np.log1p(-rho * rho).sum())
    if bias_correction:
        n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
        # I = 1/2 (logdet Sxx + logdet Syy - logdet S); remove each term's expected bias
        mi -= 0.5 * (_logdet_bias(n, dx) + _logdet_bias(n, dy) - _logdet_bias(n, dx + dy))
    return mi


class Gaussian(BaseMIEstimator):
    """Mutual information of the Gaussian fitted to (X, Y), via canonical correlations.

    I = -1/2 sum_i log(1 - rho_i^2) with rho_i the sample canonical
    correlations [1]_.

    Parameters
    ----------
    bias_correction : bool, default False
        Subtract the exact finite-sample bias of the three Gaussian log-det
        entropies (Ahmed & Gokhale [3]_): unbiased for the Gaussian entropy
        terms, so the MI estimate is unbiased for Gaussian data (then it can
        be negative near 0; it is clipped at 0).
    device : str, torch.device or None
        Where to compute with torch; None: CUDA tensors on their device, anything
        else with numpy/scipy on CPU.
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    Bias: exact (consistent, root-N) for jointly Gaussian data; without the
    correction biased upward by about d_x d_y / (2N) nats for independent
    variables. For non-Gaussian data it measures only the linear dependence
    (the MI of the Gaussian with the same covariance), which can be far from
    I(X;Y) (e.g. 0 for y = x^2 with symmetric x). Needs N > d_x + d_y and
    non-singular covariances. Continuous variables only.
    Cost: O(N (d_x + d_y)^2 + (d_x + d_y)^3).

    References
    ----------
    .. [1] Hotelling, Biometrika 28 (1936).
    .. [3] Ahmed & Gokhale, IEEE Trans. Inf. Theory 35(3) (1989).
    """

    name = "gaussian"
    bound = None
    supports = frozenset({(CONTINUOUS, CONTINUOUS)})
    keep_torch = True
    min_samples = 3
    _constraints = {
        "bias_correction": [BOOLEAN],
        "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
    }

    def __init__(self, *, bias_correction: bool = False, device: Any = None, unit: str = "bits"):
        self.bias_correction = bias_correction
        self.device = device
        self.unit = unit
        self._check_params()

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        use_torch = self.device is not None or any(
            is_torch(a) and a.device.type != "cpu" for a in (x, y))
        device = resolve_device(self.device, like=x) if use_torch else None
        ts = []
        for a, name in ((x, "x"), (y, "y")):
            if use_torch:
                t = (a.detach() if is_torch(a) else torch.as_tensor(np.asarray(a))).to(device, torch.float64)
                const = torch.nonzero(t.amax(0) == t.amin(0)).reshape(-1).tolist()
            else:
                t = (a.detach().cpu().numpy() if is_torch(a) else np.asarray(a)).astype(np.float64)
                const = np.flatnonzero(np.ptp(t, axis=0) == 0).tolist()
            if const:
                raise ValueError(
                    f"'{name}' has zero-variance column(s) {const[:10]}; drop them "
                    f"(a constant carries no information)."
                )
            ts.append(t)
        n, d = ts[0].shape[0], ts[0].shape[1] + ts[1].shape[1]
        if n <= d + 1:
            raise ValueError(
                f"The Gaussian estimator needs more samples than dimensions (n > d_x + d_y + 1 = "
                f"{d + 1}); got n={n}."
            )
        return max(gaussian_mi(ts[0], ts[1], bias_correction=self.bias_correction), 0.0)
