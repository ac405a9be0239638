"""Matrix-based Renyi alpha-entropy mutual information.

Giraldo, Rao & Principe [1]_ define an entropy-like functional directly on a
Gram matrix, with no density estimate. For samples x_1..x_N and a positive
definite kernel K with K_ii > 0,

    A_ij = K_ij / (N sqrt(K_ii K_jj))                (trace 1, positive semidefinite)
    S_alpha(A) = log(sum_i lambda_i(A)^alpha) / (1 - alpha)

(lambda_i the eigenvalues of A; alpha -> 1 gives the von Neumann entropy
-sum lambda log lambda). The joint entropy uses the normalized Hadamard
product, and the mutual information is

    S_alpha(A, B) = S_alpha(A o B / tr(A o B)),
    I_alpha(A; B) = S_alpha(A) + S_alpha(B) - S_alpha(A, B).

Yu et al. [2]_ extended this to several variables and use it to analyse and
train deep networks (alpha = 1.01 for measurement, alpha = 2 as a loss).

This is **not** Shannon mutual information. It is a kernel functional whose
value depends on the kernel width and on N (entropies are at most log N). It
satisfies 0 <= I_alpha <= min(S_alpha(A), S_alpha(B)) [1]_, vanishes (in the
large-sample limit) for independent variables, grows with the dependence, and
for a label (delta) kernel reduces exactly to the Renyi entropy of the label
distribution. Use it to compare and rank, not as bits of Shannon information.

Kernel convention (one, stated): the Gaussian kernel
``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` on the raw (unstandardized)
data, so K_ii = 1 and A = K / N. For discrete variables the label kernel
``K_ij = 1[x_i == x_j]`` (whole rows compared).

References
----------
.. [1] L. G. Sanchez Giraldo, M. Rao and J. C. Principe, "Measures of entropy
   from data using infinitely divisible kernels", IEEE Trans. Information
   Theory 61(1), 2015.
.. [2] S. Yu, L. G. Sanchez Giraldo, R. Jenssen and J. C. Principe,
   "Multivariate extension of matrix-based Renyi's alpha-order entropy
   functional", IEEE TPAMI 42(11), 2020; S. Yu and J. C. Principe,
   "Understanding autoencoders with information theoretic concepts",
   Neural Networks 117, 2019.
.. [3] B. W. Silverman, "Density Estimation for Statistics and Data
   Analysis", Chapman & Hall, 1986 (the rule-of-thumb width).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np
import torch

from .._units import unit_scale
from .._validation import (
    NONE,
    InstanceOf,
    Interval,
    Options,
    check_random_state,
    discrete_symbols,
    is_torch,
    resolve_device,
)
from .base import BaseMIEstimator

__all__ = [
    "Renyi",
    "gram_matrix",
    "label_gram_matrix",
    "kernel_width",
    "renyi_entropy",
    "renyi_joint_entropy",
    "renyi_mi",
]

WIDTH_RULES = ("silverman", "knn", "median")


# --------------------------------------------------------------------------- #
# Pure (differentiable) torch functions
# --------------------------------------------------------------------------- #
def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (
        math.isfinite(float(alpha)) and float(alpha) > 0
    ):
        raise ValueError(f"The 'alpha' parameter must be a float in (0, inf). Got {alpha!r} instead.")
    return float(alpha)


def _unit_factor(unit: str) -> float:
    return unit_scale(unit)


def gram_matrix(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian Gram matrix ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``.

    Differentiable in ``x`` (and in ``sigma`` if it is a tensor); computed on
    ``x``'s device and dtype. Squared distances come from the expansion
    ||a||^2 + ||b||^2 - 2 a.b, clamped at 0, so memory is O(N^2), not O(N^2 d).

    Parameters
    ----------
    x : torch.Tensor of shape (N,) or (N, d)
    sigma : float or 0-dim tensor, > 0
        Kernel width (standard-deviation convention).
    """
    if not is_torch(x):
        raise TypeError(f"'x' must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim == 1:
        x = x[:, None]
    if not is_torch(sigma) and not (
        isinstance(sigma, numbers.Real) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0
    ):
        raise ValueError(f"The 'sigma' parameter must be a float in (0, inf). Got {sigma!r} instead.")
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp(min=0.0)
    d2 = d2 * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))  # exact zero diagonal
    return torch.exp(-d2 / (2.0 * sigma * sigma))


