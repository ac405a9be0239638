"""Soft entropy of representations and the soft-entropy information plane (pure torch functions).

After Conklin & Hosking [1]_ (and the soft entropy of Conklin & Smith [2]_),
a representation's entropy is read through a *randomized soft
quantisation*. The definition implemented here:

1. the N representations t_i in R^D are centred (the mean over the N items
   subtracted, ``center=True``) and scaled to unit length (direction only);
2. ``n_bins`` = M bin centres c_1..c_M are drawn uniformly on the unit sphere
   S^{D-1} (normalised Gaussian vectors; seeded);
3. each item is soft-assigned to the bins by a softmax over negative squared
   distances at temperature tau: for unit vectors
   -||t - c_m||^2 = 2 cos(t, c_m) - 2, so
   p(m | t) = softmax_m(sqrt(D) cos(t, c_m) / tau). The factor sqrt(D) makes tau
   dimension-free (a random direction's cosine to a fixed unit vector has
   standard deviation 1/sqrt(D));
4. the assignment distributions are averaged over items,
   q(m) = (1/N) sum_i p(m | t_i), and H_soft(T) = -sum_m q(m) log q(m);
5. steps 2-4 are repeated for ``n_draws`` independent codebooks and the
   entropies averaged.

H_soft lies in [0, log M]. As tau -> 0 the assignment becomes the nearest
centre (a Voronoi quantiser of the sphere): K well-separated points (e.g. a
one-hot code) whose nearest centres differ give exactly log K, a constant
representation 0. At tau > 0 every item spreads over several bins, which
adds entropy (the average assignment is flatter): H_soft is an entropy of the
soft-quantised representation, comparable across layers and checkpoints at
one (M, tau), not a differential entropy.

The authors' code (hcoxec/soft_h, MIT, read for facts only) makes these
choices, all available here: no centering (``center=False``), M = 100
reference points, one codebook (``n_draws=1``), the softmax temperature on
the raw cosines eps = 1 / sqrt(2 D ln M) -- the leading-order calibration
that makes the divergence of the soft assignment from uniform match log M;
here ``temperature="calibrated"``, i.e. tau = 1 / sqrt(2 ln M) on the
sqrt(D)-scaled cosines (their default solves that condition exactly for
the von Mises-Fisher kernel, which this module does not do) -- and it
reports the entropy divided by log M (an "efficiency" in [0, 1]; here
divide the value in nats by ln M). ibscope's defaults (centred, M = 32,
tau = 0.1, 8 codebooks) are a sharper quantiser averaged over codebooks;
the claims and the tiny-GPT experiment use them, so their values are not
the paper's numbers.

The information plane (the network maps the token context X to T
deterministically, so the quantised T carries at most what T does):

    I(X;T) = H_soft(T),
    I(T;Y) = H_soft(T) - H_soft(T | Y),  H_soft(T | Y) = sum_y p(y) H(q_y),

with q_y the average assignment over the items of class y (the next token),
with the same codebook. A Y independent of T gives I(T;Y) ~ 0 (a small
positive plug-in bias of order (M - 1) / (2 n_y) nats per class of n_y items).

References
----------
.. [1] H. Conklin and T. Hosking, "Learning is Forgetting: LLM Training as
   Lossy Compression", ICLR 2026, arXiv:2604.07569.
.. [2] H. Conklin and K. Smith, "Representations as Language: An
   Information-Theoretic Framework for Interpretability", arXiv preprint, 2024.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .._units import check_unit, nats_to, unit_scale

__all__ = ["soft_entropy", "soft_information_plane"]


def _check_soft(n_bins: Any, temperature: Any, n_draws: Any, seed: Any) -> tuple[int, float, int, int]:
    for name, v, lo in (("n_bins", n_bins, 2), ("n_draws", n_draws, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"The '{name}' parameter must be an integer >= {lo}. Got {v!r}.")
    if isinstance(temperature, str) and temperature == "calibrated":
        # the leading-order calibration of Conklin & Hosking's code: eps = 1 / sqrt(2 D ln M) on raw cosines
        temperature = 1.0 / math.sqrt(2.0 * math.log(int(n_bins)))
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or \
            not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"The 'temperature' parameter must be a finite number > 0 or 'calibrated'. "
                         f"Got {temperature!r}.")
    return int(n_bins), float(temperature), int(n_draws), int(seed)


def _directions(z: torch.Tensor, center: bool) -> torch.Tensor | None:
    """Centred unit rows; None when every item is the same point (a constant representation)."""
    z = z.double() if z.dtype == torch.float64 else z.float()
    scale = float(z.abs().max())
    if center:
        z = z - z.mean(0, keepdim=True)
    norms = z.norm(dim=1, keepdim=True)
    if not float(norms.max()) > 1e-6 * max(scale, 1e-30):
        return None
    # an item at exactly the mean has no direction: it stays the zero vector (a uniform assignment)
    return torch.where(norms > 0, z / norms.clamp_min(1e-300), torch.zeros_like(z))


def _assignments(u: torch.Tensor, n_bins: int, temperature: float, draw_seed: int, chunk: int = 8192):
    """Yield (start, p) with p (rows, M) the soft assignments of rows of u to one random codebook."""
    d = u.shape[1]
    g = torch.Generator().manual_seed(draw_seed)
    c = torch.randn(n_bins, d, generator=g, dtype=torch.float64).to(u.device, u.dtype)
    c = c / c.norm(dim=1, keepdim=True)
    for s in range(0, u.shape[0], chunk):
        logits = (u[s:s + chunk] @ c.T) * (math.sqrt(d) / temperature)
        yield s, torch.softmax(logits, dim=1).double()


def _h(q: torch.Tensor) -> torch.Tensor:
    q = q / q.sum(-1, keepdim=True)
    return -(torch.where(q > 0, q * torch.log(q.clamp_min(1e-300)), torch.zeros_like(q))).sum(-1)


def _soft_parts(z: torch.Tensor, y: torch.Tensor | None, n_bins: int, temperature: float, n_draws: int, seed: int,
                center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per draw: H_soft(T) and H_soft(T | Y) in nats (the second = the first without ``y``)."""
    u = _directions(z, center)
    if u is None:
        zero = torch.zeros(n_draws, dtype=torch.float64)
        return zero, zero.clone()
    n = u.shape[0]
    if y is not None:
        classes, yi = torch.unique(y, return_inverse=True)
        counts = torch.bincount(yi, minlength=len(classes)).double()
    hs, hc = [], []
    for r in range(n_draws):
        total = torch.zeros(n_bins, dtype=torch.float64)
        per = torch.zeros(len(classes), n_bins, dtype=torch.float64) if y is not None else None
        for s, p in _assignments(u, n_bins, temperature, seed * 1_000_003 + r):
            p = p.cpu()
            total += p.sum(0)
            if per is not None:
                per.index_add_(0, yi[s:s + len(p)].cpu(), p)
        h = _h(total / n)
        hs.append(h)
        hc.append((counts / n * _h(per)).sum() if per is not None else h)
    return torch.stack(hs), torch.stack(hc)


