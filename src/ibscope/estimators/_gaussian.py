"""Gaussian (canonical-correlation) mutual information.

For jointly Gaussian (X, Y) with canonical correlations rho_1..rho_r
(r = min(d_x, d_y)), I(X;Y) = -1/2 sum_i log(1 - rho_i^2) nats [1]_, [2]_;
the rho_i are the singular values of S_xx^{-1/2} S_xy S_yy^{-1/2}. With
sample covariances this is the maximum-likelihood estimate, exact in the
limit for Gaussian data and, for any data, the MI of the Gaussian with the
same covariance (a lower bound on I(X;Y) for a fixed covariance only in the
sense of the maximum-entropy argument; not a bound in general).

Degenerate columns (:func:`reduce_columns`). Real layers have constant
columns (dead units, MNIST's border pixels), exact duplicates and linear
dependences (a LayerNorm output sums to a constant, so its covariance has
rank d - 1; a linear layer wider than its input; n <= d samples). None of
them changes I(X;Y): a column that is a function of the other columns of its
variable adds nothing, I(X;Y) = I(X_S;Y) for any set S of columns of X that
determines the rest (and MI is invariant under the invertible map between X_S
and the support of X). The estimators therefore drop, per variable, its
constant and duplicate columns and then every column whose residual variance
after linear regression on the kept ones is below ``RANK_TOL`` = 1e-10 of its
own variance (pivoted Cholesky of the correlation matrix [4]_, i.e. a
column-pivoted QR of the standardized data: the kept columns are a basis of
the variable's numerical column space). The threshold is relative to each
column's variance, hence unit-free: float32 activations (relative rounding
1.2e-7, so a residual variance ~1e-14 of the column's) are recognised as
dependent with four orders of magnitude to spare, while any genuine direction
keeps far more than 1e-10 of a column's variance. What was dropped is stored
(``columns_``) and flagged (``dropped_columns``, ``rank_deficient``); a
variable with no non-constant column (rank 0) gives I = 0, flagged
``constant_variable``.

References
----------
.. [1] H. Hotelling, "Relations between two sets of variates", Biometrika
   28, 1936.
.. [2] T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2006.
.. [3] N. A. Ahmed and D. V. Gokhale, "Entropy expressions and their
   estimators for multivariate distributions", IEEE Trans. Inf. Theory 35(3),
   1989 (unbiased Gaussian entropy estimator).
.. [4] N. J. Higham, "Analysis of the Cholesky decomposition of a
   semi-definite matrix", in Reliable Numerical Computation, Oxford
   University Press, 1990 (pivoted Cholesky and its rank decision; LAPACK
   ``dpstrf``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.linalg import lapack, solve_triangular
from scipy.special import digamma

from .._validation import (
    BOOLEAN,
    NONE,
    InstanceOf,
    drop_degenerate_columns,
    is_torch,
    resolve_device,
)
from .base import CONTINUOUS, BaseMIEstimator

__all__ = ["Gaussian", "canonical_correlations", "gaussian_mi", "reduce_columns", "RANK_TOL"]

RANK_TOL = 1e-10  # a column is dependent when < 1e-10 of its variance is not explained by the kept ones


def reduce_columns(a: Any, *, tol: float = RANK_TOL) -> tuple[Any, dict[str, Any]]:
    """The columns of ``a`` (n, d) that span its numerical column space, and what was dropped.

    First constant and exact duplicate columns are dropped
    (:func:`ibscope._validation.drop_degenerate_columns`), then the linearly
    dependent ones: a pivoted Cholesky factorization (LAPACK ``dpstrf`` [4]_)
    of the correlation matrix of the rest picks, greedily, the column with the
    largest variance not yet explained by linear regression on the columns
    picked so far, and stops when every remaining column has less than
    ``tol`` of its variance left (1 - R^2 < tol; default ``RANK_TOL`` =
    1e-10, see the module docstring). Every dropped column is a function of
    the kept ones (up to that tolerance), so the mutual information of the
    variable with anything is unchanged. Which column of a dependent set is
    dropped follows the pivoting (of x1, x2, x1 + x2 any one may go), which
    is the numerically stable order; the kept columns are returned in input
    order.

    Parameters
    ----------
    a : numpy array or torch tensor, shape (n, d)
        A continuous variable (tensors stay on their device).
    tol : float, default RANK_TOL
        Residual-variance fraction below which a column counts as dependent.

    Returns
    -------
    kept : array or tensor, shape (n, r)
        The kept columns in input order (``a`` itself when none is dropped);
        r = 0 when every column is constant.
    info : dict
        ``{'constant': [...], 'duplicate': [...], 'dependent': [...], 'kept': [...], 'rank': r}``
        with column indices of ``a``.
    """
    kept_a, deg = drop_degenerate_columns(a)
    kept = list(deg["kept"])
    info: dict[str, Any] = {"constant": list(deg["constant"]), "duplicate": list(deg["duplicate"]),
                            "dependent": [], "kept": kept, "rank": len(kept)}
    n = int(a.shape[0])
    if n < 2 or not kept:
        return kept_a, info
    col = kept_a[:, 0]
    if len(kept) == 1 and bool((col == col[0]).all()):  # every column constant: rank 0
        info.update(constant=sorted(info["constant"] + kept), kept=[], rank=0)
        return kept_a[:, :0], info
    if len(kept) == 1:
        return kept_a, info
    # centred columns scaled by their largest magnitude first: the variance of a column of values ~1e-162
    # underflows to 0 (0/0 correlations) while its scaled copy has the same correlations
    if is_torch(kept_a):
        t = kept_a.to(torch.float64)
        c = t - t.mean(0)
        c = c / c.abs().amax(0)
        z = c / c.std(0)
        corr = (z.T @ z / (n - 1)).cpu().numpy()
    else:
        t = np.asarray(kept_a, dtype=np.float64)
        c = t - t.mean(0)
        c = c / np.abs(c).max(0)
        z = c / c.std(0, ddof=1)
        corr = z.T @ z / (n - 1)
    _, piv, rank, _ = lapack.dpstrf(np.ascontiguousarray(corr), tol=tol, lower=1)
    rank = int(rank)
    if rank == len(kept):
        return kept_a, info
    sel = sorted(int(p) - 1 for p in piv[:rank])
    info.update(dependent=sorted(kept[j] for j in set(range(len(kept))) - set(sel)),
                kept=[kept[j] for j in sel], rank=rank)
    idx = (torch.as_tensor(sel, dtype=torch.long, device=kept_a.device) if is_torch(kept_a)
           else np.asarray(sel, dtype=np.intp))
    return kept_a[:, idx], info


def compose_columns(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """``outer`` (a :func:`reduce_columns` record) after a second reduction ``inner`` of its kept columns.

    Columns the second pass drops (e.g. equal normal scores of two columns
    related by a strictly increasing map) are functions of the kept ones:
    they are added to 'dependent', in the indices of the original input.
    """
    kept = outer["kept"]
    more = [kept[j] for j in inner["constant"] + inner["duplicate"] + inner["dependent"]]
    return {**outer, "dependent": sorted(outer["dependent"] + more),
            "kept": [kept[j] for j in inner["kept"]], "rank": inner["rank"]}


def reduction_flags(columns: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """Diagnostic flags of the :func:`reduce_columns` records of the variables ('x', 'y')."""
    flags = []
    if any(c["rank"] == 0 for c in columns.values()):
        flags.append("constant_variable")
    if any(c["rank"] > 0 and (c["constant"] or c["duplicate"]) for c in columns.values()):
        flags.append("dropped_columns")
    if any(c["dependent"] for c in columns.values()):
        flags.append("rank_deficient")
    return tuple(flags)


def too_few_samples(owner: str, n: int, columns: dict[str, dict[str, Any]], dims: dict[str, int]) -> str:
    """The error text when n <= r_x + r_y + 1 (r: ranks after :func:`reduce_columns`)."""
    r = sum(c["rank"] for c in columns.values())
    reduced = "".join(f", '{k}' rank {c['rank']} of {dims[k]} columns" for k, c in columns.items()
                      if c["rank"] != dims[k])
    return (f"The {owner} estimator needs more samples than dimensions (n > d_x + d_y + 1 = {r + 1}"
            f"{reduced}); got n={n}. With fewer samples than dimensions every sample canonical "
            f"correlation is 1: compress the variables first (e.g. 'pca_ksg').")


class _ColumnsRecord:
    """Mixin: ``columns_`` and the reduction flags of the call on all rows.

    ``estimate_ci`` calls ``_estimate_nats`` on subsamples after the call on
    all rows; ``columns_`` keeps the first call's record.
    """

    def estimate(self, x, y, **kwargs):
        self._columns_first = True
        return super().estimate(x, y, **kwargs)

    def estimate_ci(self, x, y, **kwargs):
        self._columns_first = True
        return super().estimate_ci(x, y, **kwargs)

    def _set_columns(self, columns: dict[str, dict[str, Any]]) -> None:
        self._reduction_flags = reduction_flags(columns)
        if getattr(self, "_columns_first", True):
            self.columns_ = columns
            self._columns_first = False

    def _extra_flags(self, x, y, discrete_x, discrete_y) -> tuple[str, ...]:
        return tuple(super()._extra_flags(x, y, discrete_x, discrete_y)) + getattr(
            self, "_reduction_flags", ())


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


class Gaussian(_ColumnsRecord, BaseMIEstimator):
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

    Attributes
    ----------
    columns_ : dict
        ``{'x': record, 'y': record}`` of :func:`reduce_columns` (which columns
        were dropped as constant, duplicate or linearly dependent; the rank)
        for the last call on all rows.

    Notes
    -----
    Bias: exact (consistent, root-N) for jointly Gaussian data; without the
    correction biased upward by about d_x d_y / (2N) nats for independent
    variables. For non-Gaussian data it measures only the linear dependence
    (the MI of the Gaussian with the same covariance), which can be far from
    I(X;Y) (e.g. 0 for y = x^2 with symmetric x). Continuous variables only.
    Constant, duplicate and linearly dependent columns are dropped first
    (:func:`reduce_columns`, recorded in ``columns_`` and flagged); needs
    N > r_x + r_y + 1 for the ranks r of what is left. A variable of rank
    0 (all columns constant) gives 0 (flag ``constant_variable``).
    Cost: O(N (d_x + d_y)^2 + (d_x + d_y)^3).

    References
    ----------
    .. [1] Hotelling, Biometrika 28 (1936).
    .. [3] Ahmed & Gokhale, IEEE Trans. Inf. Theory 35(3) (1989).
    .. [4] Higham, Reliable Numerical Computation (1990) (pivoted Cholesky).
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
        ts, columns = [], {}
        for a, name in ((x, "x"), (y, "y")):
            if use_torch:
                t = (a.detach() if is_torch(a) else torch.as_tensor(np.asarray(a))).to(device, torch.float64)
            else:
                t = (a.detach().cpu().numpy() if is_torch(a) else np.asarray(a)).astype(np.float64)
            t, columns[name] = reduce_columns(t)
            ts.append(t)
        self._set_columns(columns)
        if any(c["rank"] == 0 for c in columns.values()):
            return 0.0  # a constant variable shares no information
        n, d = ts[0].shape[0], ts[0].shape[1] + ts[1].shape[1]
        if n <= d + 1:
            raise ValueError(too_few_samples("Gaussian", n, columns, {"x": x.shape[1], "y": y.shape[1]}))
        return max(gaussian_mi(ts[0], ts[1], bias_correction=self.bias_correction), 0.0)
