"""Representation measures of language models: matrix entropy and effective rank (pure torch functions).

Following Skean et al. [1]_, a layer's representation of N items (the tokens
of one prompt, or the mean-pooled prompts of a dataset) is a matrix
Z in R^{N x D}. Its Gram matrix K = Z Z^T, scaled to unit trace, has
eigenvalues lambda_i >= 0 summing to 1, and the matrix-based Renyi
alpha-entropy [2]_ is

    S_alpha(Z) = log(sum_i lambda_i^alpha) / (1 - alpha),
    S_1(Z)     = -sum_i lambda_i log lambda_i          (the limit alpha -> 1).

(The representations are used as they are: linear kernel, no centering, as
in [1]_.) S_alpha lies in [0, log min(N, D)]: 0 when the rows are collinear
(rank 1), log N when they are orthogonal with equal norms (K proportional to
the identity). *Prompt entropy* is S_alpha of one prompt's token matrix,
averaged over prompts; *dataset entropy* is S_alpha of the matrix of the
prompts' mean-pooled token representations. The normalisations of [1]_'s
code divide by ``log N`` (``'logN'``), ``log D`` (``'logD'``) or
``min(log N, log D)`` (``'max'``, the largest attainable value, so the
result lies in [0, 1]); ``'none'`` keeps the entropy in ``unit``.

The *effective rank* of Roy & Vetterli [3]_ is exp of the Shannon entropy of
the singular values normalised to sum 1, p_i = sigma_i / sum_j sigma_j:
erank(Z) = exp(-sum_i p_i log p_i), between 1 and rank(Z); k equal nonzero
singular values give exactly k. It is unitless (a number of dimensions).

Numerics. The nonzero eigenvalues of Z Z^T and Z^T Z coincide, so the
spectrum comes from the smaller of the two (min(N, D) squared), by
``torch.linalg.eigvalsh`` on the input's device and in its floating dtype
(float32 for float32/float16/bfloat16 inputs, float64 for float64). float32
eigenvalues have an absolute error of about 1e-7 relative to the largest;
eigenvalues below ``sqrt(min(N, D)) * eps * lambda_max`` (eps the dtype's
machine epsilon) are set to zero, so rounding noise (measured <= 3 eps
lambda_max) never enters as spurious small eigenvalues (which would matter
for alpha < 1). The entropies differ from a float64 computation by far less
than the run-to-run differences these measures are used for (the tests
bound it at 1e-4 nats for a 64 x 32 matrix). Padding rows (zeros) add only
zero eigenvalues, which is why a batch of prompts padded to one length gives
each prompt's exact spectrum once its padded rows are zeroed.

Large matrices. The exact path costs N D min(N, D) for the Gram matrix plus
O(min(N, D)^3) for its eigenvalues. :func:`lanczos_entropy` estimates S_alpha
(alpha >= 1) by stochastic Lanczos quadrature [4]_ from products with Z only
(``probes`` Rademacher vectors after a Hutch++ deflation [5]_ of the top
eigenspace, ``steps`` Lanczos steps each, fully reorthogonalized), with a
standard error over the probes; ``method='auto'`` (the default of
:func:`matrix_entropy`, :func:`prompt_entropy`, :func:`dataset_entropy` and
``analyze``) switches to it when min(N, D) > :data:`LANCZOS_MIN_SIZE` = 3072:
on this project's CPU it took 1.26x the exact float32 path's time at 2048,
0.78x at 3072 and 0.68x at 4096, at errors of about 0.01 nats on average (at
most 0.05) for entropies of 5.2-6.1 nats (benchmarks/RESULTS.md, "Matrix entropy:
exact float32 vs Lanczos"); the gap widens with size (O(m^3) against O(m^2)
per step). Its cost is about 8 * probes * steps * N * D flops (the
products with Z for the probes and the sketch), against N * D * min(N, D)
plus O(min(N, D)^3).

References
----------
.. [1] O. Skean, M. R. Arefin, D. Zhao, N. Patel, J. Naghiyev, Y. LeCun and
   R. Shwartz-Ziv, "Layer by Layer: Uncovering Hidden Representations in
   Language Models", ICML 2025, arXiv:2502.02013.
.. [2] L. G. Sanchez Giraldo, M. Rao and J. C. Principe, "Measures of
   entropy from data using infinitely divisible kernels", IEEE Trans.
   Information Theory 61(1), 2015.
.. [3] O. Roy and M. Vetterli, "The effective rank: a measure of effective
   dimensionality", 15th European Signal Processing Conference (EUSIPCO), 2007.
.. [4] S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via
   stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
.. [5] R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++: Optimal
   stochastic trace estimation", SOSA 2021.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import torch

from .._units import check_unit, nats_to

__all__ = [
    "NORMALIZATIONS",
    "METHODS",
    "LANCZOS_MIN_SIZE",
    "LanczosEntropy",
    "lanczos_entropy",
    "gram_spectrum",
    "matrix_entropy",
    "effective_rank",
    "mean_pool",
    "prompt_entropy",
    "dataset_entropy",
]

NORMALIZATIONS = ("none", "logN", "logD", "max")


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"The 'alpha' parameter must be a finite number > 0 (1 = Shannon). Got {alpha!r}.")
    return float(alpha)


def _check_normalization(normalization: Any) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"The 'normalization' parameter must be one of {NORMALIZATIONS}. Got {normalization!r}.")
    return normalization


def _float(z: torch.Tensor) -> torch.Tensor:
    return z if z.dtype == torch.float64 else z.float()


def _check_matrix(z: Any, name: str = "z", ndim: int = 2, *, finite: bool = True) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(z).__name__}.")
    if z.ndim != ndim:
        shape = "(N, D)" if ndim == 2 else "(B, S, D)"
        raise ValueError(f"'{name}' must be a {ndim}-D tensor {shape}, got shape {tuple(z.shape)}.")
    if not z.is_floating_point():
        raise TypeError(f"'{name}' must hold floating-point values, got dtype {z.dtype}.")
    if z.numel() == 0:
        raise ValueError(f"'{name}' is empty (shape {tuple(z.shape)}).")
    if finite and not torch.isfinite(z).all():
        raise ValueError(f"'{name}' contains NaN or infinite values.")
    return _float(z)


def _masked(h: torch.Tensor, m: torch.Tensor, name: str = "hidden") -> torch.Tensor:
    """Zero the padded positions (by selection, so NaN/inf there cannot leak); real tokens must be finite."""
    hz = torch.where(m[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
    if not torch.isfinite(hz).all():
        raise ValueError(f"'{name}' contains NaN or infinite values at unpadded tokens.")
    return hz


def _rank_tol(m: int, dtype: torch.dtype) -> float:
    """Eigenvalues of an m x m Gram matrix below this times the largest are rounding: sqrt(m) * eps.

    The spurious eigenvalues of rank-deficient float32 Gram matrices measure <= 3 eps lambda_max for
    m = 8 ... 2048 (sqrt(m) eps leaves a margin of 3 to 15). The matrix-rank rule m * eps used before
    cut true eigenvalues: at m = 4096 it zeroed everything below 4.9e-4 lambda_max, half of a power-law
    spectrum lambda_i ~ 1/i (an entropy error of -0.43 nats; benchmarks/RESULTS.md).
    """
    return math.sqrt(m) * torch.finfo(dtype).eps


def _spectra(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (..., m), m = min(N, D), of Z Z^T for a batch (..., N, D), thresholded at the rank rule."""
    n, d = z.shape[-2], z.shape[-1]
    g = z @ z.transpose(-1, -2) if n <= d else z.transpose(-1, -2) @ z
    lam = torch.linalg.eigvalsh(g)
    top = lam.amax(dim=-1, keepdim=True).clamp_min(0)
    tol = _rank_tol(min(n, d), lam.dtype) * top
    return torch.where(lam > tol, lam, torch.zeros_like(lam))