def _check_z(z: Any, name: str = "z") -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(z).__name__}.")
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"'{name}' must be a non-empty 2-D tensor (N, D), got shape {tuple(z.shape)}.")
    if not z.is_floating_point():
        raise TypeError(f"'{name}' must hold floating-point values, got dtype {z.dtype}.")
    if not torch.isfinite(z).all():
        raise ValueError(f"'{name}' contains NaN or infinite values.")
    return z


def soft_entropy(z: torch.Tensor, *, n_bins: int = 32, temperature: float | str = 0.1, n_draws: int = 8,
                 center: bool = True, seed: int = 0, unit: str = "bits") -> float:
    """Soft entropy H_soft(T) of N representations by randomized soft quantisation (see the module notes).

    Parameters
    ----------
    z : torch.Tensor, shape (N, D)
        Floating representations (e.g. one layer's token states).
    n_bins : int >= 2, default 32
        Bin centres M, random unit directions; the entropy is at most log M.
    temperature : float > 0 or 'calibrated', default 0.1
        Softmax temperature on the sqrt(D)-scaled cosines; -> 0 gives the
        nearest-centre (hard) quantiser. ``'calibrated'``: 1 / sqrt(2 ln M),
        the leading-order calibration of Conklin & Hosking's code (see the
        module notes).
    n_draws : int >= 1, default 8
        Independent codebooks averaged over.
    center : bool, default True
        Subtract the mean over items before taking directions.
    seed : int, default 0
    unit : {'bits', 'nats'}, default 'bits'

    Returns
    -------
    float
        In ``unit``.

    References
    ----------
    .. [1] H. Conklin and T. Hosking, "Learning is Forgetting: LLM Training as
       Lossy Compression", ICLR 2026, arXiv:2604.07569.
    """
    check_unit(unit)
    n_bins, temperature, n_draws, seed = _check_soft(n_bins, temperature, n_draws, seed)
    hs, _ = _soft_parts(_check_z(z), None, n_bins, temperature, n_draws, seed, bool(center))
    h = float(hs.mean())
    return nats_to(h, unit)


def soft_information_plane(t: torch.Tensor, y: Any, *, n_bins: int = 32, temperature: float | str = 0.1,
                           n_draws: int = 8, center: bool = True, seed: int = 0,
                           unit: str = "bits") -> tuple[float, float]:
    """The soft-entropy information plane of Conklin & Hosking: (I(X;T), I(T;Y)) = (H_soft(T), H_soft(T) - H_soft(T|Y)).

    X (the input, e.g. a token's context) determines T, so I(X;T) = H(T),
    read through the soft quantiser; I(T;Y) uses the same codebooks for the
    class-conditional averages (see the module notes). Each draw's
    H(q) - sum_y p(y) H(q_y) is >= 0 (q is the p(y)-mixture of the q_y and
    the entropy is concave), so I(T;Y) is never negative; it is at most
    I(X;T) and at most H(Y).

    Parameters
    ----------
    t : torch.Tensor, shape (N, D)
    y : int tensor or array, shape (N,)
        A discrete label per item (e.g. the next token).
    n_bins, temperature, n_draws, center, seed, unit
        As in :func:`soft_entropy`.

    Returns
    -------
    (float, float)
        I(X;T) and I(T;Y) in ``unit``.

    References
    ----------
    .. [1] H. Conklin and T. Hosking, "Learning is Forgetting: LLM Training as
       Lossy Compression", ICLR 2026, arXiv:2604.07569.
    .. [2] N. Tishby, F. C. Pereira and W. Bialek, "The information bottleneck
       method", 1999 (the information plane).
    """
    check_unit(unit)
    n_bins, temperature, n_draws, seed = _check_soft(n_bins, temperature, n_draws, seed)
    t = _check_z(t, "t")
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim != 1 or y.shape[0] != t.shape[0]:
        raise ValueError(f"'y' must be 1-D with one label per row of 't' ({t.shape[0]}), got shape "
                         f"{tuple(y.shape)}.")
    if y.is_floating_point() or y.is_complex():
        raise TypeError(f"'y' must hold discrete (integer) labels, got dtype {y.dtype}.")
    hs, hc = _soft_parts(t, y, n_bins, temperature, n_draws, seed, bool(center))
    k = unit_scale(unit)
    return float(hs.mean()) * k, float((hs - hc).mean()) * k