def label_gram_matrix(labels: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Label (delta) kernel ``K_ij = 1[label_i == label_j]`` of integer labels (N,) or rows (N, d)."""
    if labels.ndim == 2:
        eq = (labels[:, None, :] == labels[None, :, :]).all(dim=2)
    else:
        eq = labels[:, None] == labels[None, :]
    return eq.to(dtype)


def _normalize(k: torch.Tensor) -> torch.Tensor:
    """A_ij = K_ij / (N sqrt(K_ii K_jj)): unit trace."""
    n = k.shape[0]
    d = torch.sqrt(torch.diagonal(k))
    return k / (n * d[:, None] * d[None, :])


def _entropy_of_normalized(a: torch.Tensor, alpha: float) -> torch.Tensor:
    """S_alpha in nats of a unit-trace PSD matrix (symmetrized for eigvalsh)."""
    return _entropy_of_spectrum(torch.linalg.eigvalsh(0.5 * (a + a.T)), alpha)


def _entropy_of_spectrum(lam: torch.Tensor, alpha: float) -> torch.Tensor:
    """S_alpha in nats of the eigenvalues of a unit-trace PSD matrix."""
    lam = lam.clamp(min=0.0)
    lam = lam / lam.sum()
    # eigenvalues below the numerical-rank cutoff are rounding noise; for
    # alpha < 1 they would otherwise add lambda^alpha >> lambda
    cutoff = lam.shape[0] * torch.finfo(lam.dtype).eps * lam.max().detach()
    pos = lam > cutoff
    safe = torch.where(pos, lam, torch.ones_like(lam))
    if alpha == 1.0:  # von Neumann limit
        return -(torch.where(pos, safe * torch.log(safe), torch.zeros_like(lam))).sum()
    power = torch.where(pos, safe**alpha, torch.zeros_like(lam)).sum()
    return torch.log(power) / (1.0 - alpha)


def renyi_entropy(k: torch.Tensor, alpha: float = 1.01, *, unit: str = "bits") -> torch.Tensor:
    """Matrix-based Renyi alpha-entropy S_alpha of a Gram matrix (0-dim tensor).

    ``k`` is an (N, N) positive semidefinite Gram matrix with positive
    diagonal (any kernel); it is normalized to A = K_ij / (N sqrt(K_ii K_jj))
    first. ``alpha`` in (0, inf); ``alpha == 1`` is the von Neumann limit.
    Differentiable (through ``torch.linalg.eigvalsh``). At most log N; equal
    to log N when the N points are mutually orthogonal in feature space
    (K = identity), for every alpha.
    """
    alpha = _check_alpha(alpha)
    return _entropy_of_normalized(_normalize(k), alpha) * _unit_factor(unit)


def renyi_joint_entropy(kx: torch.Tensor, ky: torch.Tensor, alpha: float = 1.01, *,
                        unit: str = "bits") -> torch.Tensor:
    """Joint entropy S_alpha(A, B) = S_alpha(A o B / tr(A o B)) of two Gram matrices."""
    if kx.shape != ky.shape:
        raise ValueError(f"Gram matrices must have the same shape; got {tuple(kx.shape)} and {tuple(ky.shape)}.")
    return renyi_entropy(kx * ky, alpha, unit=unit)


def renyi_mi(kx: torch.Tensor, ky: torch.Tensor, alpha: float = 1.01, *,
             unit: str = "bits") -> torch.Tensor:
    """Matrix-based Renyi mutual information I_alpha = S(A) + S(B) - S(A, B) (0-dim tensor).

    Differentiable in both Gram matrices, so it can serve as a loss term (the
    usual choice there is alpha = 2). Not Shannon MI: see the module notes.
    No clipping is applied here (a tiny negative value from rounding keeps its
    gradient); :class:`Renyi` clips the reported float at 0.
    """
    alpha = _check_alpha(alpha)
    if kx.shape != ky.shape or kx.ndim != 2 or kx.shape[0] != kx.shape[1]:
        raise ValueError(
            f"'kx' and 'ky' must be square Gram matrices of the same shape; got "
            f"{tuple(kx.shape)} and {tuple(ky.shape)}."
        )
    ax, ay = _normalize(kx), _normalize(ky)
    axy = ax * ay
    axy = axy / torch.trace(axy)
    nats = (_entropy_of_normalized(ax, alpha) + _entropy_of_normalized(ay, alpha)
            - _entropy_of_normalized(axy, alpha))
    return nats * _unit_factor(unit)


def kernel_width(x: torch.Tensor, rule: str | float = "median", *, n_neighbors: int = 10) -> float:
    """Gaussian kernel width sigma for sample ``x`` (N, d) under a named rule.

    Rules
    -----
    'silverman'
        Silverman's multivariate rule of thumb [3]_:
        sigma = s (4 / ((d + 2) N))^(1 / (d + 4)), s the mean column std.
    'knn'
        Mean distance from each point to its ``n_neighbors``-th nearest neighbour.
    'median'
        Median of the pairwise distances between distinct points (the lower
        median for an even number of pairs).
    float
        A fixed width (> 0), used as is.
    """
    if isinstance(rule, numbers.Real) and not isinstance(rule, bool):
        if not (math.isfinite(float(rule)) and float(rule) > 0):
            raise ValueError(f"A fixed kernel width must be a float in (0, inf). Got {rule!r} instead.")
        return float(rule)
    if rule not in WIDTH_RULES:
        raise ValueError(
            f"Unknown kernel width rule {rule!r}; use one of {', '.join(map(repr, WIDTH_RULES))} or a positive float."
        )
    if x.ndim == 1:
        x = x[:, None]
    n, d = x.shape
    with torch.no_grad():
        if rule == "silverman":
            s = float(x.std(dim=0).mean())
            width = s * (4.0 / ((d + 2.0) * n)) ** (1.0 / (d + 4.0))
        else:
            dist = torch.cdist(x, x)
            if rule == "median":
                iu = torch.triu_indices(n, n, offset=1, device=x.device)
                width = float(dist[iu[0], iu[1]].median())
            else:
                kk = min(n_neighbors, n - 1)
                width = float(torch.topk(dist, kk + 1, dim=1, largest=False).values[:, kk].mean())
    if not (math.isfinite(width) and width > 0):
        raise ValueError(
            f"The {rule!r} width rule gave sigma = {width}; the sample has (nearly) no spread. "
            f"Pass a fixed positive width instead."
        )
    return width


# --------------------------------------------------------------------------- #
# In-place Gram matrices and float32 spectra (the estimator's no-grad path)
# --------------------------------------------------------------------------- #
PRECISIONS = ("auto", "float64", "float32")
FLOAT32_MIN_SIZE = 1024  # smaller eigenproblems stay in float64 (cheap, and bit-reproducible)
FLOAT32_TOL_NATS = 1e-3  # largest entropy change the unresolved float32 tail may cause
FLOAT32_RESOLUTION = 32  # float32 eigenvalues are trusted above this many eps_32 lambda_max
FLOAT32_ERROR = 8  # error of a float32 eigenvalue, in eps_32 lambda_max (measured at most 7.1)
FLOAT32_MIN_ALPHA = 1.5  # below, |dS/dlambda| ~ |log lambda| of the small eigenvalues: the bound never held


def _checked_width(width: float, rule: Any) -> float:
    if not (math.isfinite(width) and width > 0):
        raise ValueError(
            f"The {rule!r} width rule gave sigma = {width}; the sample has (nearly) no spread. "
            f"Pass a fixed positive width instead."
        )
    return width


def _gram_in_place(t: torch.Tensor, rule: str | float, n_neighbors: int) -> tuple[torch.Tensor, float]:
    """Gaussian Gram matrix of ``t`` (N, d) and its width, in one N x N buffer (no autograd).

    The squared distances ||a||^2 + ||b||^2 - 2 a.b are formed in place in the
    buffer of ``t @ t.T``; the data-driven widths are read from them (the lower
    median of the squared distances of distinct pairs, or each row's
    ``n_neighbors``-th smallest, then the square root: the same order
    statistics as :func:`kernel_width`, up to rounding); then exp in place.
    Peak memory: one N x N matrix, plus N(N - 1)/2 values for 'median'.
    """
    n = t.shape[0]
    sq = (t * t).sum(dim=1)
    d2 = t @ t.T
    d2.mul_(-2.0).add_(sq[:, None]).add_(sq[None, :]).clamp_(min=0.0)
    d2.fill_diagonal_(0.0)
    if isinstance(rule, numbers.Real) and not isinstance(rule, bool):
        sigma = kernel_width(t, rule)
    elif rule == "silverman":
        sigma = kernel_width(t, rule)
    elif rule == "median":
        vals = torch.empty(n * (n - 1) // 2, dtype=d2.dtype, device=d2.device)
        o = 0
        for i in range(n - 1):  # row by row: a boolean mask would index through n^2 int64s
            vals[o:o + n - 1 - i].copy_(d2[i, i + 1:])
            o += n - 1 - i
        kth = (vals.numel() - 1) // 2  # lower median
        if vals.device.type == "cpu":
            v = vals.numpy()
            v.partition(kth)  # in place: no second copy
            med = float(v[kth])
        else:
            med = float(torch.kthvalue(vals, kth + 1).values)
        del vals
        sigma = _checked_width(math.sqrt(med), rule)
    else:
        kk = min(n_neighbors, n - 1)
        kth = torch.topk(d2, kk + 1, dim=1, largest=False).values[:, kk]
        sigma = _checked_width(float(kth.sqrt().mean()), rule)
    return d2.mul_(-0.5 / (sigma * sigma)).exp_(), sigma


def _float32_error_bound(lam: torch.Tensor, total: float, delta: float, err: float,
                         alpha: float) -> float:
    """Bound (nats) on the error of S_alpha from float32 eigenvalues ``lam`` (> delta, resolved).

    Two parts. (1) The unresolved tail: the rest of the trace ``total``, m,
    lies in eigenvalues in [0, delta]; S_alpha is Schur-concave, so over all
    such tails it is largest with m spread evenly over the unresolved
    eigenvalues and smallest with m packed into eigenvalues of size delta; the
    value computed without the tail is compared with both. (2) The resolved
    eigenvalues, each off by at most ``err``: first order, sum_i |dS/dlambda_i| err.
    """
    p = lam / total
    n_drop = max(int(lam.numel() - p.numel()), 1)
    m = max(1.0 - float(p.sum()), 0.0)
    base = float(_entropy_of_spectrum(p, alpha))
    tail = 0.0
    if m > 0.0:
        d = delta / total
        n_pack = min(int(m // d), n_drop)
        rest = m - n_pack * d
        packed = torch.full((n_pack + (rest > 0),), d, dtype=p.dtype, device=p.device)
        if rest > 0:
            packed[-1] = rest
        even = torch.full((n_drop,), m / n_drop, dtype=p.dtype, device=p.device)
        tail = max(abs(float(_entropy_of_spectrum(torch.cat([p, t]), alpha)) - base)
                   for t in (even, packed))
    q = p / p.sum()
    if alpha == 1.0:
        grad = (torch.log(q) + 1.0).abs()
    else:
        grad = alpha * q ** (alpha - 1.0) / (abs(1.0 - alpha) * float((q**alpha).sum()))
    return tail + float(grad.sum()) * err / total


def _spectrum(mats: list[torch.Tensor], dtype: torch.dtype, size: int | None = None, alpha: float = 1.0
              ) -> tuple[torch.Tensor, float]:
    """Eigenvalues (returned in float64) of the symmetric PSD ``mats`` together, and an error bound.

    Each matrix's lower triangle is read (``torch.linalg.eigvalsh`` in
    ``dtype``). In float64 the bound is 0 (the reference). In float32:
    a backward-stable symmetric eigensolver errs by a small multiple of
    eps ||K||_2 per eigenvalue (measured on Gaussian Gram matrices of
    1-20-dimensional samples and their Hadamard products, N = 1500-3000: at
    most 7.1 eps_32 lambda_max against float64); eigenvalues below
    delta = ``FLOAT32_RESOLUTION`` (32) eps_32 lambda_max are set to 0, and
    :func:`_float32_error_bound` (with ``FLOAT32_ERROR`` = 8 eps_32 lambda_max
    per resolved eigenvalue, the trace exact from the unit diagonals) bounds
    the entropy error in nats.
    """
    lam = torch.cat([torch.linalg.eigvalsh(m if m.dtype == dtype else m.to(dtype)) for m in mats])
    lam = lam.to(torch.float64)
    if dtype == torch.float64:
        return lam, 0.0
    total = float(sum(float(torch.diagonal(m).sum()) for m in mats))
    eps, top = float(torch.finfo(torch.float32).eps), float(lam.max())
    resolved = lam > FLOAT32_RESOLUTION * eps * top
    bound = _float32_error_bound(lam[resolved], total, FLOAT32_RESOLUTION * eps * top,
                                 FLOAT32_ERROR * eps * top, alpha)
    return torch.where(resolved, lam, torch.zeros_like(lam)), bound


# --------------------------------------------------------------------------- #
# Estimator
# --------------------------------------------------------------------------- #
def _available_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return math.inf


def _check_gram_memory(n: int, device: torch.device, max_samples: int | None) -> None:
    """Refuse before allocating: the estimate holds at most three float64 N x N matrices
    (two Gram matrices and the eigensolver's copy; the joint is formed in place)."""
    need = 3.0 * 8.0 * n * n
    have = _available_bytes(device)
    if need > 0.5 * have:
        raise ValueError(
            f"Renyi on n={n} samples needs about {need / 2**30:.1f} GiB for its N x N Gram "
            f"matrices (and O(N^3) eigendecompositions), more than half of the "
            f"{have / 2**30:.1f} GiB on {device}; 'max_samples' is {max_samples!r}. Set "
            f"'max_samples' (e.g. 2000, the default) to subsample, or pass fewer rows."
        )


class Renyi(BaseMIEstimator):
    """Matrix-based Renyi alpha-entropy mutual information (Giraldo et al. 2015).

    I_alpha(X;Y) = S_alpha(A) + S_alpha(B) - S_alpha(A o B / tr(A o B)) with
    A, B the normalized Gram matrices of x and y (see the module docstring).
    Gaussian kernel convention: ``exp(-||a - b||^2 / (2 sigma^2))`` on the raw
    data; discrete variables get the label kernel ``1[a == b]``.

    Parameters
    ----------
    alpha : float, default 1.01
        Order of the entropy, in (0, inf); 1 gives the von Neumann limit.
        1.01 is the usual measurement choice, 2 the usual loss.
    width : {'silverman', 'knn', 'median'} or float, default 'median'
        Kernel width rule for continuous variables, applied to x and y
        separately (see :func:`kernel_width`), or a fixed sigma for both.
        The median heuristic is the default because it keeps the kernel wide
        enough in every dimension: the density-estimation rules ('silverman',
        'knn') give narrow kernels for d > 1, the joint entropy then saturates
        near log N, and independent variables get a large positive value
        (e.g. ~6 bits at N = 1000, d = 3 with 'silverman').
    width_y : same as ``width`` or None, default None
        A different rule/width for y; None uses ``width``.
    n_neighbors : int, default 10
        Neighbour order of the 'knn' rule.
    max_samples : int or None, default 2000
        The method needs three N x N eigendecompositions (O(N^3)); larger
        samples are subsampled at random (with ``seed``) to this size. None
        uses every sample.
    seed : int or None, default 0
        Seed of the subsampling.
    device : str, torch.device or None
        Where to compute; None follows the input tensor (CPU for numpy).
    precision : {'auto', 'float64', 'float32'}, default 'auto'
        Precision of the eigendecompositions (the Gram matrices are always
        float64). 'auto': float32 (1.5-1.7x faster) when N >= 1024, alpha >=
        1.5 and the three spectra together carry an error bound below 1e-3
        nats (float32 rounding of the resolved eigenvalues plus the worst
        placement of the unresolved tail, see :func:`_spectrum` and
        :func:`_float32_error_bound`); float64 otherwise, for all three. Near
        alpha = 1 the entropy weighs the small eigenvalues by |log lambda| and
        the bound never held on the test tasks (float32 was off by up to 0.02
        bits at alpha = 1.01, N = 1500), so 'auto' does not try float32 there.
        'float32': always float32 (unvalidated speed).
    unit : {'bits', 'nats'}, default 'bits'

    Attributes
    ----------
    widths_ : tuple (sigma_x, sigma_y)
        Kernel widths used by the last call (None for a discrete variable).
    precisions_ : tuple of str
        The dtype of each eigendecomposition of the last call (S(x), S(y),
        joint; a label kernel needs none).

    Notes
    -----
    Bias: **not an estimator of Shannon MI**. The value depends on alpha, the
    kernel width and N (every entropy is at most log N). Guarantees that do
    hold, and that the tests check: 0 <= I_alpha <= min(S(A), S(B)) (the
    estimate is clipped at 0 against rounding); I_alpha -> 0 for independent
    variables (a positive finite-sample bias that shrinks with N); it is
    monotone in the dependence of a Gaussian pair; N mutually orthogonal
    points (K = I) have entropy log N for every alpha; with a label kernel
    the entropy equals the Renyi entropy of the label frequencies, so for
    discrete x, y it is the Renyi-entropy analogue of the plug-in MI.
    Symmetric in x and y (same width rule for both). Supports every
    discrete/continuous combination.

    Cost: O(N^2 d) for the Gram matrices plus three O(N^3) symmetric
    eigendecompositions (about 1 s at N = 2000 on 2 CPU cores; float32 where
    ``precision`` allows). Memory, two continuous variables: at most two
    float64 N x N matrices and the eigensolver's copy (Ky's spectrum is
    taken and Ky freed before Kx is built; Ky is rebuilt from its width for
    the joint, formed in place in Kx; measured peak 2.1-2.3 N x N float64
    above the baseline at N = 1500, benchmarks/renyi_memory.py). Label
    kernels are never formed: their spectrum is the class frequencies and
    the joint with a continuous variable is block diagonal over the classes
    (one eigendecomposition per class block); a discrete pair costs O(N).

    References
    ----------
    .. [1] Sanchez Giraldo, Rao & Principe, IEEE Trans. Inf. Theory 61(1), 2015.
    .. [2] Yu, Sanchez Giraldo, Jenssen & Principe, IEEE TPAMI 42(11), 2020.
    """

    name = "renyi"
    keep_torch = True
    _width_constraint = [Options(WIDTH_RULES), Interval(float, 0, None, closed="neither")]
    _constraints = {
        "alpha": [Interval(float, 0, None, closed="neither")],
        "width": _width_constraint,
        "width_y": [NONE, *_width_constraint],
        "n_neighbors": [Interval(int, 1, None)],
        "max_samples": [NONE, Interval(int, 2, None)],
        "seed": [NONE, Interval(int, 0, None)],
        "device": [NONE, InstanceOf((str, torch.device), "a device name or torch.device")],
        "precision": [Options(PRECISIONS)],
    }

    def __init__(self, *, alpha: float = 1.01, width: str | float = "median",
                 width_y: str | float | None = None, n_neighbors: int = 10,
                 max_samples: int | None = 2000, seed: int | None = 0,
                 device: Any = None, precision: str = "auto", unit: str = "bits"):
        self.alpha = alpha
        self.width = width
        self.width_y = width_y
        self.n_neighbors = n_neighbors
        self.max_samples = max_samples
        self.seed = seed
        self.device = device
        self.precision = precision
        self.unit = unit
        self._check_params()

    def _continuous_gram(self, a: Any, rule: Any, device: torch.device, name: str = "x"
                         ) -> tuple[torch.Tensor, float]:
        """Gram matrix and width of one continuous variable.

        The Gram matrix depends on the data only through distances / width, so
        the sample (and a fixed width with it) is first divided by the power of
        two just above its largest absolute value: exact, and no scale of the
        data over- or underflows the distances. The reported width is in the
        data's own units.
        """
        t = a.to(device=device, dtype=torch.float64) if is_torch(a) else torch.as_tensor(
            np.asarray(a), dtype=torch.float64, device=device)
        m = float(t.abs().max())
        e = math.frexp(m)[1] if m > 0 else 0
        t = torch.ldexp(t, torch.tensor(-float(e), dtype=t.dtype, device=t.device))
        fixed = isinstance(rule, numbers.Real) and not isinstance(rule, bool)
        try:
            k, sigma = _gram_in_place(t, math.ldexp(float(rule), -e) if fixed else rule,
                                      self.n_neighbors)
        except ValueError as err:
            raise ValueError(f"'{name}': {err}") from None
        return k, math.ldexp(sigma, e)

    def _spectra(self, groups: list[list[torch.Tensor]], n: int, alpha: float,
                 spent: float = 0.0) -> tuple[list[torch.Tensor] | None, float]:
        """Float32 spectra of ``groups`` while the summed error bounds stay in budget.

        The entropies of one MI share their rounding when computed alike (their
        truncation errors largely cancel), so the precision is decided for all
        of them: float32 while ``spent`` plus the bounds of :func:`_spectrum`
        stay below ``FLOAT32_TOL_NATS`` (always with ``precision='float32'``),
        else None: the caller computes every spectrum in float64.
        """
        out = []
        for mats in groups:
            lam, bound = _spectrum(mats, torch.float32, n, alpha)
            spent += bound
            if self.precision != "float32" and spent >= FLOAT32_TOL_NATS:
                return None, spent
            out.append(lam)
        return out, spent

    def _continuous_spectra(self, x: Any, y: Any, width_y: Any, n: int, alpha: float,
                            device: torch.device, dtype: torch.dtype) -> list[torch.Tensor] | None:
        """Spectra of Ky, Kx and Kx o Ky in ``dtype``, at most two N x N matrices alive at once.

        Order: Ky (its spectrum, then freed), Kx, Ky again from its width (the
        same matrix: the width is the same float, and the Gram matrix depends
        on nothing else), Kx o Ky in place in Kx, Ky freed, its spectrum. The
        eigensolver copies its input, so the peak is two float64 N x N
        matrices plus, for the data-driven 'median' width, N(N - 1)/2 values
        while Kx is built (about 2.5 N^2 floats, against 3 N^2 and more when
        both Gram matrices and a solver copy were held together). Rebuilding
        Ky costs O(N^2 d), little against the O(N^3) spectra. In float32
        (``dtype``) the summed error bounds must stay below
        ``FLOAT32_TOL_NATS`` (else None: the caller recomputes in float64),
        except with ``precision='float32'``.
        """
        spent, lam = 0.0, []

        def spectrum(k: torch.Tensor) -> bool:
            nonlocal spent
            values, bound = _spectrum([k], dtype, n, alpha)
            spent += bound
            lam.append(values)
            return dtype == torch.float64 or self.precision == "float32" or spent < FLOAT32_TOL_NATS

        ky, sy = self._continuous_gram(y, width_y, device, "y")
        ok = spectrum(ky)
        del ky
        if not ok:
            return None
        kx, sx = self._continuous_gram(x, self.width, device, "x")
        self.widths_ = (sx, sy)
        if not spectrum(kx):
            return None
        kx.mul_(self._continuous_gram(y, sy, device, "y")[0])  # the rebuilt Ky is freed here
        if not spectrum(kx):
            return None
        del kx
        return [lam[1], lam[0], lam[2]]  # x, y, joint

    def _use_float32(self, n: int, alpha: float) -> bool:
        return self.precision == "float32" or (
            self.precision == "auto" and n >= FLOAT32_MIN_SIZE and alpha >= FLOAT32_MIN_ALPHA)

    @staticmethod
    def _symbols(a: Any) -> np.ndarray:
        return discrete_symbols(a.cpu().numpy() if is_torch(a) else np.asarray(a))[0]

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        """Label kernels are never formed: a normalized label kernel has the class
        frequencies as eigenvalues, and its Hadamard product with another Gram
        matrix is block diagonal over the classes, so the joint spectrum is the
        union of the spectra of the per-class blocks (same value, less work)."""
        device = resolve_device(self.device, like=x if is_torch(x) else y)
        n = x.shape[0]
        if self.max_samples is not None and n > self.max_samples:
            idx = np.sort(check_random_state(self.seed).choice(n, self.max_samples, replace=False))
            x = x[torch.as_tensor(idx, device=x.device)] if is_torch(x) else x[idx]
            y = y[torch.as_tensor(idx, device=y.device)] if is_torch(y) else y[idx]
            n = self.max_samples
        _check_gram_memory(n, device, self.max_samples)
        alpha = float(self.alpha)
        width_y = self.width if self.width_y is None else self.width_y

        def freq_spectrum(ids: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.bincount(ids) / n, dtype=torch.float64, device=device)

        with torch.no_grad():
            if discrete_x and discrete_y:
                ix, iy = self._symbols(x), self._symbols(y)
                joint = discrete_symbols(np.stack([ix, iy], axis=1))[0]
                self.widths_ = (None, None)
                self.precisions_ = ()  # no eigendecomposition
                nats = (_entropy_of_spectrum(freq_spectrum(ix), alpha)
                        + _entropy_of_spectrum(freq_spectrum(iy), alpha)
                        - _entropy_of_spectrum(freq_spectrum(joint), alpha))
            elif discrete_x or discrete_y:
                cont, disc = (y, x) if discrete_x else (x, y)
                k, sigma = self._continuous_gram(cont, width_y if discrete_x else self.width, device,
                                                 "y" if discrete_x else "x")
                self.widths_ = (None, sigma) if discrete_x else (sigma, None)
                ids = self._symbols(disc)
                blocks = []
                for c in np.unique(ids):
                    sel = torch.as_tensor(np.flatnonzero(ids == c), device=device)
                    blocks.append(k[sel[:, None], sel[None, :]])
                # the joint's spectrum is that of the blocks together
                lam = self._spectra([[k], blocks], n, alpha)[0] if self._use_float32(n, alpha) else None
                self.precisions_ = ("float32",) * 2 if lam is not None else ("float64",) * 2
                if lam is None:
                    lam = [_spectrum(g, torch.float64)[0] for g in ([k], blocks)]
                del k, blocks
                nats = (_entropy_of_spectrum(lam[0], alpha)
                        + _entropy_of_spectrum(freq_spectrum(ids), alpha)
                        - _entropy_of_spectrum(lam[1], alpha))
            else:
                # the spectra of A = K / N and A o B / tr(A o B) are those of K and Kx o Ky
                # up to a scale (unit diagonals), which the entropy of a spectrum removes
                lam = None
                if self._use_float32(n, alpha):
                    lam = self._continuous_spectra(x, y, width_y, n, alpha, device, torch.float32)
                if lam is None:
                    lam = self._continuous_spectra(x, y, width_y, n, alpha, device, torch.float64)
                    self.precisions_ = ("float64",) * 3
                else:
                    self.precisions_ = ("float32",) * 3
                nats = (_entropy_of_spectrum(lam[0], alpha) + _entropy_of_spectrum(lam[1], alpha)
                        - _entropy_of_spectrum(lam[2], alpha))
        return max(float(nats), 0.0)