# --------------------------------------------------------------------------- stochastic Lanczos quadrature

#: entropy methods of :func:`matrix_entropy` and friends
METHODS = ("auto", "exact", "lanczos")
#: ``method='auto'`` uses stochastic Lanczos quadrature when min(N, D) exceeds this (and alpha >= 1);
#: chosen from the measurement in benchmarks/RESULTS.md ("Matrix entropy: exact float32 vs Lanczos")
LANCZOS_MIN_SIZE = 3072
#: default number of Rademacher probes and Lanczos steps
LANCZOS_PROBES = 32
LANCZOS_STEPS = 20


def _check_method(method: Any, alpha: float) -> str:
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter must be one of {METHODS}. Got {method!r}.")
    if method == "lanczos" and alpha < 1:
        raise ValueError(f"method='lanczos' needs alpha >= 1 (got alpha={alpha!r}): for alpha < 1 the many "
                         f"small eigenvalues dominate sum lambda^alpha and a few quadrature nodes cannot "
                         f"resolve them; use method='exact'.")
    return method


def _check_count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"The '{name}' parameter must be a positive integer. Got {v!r}.")
    return int(v)


def _check_lanczos(probes: Any, steps: Any, seed: Any) -> tuple[int, int, int]:
    probes, steps = _check_count(probes, "probes"), _check_count(steps, "steps")
    if probes < 2:
        raise ValueError(f"The 'probes' parameter must be >= 2 (the standard error needs two). Got {probes!r}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"The 'seed' parameter must be a nonnegative integer. Got {seed!r}.")
    return probes, steps, int(seed)


def _resolve(method: str, alpha: float, n: int, d: int) -> str:
    """'exact' or 'lanczos' for an (n, d) matrix (batched: n the padded length)."""
    if method == "auto":
        return "lanczos" if alpha >= 1 and min(n, d) > LANCZOS_MIN_SIZE else "exact"
    return method


def _quadrature(matvec, q: torch.Tensor, k: int, alpha: float, m: int) -> torch.Tensor:
    """u^T f(A) u for the unit columns u of q (..., m, c) (zero columns give 0) by k-step Lanczos quadrature.

    The Lanczos basis is fully reorthogonalized (classical Gram-Schmidt, twice); a column whose residual
    falls below rounding has found an invariant subspace and the rest of its tridiagonal stays 0 (zero
    rows/columns decouple, and their eigenvectors have first component 0: no weight). The nodes are the
    eigenvalues theta of the tridiagonal T (``torch.linalg.eigh``, float64), the weights the squared first
    components tau^2 of its eigenvectors (Golub & Meurant): u^T f(A) u ~ sum tau^2 f(theta).
    """
    batch, c = q.shape[:-2], q.shape[-1]
    eps = torch.finfo(q.dtype).eps
    tol = 100 * eps                                  # |A| <= 1: a residual below this is rounding
    basis = torch.zeros(*batch, k, m, c, dtype=q.dtype, device=q.device)
    alphas = torch.zeros(*batch, c, k, dtype=q.dtype, device=q.device)
    betas = torch.zeros(*batch, c, max(k - 1, 0), dtype=q.dtype, device=q.device)
    q_prev = torch.zeros_like(q)
    b_prev = torch.zeros(*batch, 1, c, dtype=q.dtype, device=q.device)
    for j in range(k):
        basis[..., j, :, :] = q
        w = matvec(q)
        a = (q * w).sum(-2, keepdim=True)            # (..., 1, c)
        w = w - a * q - b_prev * q_prev
        qs = basis[..., : j + 1, :, :]
        for _ in range(2):                           # full reorthogonalization
            w = w - (qs * (qs * w[..., None, :, :]).sum(-2, keepdim=True)).sum(-3)
        alphas[..., j] = a.squeeze(-2)
        if j == k - 1:
            break
        b = w.norm(dim=-2, keepdim=True)
        live = b > tol
        b = torch.where(live, b, torch.zeros_like(b))
        betas[..., j] = b.squeeze(-2)
        q_prev, q = q, torch.where(live, w / torch.where(live, b, torch.ones_like(b)), torch.zeros_like(w))
        b_prev = b
    off = betas.double()
    tri = torch.diag_embed(alphas.double()) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    theta, vecs = torch.linalg.eigh(tri)             # (..., c, k)
    tau2 = vecs[..., 0, :].pow(2)
    theta = torch.where(theta > _rank_tol(m, q.dtype) * theta.amax(-1, keepdim=True).clamp_min(0), theta,
                        torch.zeros_like(theta))     # the rank rule of the exact path
    if alpha == 1.0:
        f = -theta * torch.log(torch.where(theta > 0, theta, torch.ones_like(theta)))
    else:
        f = torch.where(theta > 0, theta.clamp_min(0).pow(alpha), torch.zeros_like(theta))
    return (tau2 * f).sum(-1)


def _slq_nats(z: torch.Tensor, alpha: float, probes: int, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S_alpha (nats) of the unit-trace Gram matrices of z (..., N, D) and its standard error over probes.

    Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) with the variance reduction of Hutch++ (Meyer,
    Musco, Musco & Woodruff 2021): an orthonormal basis Q of A (A Omega) (``probes`` Rademacher columns,
    one power step) captures the top eigenspace; tr f(A) = sum_j q_j^T f(A) q_j + E[v^T P f(A) P v] with
    P = I - Q Q^T and Rademacher v (Hutchinson), every quadratic form by Lanczos quadrature
    (:func:`_quadrature`). A = Z^T Z / |Z|_F^2 (or Z Z^T when N < D) is applied as two products with Z;
    it is never formed. The standard error is that of the mean over the ``probes`` Hutchinson terms
    (the deflated part is the same for every probe). Zero rows (padding) only add zero eigenvalues,
    which f(0) = 0 ignores (alpha >= 1).
    """
    n, d = z.shape[-2], z.shape[-1]
    side_n = n < d                                   # A on the smaller side: m = min(N, D)
    m = min(n, d)
    k = min(steps, m)
    batch = z.shape[:-2]
    t = z.pow(2).sum((-2, -1))                       # tr(Z Z^T), (...)
    scale = torch.where(t > 0, t, torch.ones_like(t))[..., None, None]
    zt = z.transpose(-1, -2)

    def matvec(x):                                   # x (..., m, c) -> A x
        y = z @ (zt @ x) if side_n else zt @ (z @ x)
        return y / scale

    g = torch.Generator().manual_seed(seed)          # drawn on the CPU: the same probes on every device

    def rademacher(cols):
        return torch.randint(0, 2, (*batch, m, cols), generator=g).to(device=z.device, dtype=z.dtype) * 2 - 1

    r = min(probes, m)
    basis, _ = torch.linalg.qr(matvec(matvec(rademacher(r))))     # (..., m, r) top-eigenspace sketch
    v = rademacher(probes)
    pv = v - basis @ (basis.transpose(-1, -2) @ v)
    norm2 = pv.pow(2).sum(-2)                        # (..., p)
    unit_pv = pv / torch.where(norm2 > 0, norm2, torch.ones_like(norm2)).sqrt()[..., None, :]
    quad = _quadrature(matvec, torch.cat([basis, unit_pv], -1), k, alpha, m)
    per_probe = quad[..., :r].sum(-1, keepdim=True) + norm2.double() * quad[..., r:]
    mean = per_probe.mean(-1)
    se = per_probe.std(-1) / math.sqrt(probes)
    if alpha == 1.0:
        ent, ent_se = mean, se
    else:                                            # S = log(tr A^alpha) / (1 - alpha); delta method
        ent = torch.log(mean) / (1.0 - alpha)
        ent_se = se / (abs(1.0 - alpha) * mean)
    ent = torch.where(t.double() > 0, ent, torch.full_like(ent, float("nan")))
    return ent.to(z.dtype), ent_se.to(z.dtype)

def gram_spectrum(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the unit-trace Gram matrix Z Z^T / tr(Z Z^T), in descending order.

    Parameters
    ----------
    z : torch.Tensor, shape (N, D)
        N representations of dimension D (any floating dtype; computed in
        float32, or float64 for float64 input, on ``z``'s device).

    Returns
    -------
    torch.Tensor, shape (min(N, D),)
        Nonnegative eigenvalues summing to 1 (those below the rank tolerance
        set to 0; see the module notes).

    Raises
    ------
    ValueError
        If ``z`` is not 2-D, holds NaN/inf, or is all zeros (no spectrum).
    """
    z = _check_matrix(z)
    lam = _spectra(z)
    total = lam.sum()
    if not total > 0:
        raise ValueError("'z' is all zeros: its Gram matrix has trace 0 and no entropy.")
    return torch.flip(lam / total, dims=(-1,))


def _entropy_nats(p: torch.Tensor, alpha: float) -> torch.Tensor:
    """Renyi alpha-entropy (nats) of probability vectors p (..., m), zeros allowed."""
    if alpha == 1.0:
        safe = torch.where(p > 0, p, torch.ones_like(p))   # 0 log 0 = 0
        return -(p * torch.log(safe)).sum(-1)
    s = torch.where(p > 0, p.pow(alpha), torch.zeros_like(p)).sum(-1)
    return torch.log(s) / (1.0 - alpha)


def _normalize(h_nats: torch.Tensor, n: torch.Tensor | int, d: int, normalization: str, unit: str) -> torch.Tensor:
    if normalization == "none":
        return nats_to(h_nats, unit)
    n = torch.as_tensor(n, dtype=h_nats.dtype, device=h_nats.device)
    logn, logd = torch.log(n), torch.log(torch.tensor(float(d), dtype=h_nats.dtype, device=h_nats.device))
    denom = {"logN": logn, "logD": logd.expand_as(logn), "max": torch.minimum(logn, logd)}[normalization]
    return h_nats / denom


def matrix_entropy(z: torch.Tensor, alpha: float = 1.0, *, normalization: str = "none",
                   unit: str = "bits", method: str = "auto", probes: int = LANCZOS_PROBES,
                   steps: int = LANCZOS_STEPS, seed: int = 0) -> float:
    """Matrix-based Renyi alpha-entropy of representations ``z`` (linear kernel), Skean et al. [1]_.

    Parameters
    ----------
    z : torch.Tensor, shape (N, D)
        N representations (rows) of dimension D.
    alpha : float, default 1
        Renyi order (> 0); 1 is the von Neumann / Shannon limit.
    normalization : {'none', 'logN', 'logD', 'max'}, default 'none'
        Divide by log N, log D or min(log N, log D) (then unitless, in [0, 1]
        for 'max'); 'none' reports the entropy in ``unit``.
    unit : {'bits', 'nats'}, default 'bits'
        Unit of the unnormalized entropy.
    method : {'auto', 'exact', 'lanczos'}, default 'auto'
        'exact': every eigenvalue (``torch.linalg.eigvalsh`` of the smaller
        Gram matrix, float32). 'lanczos': the stochastic Lanczos quadrature
        estimate of :func:`lanczos_entropy` [2]_ (alpha >= 1 only; matrix-vector
        products with ``z``, the Gram matrix is never formed). 'auto': Lanczos
        when min(N, D) > :data:`LANCZOS_MIN_SIZE` and alpha >= 1, else exact.
    probes, steps, seed : int
        Rademacher probes, Lanczos steps and the probes' seed (Lanczos only).

    Returns
    -------
    float
        S_alpha(Z) = log(sum lambda_i^alpha) / (1 - alpha), lambda the
        eigenvalues of Z Z^T / tr(Z Z^T).

    Raises
    ------
    ValueError
        Bad ``alpha``, ``normalization``, ``unit``, ``method``, ``probes``,
        ``steps`` or ``seed``; method='lanczos' with alpha < 1; ``z`` not 2-D,
        non-finite or all zeros; a normalization by log N or log D with N or D
        equal to 1.

    References
    ----------
    .. [1] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations
       in Language Models", ICML 2025, arXiv:2502.02013.
    .. [2] S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via
       stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
    """
    alpha, normalization = _check_alpha(alpha), _check_normalization(normalization)
    check_unit(unit)
    method = _check_method(method, alpha)
    probes, steps, seed = _check_lanczos(probes, steps, seed)
    if _resolve(method, alpha, *_check_matrix(z).shape) == "lanczos":
        return lanczos_entropy(z, alpha, normalization=normalization, unit=unit, probes=probes, steps=steps,
                               seed=seed).value
    p = gram_spectrum(z)
    n, d = z.shape
    _check_log_denominator(normalization, n, d)
    return float(_normalize(_entropy_nats(p, alpha), n, d, normalization, unit)) + 0.0  # no -0.0


def _check_log_denominator(normalization: str, n: int, d: int) -> None:
    if normalization in ("logN", "max") and n < 2 or normalization in ("logD", "max") and d < 2:
        raise ValueError(f"normalization={normalization!r} divides by log 1 = 0 for z of shape {(n, d)}.")


class LanczosEntropy(NamedTuple):
    """A stochastic Lanczos quadrature estimate of a matrix entropy (:func:`lanczos_entropy`).

    Attributes
    ----------
    value : float
        The estimate, in ``unit``.
    se : float
        Its standard error over the probes (the sample standard deviation of
        the per-probe estimates over sqrt(probes); delta method for alpha != 1),
        in ``unit``. It covers the probe (Hutchinson) variance, not the
        quadrature bias of too few ``steps``.
    unit : str
        'bits', 'nats' or 'fraction of <normalization>'.
    probes, steps : int
        Rademacher probes and Lanczos steps used (steps at most min(N, D)).
    """

    value: float
    se: float
    unit: str
    probes: int
    steps: int


def lanczos_entropy(z: torch.Tensor, alpha: float = 1.0, *, normalization: str = "none", unit: str = "bits",
                    probes: int = LANCZOS_PROBES, steps: int = LANCZOS_STEPS, seed: int = 0) -> LanczosEntropy:
    """Matrix entropy S_alpha of ``z`` by stochastic Lanczos quadrature [1]_, with its standard error.

    The trace tr f(A) of A = Z Z^T / tr(Z Z^T) (f(x) = -x log x for alpha = 1,
    x^alpha otherwise) is estimated by Hutchinson's estimator with
    ``probes`` Rademacher vectors v, each quadratic form v^T f(A) v by
    ``steps``-node Gauss quadrature from the Lanczos tridiagonal T started at
    v (full reorthogonalization; ``torch.linalg.eigh`` of T gives nodes and
    weights). A is applied as products with Z on the smaller side (the N x N
    or D x D Gram matrix is never formed), in float32 (float64 for float64
    input) on ``z``'s device. Quadrature is exact for polynomials of degree up
    to 2 * steps - 1, so alpha = 2 (and integer alpha < steps) carries only the
    probe variance; for alpha = 1 the nodes near 0 leave a small bias that
    falls with ``steps`` (see benchmarks/RESULTS.md for its size). Ritz values
    below sqrt(min(N, D)) * eps * theta_max count as zero, as in the exact path.

    Variance reduction (Hutch++ [3]_): an orthonormal basis Q of A A Omega
    (``probes`` Rademacher columns) takes the top eigenspace out of the random
    part: tr f(A) = sum_j q_j^T f(A) q_j + E[v^T P f(A) P v], P = I - Q Q^T, each
    quadratic form by Lanczos quadrature. The probe variance is at most
    2 |P f(A) P|_F^2 / probes <= 2 |f(A)|_F^2 / probes (Hutchinson [2]_); a spectrum
    that the sketch spans (rank <= probes) is computed exactly.

    Parameters
    ----------
    z : torch.Tensor, shape (N, D)
        N representations of dimension D.
    alpha : float, default 1
        Renyi order, >= 1 (for alpha < 1 the small eigenvalues dominate and a
        few nodes cannot resolve them: a ValueError, use the exact path).
    normalization : {'none', 'logN', 'logD', 'max'}, default 'none'
    unit : {'bits', 'nats'}, default 'bits'
    probes : int, default 32
        Rademacher probe vectors (>= 2); the standard error falls as 1/sqrt(probes).
    steps : int, default 20
        Lanczos steps per probe (capped at min(N, D), where the quadrature is exact).
    seed : int, default 0
        Seed of the probes (drawn by a CPU ``torch.Generator``: the same probes on every device).

    Returns
    -------
    LanczosEntropy
        ``(value, se, unit, probes, steps)``.

    Raises
    ------
    ValueError
        Bad ``alpha`` (or alpha < 1), ``normalization``, ``unit``, ``probes``,
        ``steps`` or ``seed``; ``z`` not 2-D, non-finite or all zeros.

    References
    ----------
    .. [1] S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via
       stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4),
       1075-1099, 2017.
    .. [2] M. F. Hutchinson, "A stochastic estimator of the trace of the
       influence matrix for Laplacian smoothing splines", Communications in
       Statistics - Simulation and Computation 18(3), 1989.
    .. [3] R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++:
       Optimal stochastic trace estimation", SOSA 2021.
    """
    alpha, normalization = _check_alpha(alpha), _check_normalization(normalization)
    check_unit(unit)
    _check_method("lanczos", alpha)
    probes, steps, seed = _check_lanczos(probes, steps, seed)
    z = _check_matrix(z)
    n, d = z.shape
    _check_log_denominator(normalization, n, d)
    if not z.abs().amax() > 0:
        raise ValueError("'z' is all zeros: its Gram matrix has trace 0 and no entropy.")
    ent, se = _slq_nats(z, alpha, probes, steps, seed)
    value = _normalize(ent, n, d, normalization, unit)
    se = _normalize(se, n, d, normalization, unit)
    out_unit = unit if normalization == "none" else f"fraction of {normalization}"
    return LanczosEntropy(float(value) + 0.0, float(se), out_unit, probes, min(steps, n, d))


def effective_rank(z: torch.Tensor) -> float:
    """Effective rank of Roy & Vetterli [1]_: exp of the Shannon entropy of the normalized singular values.

    Parameters
    ----------
    z : torch.Tensor, shape (N, D)
        The matrix (e.g. N representations of dimension D; used as given, not centered).

    Returns
    -------
    float
        exp(-sum p_i log p_i), p_i = sigma_i / sum_j sigma_j; in [1, rank(z)],
        equal to k for k equal nonzero singular values. Unitless.

    Raises
    ------
    ValueError
        ``z`` not 2-D, non-finite or all zeros.

    References
    ----------
    .. [1] O. Roy and M. Vetterli, "The effective rank: a measure of effective
       dimensionality", EUSIPCO 2007.
    """
    z = _check_matrix(z)
    lam = _spectra(z)
    if not lam.sum() > 0:
        raise ValueError("'z' is all zeros: it has no singular values and no effective rank.")
    return float(_erank(lam))


def _erank(lam: torch.Tensor) -> torch.Tensor:
    s = lam.clamp_min(0).sqrt()
    return torch.exp(_entropy_nats(s / s.sum(-1, keepdim=True), 1.0))


def _check_mask(attention_mask: Any, shape: tuple[int, int], device) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"'attention_mask' must be a torch.Tensor, got {type(attention_mask).__name__}.")
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"'attention_mask' must have shape {tuple(shape)} (prompts x positions), "
                         f"got {tuple(attention_mask.shape)}.")
    m = attention_mask.to(device)
    if not ((m == 0) | (m == 1)).all():
        raise ValueError("'attention_mask' must hold only 0 and 1.")
    m = m.bool()
    if not m.any(1).all():
        bad = torch.nonzero(~m.any(1)).flatten()[:5].tolist()
        raise ValueError(f"'attention_mask' leaves prompt(s) {bad} without any token.")
    return m


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of each prompt's token representations over its unmasked positions.

    Parameters
    ----------
    hidden : torch.Tensor, shape (B, S, D)
        Token representations of B prompts padded to S positions (values at
        padded positions are ignored, even NaN).
    attention_mask : torch.Tensor of 0/1, shape (B, S), optional
        1 for real tokens, 0 for padding (left or right); all ones by default.

    Returns
    -------
    torch.Tensor, shape (B, D)
        float32 (float64 for float64 input).
    """
    h = _check_matrix(hidden, "hidden", ndim=3, finite=False)
    m = _check_mask(attention_mask, h.shape[:2], h.device)
    return _masked(h, m).sum(1) / m.sum(1, keepdim=True).to(h.dtype)


def _per_prompt(h: torch.Tensor, m: torch.Tensor, alpha: float, normalization: str, unit: str,
                method: str = "exact", probes: int = LANCZOS_PROBES, steps: int = LANCZOS_STEPS, seed: int = 0,
                need_rank: bool = True):
    """Per-prompt entropy (normalized as asked), effective rank and token counts of (B, S, D) with mask (B, S).

    ``method`` 'exact' / 'lanczos' / 'auto' (resolved on the padded (S, D)); with Lanczos the effective
    rank is computed (exactly) only if ``need_rank``, else NaN.
    """
    hz = _masked(h, m)                          # padding rows -> zero rows -> only zero eigenvalues
    n = m.sum(1)
    d = h.shape[-1]
    if _resolve(method, alpha, h.shape[1], d) == "lanczos":
        ok = hz.abs().amax((-2, -1)) > 0
        with torch.no_grad():
            ent_nats, _ = _slq_nats(hz, alpha, probes, steps, seed)
            ent = _normalize(torch.where(ok, ent_nats, torch.zeros_like(ent_nats)), n.clamp_min(2), d,
                             normalization, unit)
            if need_rank:
                lam = _spectra(hz)
                er = _erank(torch.where(ok[:, None], lam, torch.ones_like(lam)))
            else:
                er = torch.full_like(ent, float("nan"))
        return ent, er, n, ok
    lam = _spectra(hz)
    total = lam.sum(-1, keepdim=True)
    ok = total.squeeze(-1) > 0
    p = lam / torch.where(total > 0, total, torch.ones_like(total))
    with torch.no_grad():
        ent = _normalize(_entropy_nats(p, alpha), n.clamp_min(2), d, normalization, unit)
        er = _erank(torch.where(ok[:, None], lam, torch.ones_like(lam)))
    return ent, er, n, ok


def prompt_entropy(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, alpha: float = 1.0, *,
                   normalization: str = "none", unit: str = "bits", reduce: bool = True, method: str = "auto",
                   probes: int = LANCZOS_PROBES, steps: int = LANCZOS_STEPS, seed: int = 0):
    """Prompt entropy of Skean et al. [1]_: each prompt's matrix entropy over its own tokens, averaged.

    Each prompt's Gram matrix holds only its unmasked tokens (padding never
    enters); with ``normalization='logN'`` or ``'max'`` each prompt is divided
    by the log of its own token count.

    Parameters
    ----------
    hidden : torch.Tensor, shape (B, S, D)
        Token representations of one layer.
    attention_mask : torch.Tensor of 0/1, shape (B, S), optional
        1 for tokens, 0 for padding; all ones by default.
    alpha : float, default 1
        Renyi order.
    normalization : {'none', 'logN', 'logD', 'max'}, default 'none'
    unit : {'bits', 'nats'}, default 'bits'
    reduce : bool, default True
        Return the mean over prompts (float); False returns the per-prompt
        values (tensor of shape (B,)).
    method : {'auto', 'exact', 'lanczos'}, default 'auto'
        As in :func:`matrix_entropy`; 'auto' decides on min(S, D), S the
        padded length.
    probes, steps, seed : int
        Of the Lanczos estimate (the same probes for every prompt).

    Returns
    -------
    float or torch.Tensor
        Prompts with fewer than 2 tokens are left out of the mean (their
        entropy is 0 by definition; per-prompt output gives NaN for them).

    Raises
    ------
    ValueError
        Bad parameters, non-finite ``hidden``, a mask of another shape or a
        prompt without tokens, all prompts shorter than 2 tokens, or a prompt
        whose representations are all zero.

    References
    ----------
    .. [1] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations
       in Language Models", ICML 2025, arXiv:2502.02013.
    """
    alpha, normalization = _check_alpha(alpha), _check_normalization(normalization)
    check_unit(unit)
    method = _check_method(method, alpha)
    probes, steps, seed = _check_lanczos(probes, steps, seed)
    h = _check_matrix(hidden, "hidden", ndim=3, finite=False)
    m = _check_mask(attention_mask, h.shape[:2], h.device)
    if normalization in ("logD", "max") and h.shape[-1] < 2:
        raise ValueError(f"normalization={normalization!r} divides by log D = 0 (D = 1).")
    ent, _, n, ok = _per_prompt(h, m, alpha, normalization, unit, method, probes, steps, seed, need_rank=False)
    if not ok.all():
        raise ValueError("'hidden' has a prompt whose token representations are all zero (no entropy).")
    ent = torch.where(n >= 2, ent, torch.full_like(ent, float("nan")))
    if not reduce:
        return ent
    if not (n >= 2).any():
        raise ValueError("Every prompt has fewer than 2 tokens: prompt entropy is undefined.")
    return float(ent[n >= 2].mean())


def dataset_entropy(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, alpha: float = 1.0, *,
                    normalization: str = "none", unit: str = "bits", method: str = "auto",
                    probes: int = LANCZOS_PROBES, steps: int = LANCZOS_STEPS, seed: int = 0) -> float:
    """Dataset entropy of Skean et al. [1]_: the matrix entropy of the prompts' mean-pooled representations.

    Parameters
    ----------
    hidden : torch.Tensor, shape (B, S, D), or (B, D) already pooled
        Token representations of one layer (pooled over unmasked tokens by
        :func:`mean_pool`) or one vector per prompt.
    attention_mask : torch.Tensor of 0/1, shape (B, S), optional
        Only for 3-D ``hidden``.
    alpha, normalization, unit, method, probes, steps, seed
        As in :func:`matrix_entropy` (here N = B prompts).

    Returns
    -------
    float

    References
    ----------
    .. [1] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations
       in Language Models", ICML 2025, arXiv:2502.02013.
    """
    if isinstance(hidden, torch.Tensor) and hidden.ndim == 2:
        if attention_mask is not None:
            raise ValueError("'attention_mask' applies to token representations (B, S, D), not pooled (B, D).")
        pooled = hidden
    else:
        pooled = mean_pool(hidden, attention_mask)
    return matrix_entropy(pooled, alpha, normalization=normalization, unit=unit, method=method, probes=probes,
                          steps=steps, seed=seed)
