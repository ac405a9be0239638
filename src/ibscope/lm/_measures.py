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
eigenvalues below ``min(N, D) * eps * lambda_max`` (eps the dtype's machine
epsilon; the matrix-rank rule) are set to zero, so rounding noise never
enters as spurious small eigenvalues (which would matter for alpha < 1). The
entropies differ from a float64 computation by far less than the run-to-run
differences these measures are used for (the tests bound it at 1e-4 nats
for a 64 x 32 matrix). Padding rows (zeros) add only zero eigenvalues, which
is why a batch of prompts padded to one length gives each prompt's exact
spectrum once its padded rows are zeroed.

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
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .._units import check_unit, nats_to

__all__ = [
    "NORMALIZATIONS",
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


def _spectra(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (..., m), m = min(N, D), of Z Z^T for a batch (..., N, D), thresholded at the rank rule."""
    n, d = z.shape[-2], z.shape[-1]
    g = z @ z.transpose(-1, -2) if n <= d else z.transpose(-1, -2) @ z
    lam = torch.linalg.eigvalsh(g)
    top = lam.amax(dim=-1, keepdim=True).clamp_min(0)
    tol = min(n, d) * torch.finfo(lam.dtype).eps * top
    return torch.where(lam > tol, lam, torch.zeros_like(lam))


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
                   unit: str = "bits") -> float:
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

    Returns
    -------
    float
        S_alpha(Z) = log(sum lambda_i^alpha) / (1 - alpha), lambda the
        eigenvalues of Z Z^T / tr(Z Z^T).

    Raises
    ------
    ValueError
        Bad ``alpha``, ``normalization`` or ``unit``; ``z`` not 2-D, non-finite
        or all zeros; a normalization by log N or log D with N or D equal to 1.

    References
    ----------
    .. [1] O. Skean et al., "Layer by Layer: Uncovering Hidden Representations
       in Language Models", ICML 2025, arXiv:2502.02013.
    """
    alpha, normalization = _check_alpha(alpha), _check_normalization(normalization)
    check_unit(unit)
    p = gram_spectrum(z)
    n, d = z.shape
    if normalization in ("logN", "max") and n < 2 or normalization in ("logD", "max") and d < 2:
        raise ValueError(f"normalization={normalization!r} divides by log 1 = 0 for z of shape {tuple(z.shape)}.")
    return float(_normalize(_entropy_nats(p, alpha), n, d, normalization, unit)) + 0.0  # no -0.0


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


def _per_prompt(h: torch.Tensor, m: torch.Tensor, alpha: float, normalization: str, unit: str):
    """Per-prompt entropy (normalized as asked), effective rank and token counts of (B, S, D) with mask (B, S)."""
    hz = _masked(h, m)                          # padding rows -> zero rows -> only zero eigenvalues
    lam = _spectra(hz)
    total = lam.sum(-1, keepdim=True)
    ok = total.squeeze(-1) > 0
    p = lam / torch.where(total > 0, total, torch.ones_like(total))
    n = m.sum(1)
    d = h.shape[-1]
    with torch.no_grad():
        ent = _normalize(_entropy_nats(p, alpha), n.clamp_min(2), d, normalization, unit)
        er = _erank(torch.where(ok[:, None], lam, torch.ones_like(lam)))
    return ent, er, n, ok


def prompt_entropy(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, alpha: float = 1.0, *,
                   normalization: str = "none", unit: str = "bits", reduce: bool = True):
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
    h = _check_matrix(hidden, "hidden", ndim=3, finite=False)
    m = _check_mask(attention_mask, h.shape[:2], h.device)
    if normalization in ("logD", "max") and h.shape[-1] < 2:
        raise ValueError(f"normalization={normalization!r} divides by log D = 0 (D = 1).")
    ent, _, n, ok = _per_prompt(h, m, alpha, normalization, unit)
    if not ok.all():
        raise ValueError("'hidden' has a prompt whose token representations are all zero (no entropy).")
    ent = torch.where(n >= 2, ent, torch.full_like(ent, float("nan")))
    if not reduce:
        return ent
    if not (n >= 2).any():
        raise ValueError("Every prompt has fewer than 2 tokens: prompt entropy is undefined.")
    return float(ent[n >= 2].mean())


def dataset_entropy(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, alpha: float = 1.0, *,
                    normalization: str = "none", unit: str = "bits") -> float:
    """Dataset entropy of Skean et al. [1]_: the matrix entropy of the prompts' mean-pooled representations.

    Parameters
    ----------
    hidden : torch.Tensor, shape (B, S, D), or (B, D) already pooled
        Token representations of one layer (pooled over unmasked tokens by
        :func:`mean_pool`) or one vector per prompt.
    attention_mask : torch.Tensor of 0/1, shape (B, S), optional
        Only for 3-D ``hidden``.
    alpha, normalization, unit
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
    return matrix_entropy(pooled, alpha, normalization=normalization, unit=unit)
