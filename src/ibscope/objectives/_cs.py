"""Cauchy-Schwarz information bottleneck for regression, and matrix-Renyi losses.

Kernel convention (one, stated, the same as :mod:`ibscope.estimators` Renyi):
the Gaussian kernel ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` on whole
rows (any dimension). Widths are chosen by a rule on the *data* (detached, so
the width never moves with the prediction it scores):

* ``'silverman'``: sigma = s * (4 / ((d + 2) n))^(1 / (d + 4)), with s the
  mean per-column standard deviation (Silverman's multivariate rule of thumb;
  1.06 s n^(-1/5) in 1-D up to the constant);
* ``'median'``: the median of the pairwise distances between distinct rows;
* a positive float: that width.

**Prediction term.** The conditional CS divergence between the data's p(y|x)
and the model's q(y_hat|x) (Yu et al. [1]_, [2]_),

    D_CS = -2 log int p(y|x) q(y|x) + log int p(y|x)^2 + log int q(y|x)^2,

estimated with kernel density estimates that share the inputs x (K the Gram
matrix of x, L^{a,b}_ji = k(a_j, b_i) on targets):

    D_CS ~ log sum_j [sum_i K_ji L^{y,y}_ji   / (sum_i K_ji)^2]
         + log sum_j [sum_i K_ji L^{yh,yh}_ji / (sum_i K_ji)^2]
         - 2 log sum_j [sum_i K_ji L^{y,yh}_ji / (sum_i K_ji)^2].

It is exactly 0 when y_hat = y. The kernel on the targets is a proper Gaussian
for 1-D and multi-dimensional targets alike; the public reference code's
kernel was constant on 1-D targets, which turned the "divergence" into plain
squared error (our tests check that this one is not).

**Compression term.** The CS quadratic mutual information of (X, Z) [1]_:

    I_CS = log(tr(Kx Kz) / N^2) + log(sum Kx * sum Kz / N^4) - 2 log(1^T Kx Kz 1 / N^3) >= 0.

**Matrix-based Renyi alpha-entropy** (Sanchez Giraldo et al. [3]_), the
functions of :mod:`ibscope.estimators._renyi` with a loss-friendly default:
A_ij = K_ij / (N sqrt(K_ii K_jj)), S_alpha(A) =
log2(sum lambda_i^alpha) / (1 - alpha); for alpha = 2 it is
-log2 ||A||_F^2, which needs no eigendecomposition (the loss default).
Joint entropy via the normalized Hadamard product; I = S(A) + S(B) - S(A,B).

References
----------
.. [1] S. Yu, X. Yu, S. Lokse, R. Jenssen and J. C. Principe, "Cauchy-Schwarz
   divergence information bottleneck for regression", ICLR 2024.
.. [2] S. Yu, H. Li, S. Lokse, R. Jenssen and J. C. Principe, "The
   conditional Cauchy-Schwarz divergence with applications to time-series
   data and sequential decision making", arXiv:2301.08970, 2023.
.. [3] L. G. Sanchez Giraldo, M. Rao and J. C. Principe, "Measures of entropy
   from data using infinitely divisible kernels", IEEE Trans. Inf. Theory
   61(1), 2015.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._units import LN2, check_unit, nats_to, unit_scale
from .._validation import Interval, check_finite, validate_params
from ..estimators import _renyi
from ._schedule import AnnealingSchedule, check_weight, resolve_weight

__all__ = ["gaussian_gram", "kernel_width", "cs_divergence", "cs_qmi", "cs_qmi_normalized", "CSIBLoss",
           "csib_code_loss",
           "matrix_renyi_entropy", "matrix_renyi_mi"]

WIDTH_RULES = ("silverman", "median", "knn")


def _as_2d(a: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(a).__name__}.")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        a = a.reshape(a.shape[0], -1)
    if a.shape[0] < 2:
        raise ValueError(f"'{name}' needs at least 2 samples, got {a.shape[0]}.")
    if not a.dtype.is_floating_point:
        if a.dtype.is_complex or a.dtype == torch.bool:
            raise TypeError(f"'{name}' must hold real numbers, got a tensor of dtype {a.dtype}.")
        a = a.to(torch.float64)
    check_finite(a, name)
    return a


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # exact differences (not the |a|^2 + |b|^2 - 2ab expansion) so that the
    # diagonal is exactly 0 and gradients are clean; fine for loss-sized batches
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def kernel_width(x: torch.Tensor, rule: str | float = "silverman") -> float:
    """Gaussian kernel width sigma for the rows of ``x`` by ``rule`` (see module docstring).

    The rules are those of :func:`ibscope.estimators._renyi.kernel_width`
    (one implementation); the width is computed on detached data.
    """
    if isinstance(rule, str) and rule not in WIDTH_RULES:
        raise ValueError(f"'rule' must be a float > 0 or one of {WIDTH_RULES}; got {rule!r}.")
    return _renyi.kernel_width(_as_2d(x, "x").detach().double(), rule)


def gaussian_gram(a: torch.Tensor, sigma: float, b: torch.Tensor | None = None) -> torch.Tensor:
    """K_ij = exp(-||a_i - b_j||^2 / (2 sigma^2)) (b defaults to a); differentiable."""
    a = _as_2d(a, "a")
    b = a if b is None else _as_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"'a' and 'b' must have the same number of columns; got {a.shape[1]} and {b.shape[1]}.")
    return torch.exp(-_sq_dists(a, b) / (2.0 * float(sigma) ** 2))


def cs_divergence(x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, *,
                  sigma_x: str | float = "silverman", sigma_y: str | float = "silverman",
                  unit: str = "nats") -> torch.Tensor:
    """Conditional CS divergence D_CS(p(y|x) || q(y_hat|x)) from paired samples (differentiable in y_hat).

    Parameters
    ----------
    x : tensor (n, ...) inputs (rows flattened)
    y, y_hat : tensors (n,) or (n, d)
        Targets and predictions of the same shape.
    sigma_x, sigma_y : str or float
        Width rules or widths; ``sigma_y`` is computed on ``y`` (detached) and
        used for every target kernel.
    unit : {'nats', 'bits'}
        Natural log by default (a loss); 'bits' divides by ln 2.
    """
    check_unit(unit)
    x2, y2, yh2 = _as_2d(x, "x"), _as_2d(y, "y"), _as_2d(y_hat, "y_hat")
    if y2.shape != yh2.shape:
        raise ValueError(f"'y' and 'y_hat' must have the same shape; got {tuple(y.shape)} and {tuple(y_hat.shape)}.")
    if x2.shape[0] != y2.shape[0]:
        raise ValueError(f"'x' and 'y' must have the same number of samples; got {x2.shape[0]} and {y2.shape[0]}.")
    dtype = torch.promote_types(yh2.dtype, torch.float32)
    kx = gaussian_gram(x2.detach().to(dtype), kernel_width(x2, sigma_x))
    sy = kernel_width(y2, sigma_y)
    y2, yh2 = y2.to(dtype), yh2.to(dtype)
    w = kx / kx.sum(dim=1, keepdim=True) ** 2          # K_ji / (sum_i K_ji)^2, row j

    def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # sum_j sum_i w_ji k(a_j, b_i)
        return (w * gaussian_gram(a, sy, b)).sum()

    d = torch.log(term(y2, y2)) + torch.log(term(yh2, yh2)) - 2.0 * torch.log(term(y2, yh2))
    return nats_to(d, unit)


def cs_qmi(kx: torch.Tensor, kz: torch.Tensor, *, unit: str = "nats") -> torch.Tensor:
    """CS quadratic mutual information of two (n, n) Gram matrices (>= 0, differentiable).

    I_CS = log(tr(Kx Kz)/N^2) + log(sum Kx sum Kz / N^4) - 2 log(1^T Kx Kz 1 / N^3).
    """
    check_unit(unit)
    for name, k in (("kx", kx), ("kz", kz)):
        if not isinstance(k, torch.Tensor) or k.ndim != 2 or k.shape[0] != k.shape[1]:
            raise ValueError(f"'{name}' must be a square (n, n) Gram matrix tensor.")
    if kx.shape != kz.shape:
        raise ValueError(f"'kx' and 'kz' must have the same shape; got {tuple(kx.shape)} and {tuple(kz.shape)}.")
    n = kx.shape[0]
    v_joint = (kx * kz).sum() / n ** 2                   # tr(Kx Kz) for symmetric matrices
    v_marg = kx.sum() * kz.sum() / n ** 4
    v_cross = (kx.sum(0) * kz.sum(0)).sum() / n ** 3     # 1^T Kx Kz 1
    i = torch.log(v_joint) + torch.log(v_marg) - 2.0 * torch.log(v_cross)
    return nats_to(i, unit)


def cs_qmi_normalized(kx: torch.Tensor, kz: torch.Tensor) -> torch.Tensor:
    """I_CS(X;Z) / sqrt(I_CS(X;X) I_CS(Z;Z)): the CS-QMI scaled to [0, 1]-like values (1 for X = Z).

    The compression term of the CS-IB reference code (Yu et al. 2024, its
    ``loss_cs.py``), a ratio of CS-QMIs (unit-free).
    """
    return cs_qmi(kx, kz) / torch.sqrt(cs_qmi(kx, kx) * cs_qmi(kz, kz))


def csib_code_loss(x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, beta: float, *,
                   sigma: float = 1.0) -> tuple[torch.Tensor, dict[str, Any]]:
    """The objective the CS-IB reference code optimizes (not the paper's equations): fit term + beta x
    normalized CS-QMI(X; Z), all kernels of width ``sigma`` (1 in the code).

    The code's conditional CS divergence (its Eq. 18 implementation) weighs
    each row by sum_j K_ij L_ij / sum_j K_ij^2 and takes
    -2 log2(cross) + log2(self_y) + log2(self_y_hat). Its target Gram matrix
    is built from the batch's target *vector* when the target is 1-D, so
    every entry is the same: exp(-||y - y_hat||^2 / (2 sigma^2)) between y
    and y_hat and 1 within each, and the term is exactly SSE / (sigma^2
    ln 2) -- a sum of squared errors over the batch, in bits. For targets
    with several columns (``y`` of shape (n, d), d > 1) the per-row kernels
    are used as written.

    Parameters
    ----------
    x, z : tensors (n, ...)
        Inputs (flattened) and representation.
    y, y_hat : tensors (n, d)
        Targets and predictions.
    beta : float >= 0
        Weight of the compression term.
    sigma : float > 0
        Kernel width of every Gram matrix.

    Returns
    -------
    (loss, terms)
        ``terms``: ``fit`` (bits) and ``i_cs_normalized`` (unit-free).

    References
    ----------
    .. [1] S. Yu et al., "Cauchy-Schwarz divergence information bottleneck
       for regression", ICLR 2024; reference code
       github.com/SJYuCNEL/Cauchy-Schwarz-Information-Bottleneck (loss_cs.py,
       CS_IB_Housing.py), read for what it computes.
    """
    x2, z2, y2, yh2 = _as_2d(x, "x"), _as_2d(z, "z"), _as_2d(y, "y"), _as_2d(y_hat, "y_hat")
    if y2.shape != yh2.shape:
        raise ValueError(f"'y' and 'y_hat' must have the same shape; got {tuple(y.shape)} and {tuple(y_hat.shape)}.")
    if not (x2.shape[0] == z2.shape[0] == y2.shape[0]):
        raise ValueError("'x', 'z', 'y' and 'y_hat' must have the same number of samples.")
    kx = gaussian_gram(x2.detach().to(z2.dtype), sigma)
    if y2.shape[1] == 1:
        fit_term = ((yh2 - y2.to(yh2.dtype)) ** 2).sum() / (sigma ** 2 * LN2)  # -2 log2 exp(-SSE / 2s2)
    else:
        w = kx / (kx ** 2).sum(dim=1, keepdim=True)

        def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (w * gaussian_gram(a, sigma, b)).sum()

        y2 = y2.to(yh2.dtype)
        fit_term = (torch.log(term(y2, y2)) + torch.log(term(yh2, yh2)) - 2.0 * torch.log(term(y2, yh2))) / LN2
    i_norm = cs_qmi_normalized(kx, gaussian_gram(z2, sigma))
    loss = fit_term + beta * i_norm
    return loss, {"fit": float(fit_term.detach()), "i_cs_normalized": float(i_norm.detach())}


class CSIBLoss(nn.Module):
    """Cauchy-Schwarz IB for regression: D_CS(p(y|x) || q(y_hat|x)) + beta * I_CS(X; Z).

    ``loss, terms = CSIBLoss(beta)(x, z, y, y_hat)``, ``z`` the bottleneck
    representation. ``loss`` in nats (natural-log CS quantities, as in the
    paper); ``terms`` holds ``cs_div``, ``i_cs`` (floats, in ``unit``) and ``beta``.

    Parameters
    ----------
    beta : float or AnnealingSchedule
        Weight >= 0 of the compression term.
    sigma_x, sigma_z, sigma_y : str or float
        Width rules or widths of the kernels on inputs, representation and targets.
    unit : {'bits', 'nats'}
        Unit of the reported terms.
    """

    def __init__(self, beta: float | AnnealingSchedule = 1e-2, *, sigma_x: str | float = "silverman",
                 sigma_z: str | float = "silverman", sigma_y: str | float = "silverman", unit: str = "bits"):
        super().__init__()
        check_weight(beta, "beta", "CSIBLoss")
        for name, v in (("sigma_x", sigma_x), ("sigma_z", sigma_z), ("sigma_y", sigma_y)):
            if isinstance(v, str):
                if v not in WIDTH_RULES:
                    raise ValueError(f"'{name}' must be a float > 0 or one of {WIDTH_RULES}; got {v!r}.")
            else:
                validate_params("CSIBLoss", {name: v}, {name: [Interval(float, 0, None, closed="neither")]})
        self.beta, self.sigma_x, self.sigma_z, self.sigma_y = beta, sigma_x, sigma_z, sigma_y
        self.unit = check_unit(unit)
        self.step_ = 0

    def step(self) -> None:
        self.step_ += 1

    def forward(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        beta = resolve_weight(self.beta, self.step_, "beta")
        div = cs_divergence(x, y, y_hat, sigma_x=self.sigma_x, sigma_y=self.sigma_y)
        x2, z2 = _as_2d(x, "x"), _as_2d(z, "z")
        if z2.shape[0] != x2.shape[0]:
            raise ValueError(f"'x' and 'z' must have the same number of samples; got {x2.shape[0]} and {z2.shape[0]}.")
        kx = gaussian_gram(x2.detach().to(z2.dtype), kernel_width(x2, self.sigma_x))
        kz = gaussian_gram(z2, kernel_width(z2, self.sigma_z))
        i_cs = cs_qmi(kx, kz)
        loss = div + beta * i_cs
        scale = unit_scale(self.unit)
        return loss, {"cs_div": float(div.detach()) * scale, "i_cs": float(i_cs.detach()) * scale, "beta": beta, "unit": self.unit}


# --------------------------------------------------------------------------- #
# Matrix-based Renyi alpha-entropy (differentiable)
# --------------------------------------------------------------------------- #
def matrix_renyi_entropy(k: torch.Tensor, alpha: float = 2.0, *, unit: str = "bits") -> torch.Tensor:
    """S_alpha(A), A_ij = K_ij / (N sqrt(K_ii K_jj)), of a PSD Gram matrix ``k`` (differentiable).

    The loss-oriented front of :func:`ibscope.estimators._renyi.renyi_entropy`
    (same normalization and values): alpha defaults to 2, computed without an
    eigendecomposition as -log ||A||_F^2 (stable gradients even with repeated
    eigenvalues); other alpha go through ``eigvalsh``. For n orthogonal points
    (K = I) every eigenvalue of A is 1/n and S_alpha = log2(n) for every alpha.
    """
    check_unit(unit)
    if not isinstance(k, torch.Tensor) or k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError("'k' must be a square (n, n) Gram matrix tensor.")
    alpha = _check_alpha(alpha)
    if alpha != 2.0:
        return _renyi.renyi_entropy(k, alpha, unit=unit)
    a = _renyi._normalize(k)
    s = -torch.log((a * a).sum())
    return nats_to(s, unit)


def matrix_renyi_mi(kx: torch.Tensor, ky: torch.Tensor, alpha: float = 2.0, *, unit: str = "bits") -> torch.Tensor:
    """I_alpha = S(A) + S(B) - S(A o B / tr(A o B)) of two Gram matrices (differentiable)."""
    if not isinstance(kx, torch.Tensor) or not isinstance(ky, torch.Tensor) or kx.shape != ky.shape:
        raise ValueError("'kx' and 'ky' must be Gram matrix tensors of the same (n, n) shape.")
    alpha = _check_alpha(alpha)
    if alpha != 2.0:
        return _renyi.renyi_mi(kx, ky, alpha, unit=unit)
    return (matrix_renyi_entropy(kx, alpha, unit=unit) + matrix_renyi_entropy(ky, alpha, unit=unit)
            - matrix_renyi_entropy(kx * ky, alpha, unit=unit))


def _check_alpha(alpha: Any) -> float:
    validate_params("matrix_renyi_entropy", {"alpha": alpha}, {"alpha": [Interval(float, 0, None, closed="neither")]})
    if alpha == 1:
        raise ValueError("'alpha' must differ from 1 (use alpha = 1.01 for a near-Shannon value).")
    return float(alpha)
