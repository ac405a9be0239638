"""Binning (quantization) estimators: fixed edges and adaptive equal-mass bins.

A deterministic network with all inputs distinct has I(X;T) = H(T); binning
turns each layer into a discrete variable T_b (each row of quantized units is
one symbol) and uses plug-in entropies, following Shwartz-Ziv & Tishby [1]_.
Adaptive (entropy-based) binning rebuilds the bins per layer and per snapshot
from the layer's own activations so that they are equally populated [2]_.

Unlike the reference code, values outside the binning range are clipped to
the edge bins (never dropped or wrapped around), and everything is
vectorized (no Python loop over samples).

References
----------
.. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
   networks via information", arXiv:1703.00810, 2017.
.. [2] I. Chelombiev, C. Houghton and C. O'Donnell, "Adaptive estimators show
   information compression in deep neural networks", ICLR 2019.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._units import from_nats
from .._validation import BOOLEAN, NONE, Interval, Options, check_array, discrete_symbols
from ._discrete import (
    CORRECTIONS,
    discrete_mi,
    entropy_from_counts,
    entropy_of_symbols,
    resolve_correction,
)
from .base import BaseMIEstimator

__all__ = ["Binning", "AdaptiveBinning", "fixed_bin_codes", "adaptive_bin_codes"]


def fixed_bin_codes(
    t: np.ndarray,
    *,
    n_bins: int = 30,
    value_range: tuple[float, float] | None = None,
    bin_width: float | None = None,
) -> np.ndarray:
    """Quantize every entry of ``t`` into integer bin codes with fixed edges.

    With ``bin_width`` the bins are [k w, (k+1) w) anchored at 0 (unbounded,
    as in Saxe et al.'s width-0.5 bins). Otherwise ``n_bins`` equal bins span
    ``value_range`` (default: the array's own min and max); values outside the
    range fall into the first or last bin.
    """
    t = np.asarray(t, dtype=np.float64)
    if bin_width is not None:
        return np.floor(t / bin_width).astype(np.int64)
    if value_range is None:
        lo, hi = float(t.min()), float(t.max())
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
    if hi <= lo:
        return np.zeros(t.shape, dtype=np.int64)
    codes = np.floor((t - lo) * (n_bins / (hi - lo))).astype(np.int64)
    np.clip(codes, 0, n_bins - 1, out=codes)
    return codes


def adaptive_bin_codes(
    t: np.ndarray,
    *,
    n_bins: int = 30,
    floor: float | None = None,
    mode: str = "equal_mass",
) -> np.ndarray:
    """Quantize ``t`` with bins rebuilt from its own (pooled) distribution.

    ``mode='equal_mass'`` puts (as nearly as ties allow) the same number of
    values in every bin, as Chelombiev et al. intend; ``mode='equal_distinct'``
    puts the same number of *distinct* values in every bin, which is what
    their public code does. With ``floor`` (e.g. 0 for ReLU, -1 for tanh),
    values at or below the floor get a bin of their own and the remaining
    ``n_bins - 1`` bins adapt to the values above it.
    """
    t = np.asarray(t, dtype=np.float64)
    values = t.ravel()
    k = n_bins
    above = np.ones(values.shape, dtype=bool)
    if floor is not None:
        above = values > floor
        k = n_bins - 1
    pool = values[above]
    if pool.size == 0:
        return np.zeros(t.shape, dtype=np.int64)
    if mode == "equal_distinct":
        pool = np.unique(pool)
    edges = _equal_mass_edges(np.sort(pool), k)
    # bin j holds the values in (edges[j-1], edges[j]]; the last bin everything above
    codes = np.searchsorted(edges, values, side="left").astype(np.int64)
    if floor is not None:
        codes = np.where(above, codes + 1, 0)
    return codes.reshape(t.shape)


def _equal_mass_edges(sorted_values: np.ndarray, k: int) -> np.ndarray:
    """Upper edges of at most ``k`` bins holding (as nearly as ties allow) equal mass.

    Greedy over the sorted values: each bin takes its fair share of what is
    left, extended to include every copy of its last value (ties are never
    split), so a heavy atom such as the zeros of a ReLU layer fills one bin
    and the remaining bins still share the rest equally. The loop runs over
    bins (k <= a few dozen), never over samples.
    """
    s = sorted_values
    n = s.size
    edges = []
    start, left = 0, k
    while left > 1 and start < n:
        v = s[start + -(-(n - start) // left) - 1]
        edges.append(v)
        start = int(np.searchsorted(s, v, side="right"))
        left -= 1
    if edges and start >= n:  # the last bin would be empty
        edges.pop()
    return np.asarray(edges, dtype=np.float64)


def _plane_from_codes(
    codes: np.ndarray, y: np.ndarray, x: np.ndarray | None, correction: str
) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in nats from quantized layer codes, entropies with ``correction``."""
    ids, m = discrete_symbols(codes)
    h_t = entropy_of_symbols(ids, correction=correction)
    i_xt = h_t if x is None else discrete_mi(x, ids, correction=correction)
    # I(T;Y) = H(T) + H(Y) - H(T,Y) from the compact ids: the joint symbol ids * m_y + y_id is
    # already dense, so its histogram is one bincount (its non-empty cells in the sorted order
    # discrete_mi's np.unique gives them: the same value, without re-sorting the layer's symbols)
    iy, my = discrete_symbols(y)
    h_y = entropy_of_symbols(iy, correction=correction)
    h_ty = entropy_from_counts(np.bincount(ids * my + iy, minlength=m * my), correction)
    return i_xt, max(h_t + h_y - h_ty, 0.0)


class _BinningBase(BaseMIEstimator):
    """Shared estimate/plane logic; subclasses define ``codes(t)``."""

    diagnostics = frozenset({"labels"})

    def codes(self, t: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        xq = x if discrete_x else self.codes(x)
        yq = y if discrete_y else self.codes(y)
        return discrete_mi(xq, yq, correction=self._correction)

    def _ceilings_nats(self, x, y, discrete_x, discrete_y) -> dict[str, float | None]:
        """log N, the entropy of each binned variable and of each discrete one."""
        caps = {**super()._ceilings_nats(x, y, discrete_x, discrete_y), "saturated_xt": math.log(x.shape[0])}
        binned = [entropy_of_symbols(discrete_symbols(self.codes(a))[0])
                  for a, d in ((x, discrete_x), (y, discrete_y)) if not d]
        if binned:
            caps["saturated_bins"] = min(binned)
        return caps

    def plane(self, t: Any, y: Any, *, x: Any = None, ci: float | None = None, n_resamples: int = 50,
              subsample: float = 0.5, seed: Any = 0) -> tuple[Any, Any]:
        """Both information-plane coordinates of one layer, in ``self.unit``.

        Parameters
        ----------
        t : array-like of shape (n, d)
            The layer's activations on the evaluation set.
        y : array-like of shape (n,)
            Discrete labels.
        x : array-like of shape (n,), optional
            Discrete input ids. If omitted, all inputs are taken to be distinct
            (the network is deterministic), so I(X;T) = H(T).
        ci : float in (0, 1) or None, default None
            If given, return a pair of :class:`~ibscope.estimators.MIEstimate`
            with subsampling confidence intervals of this level (see
            :meth:`BaseMIEstimator.plane_ci`); otherwise a pair of floats.
        n_resamples, subsample, seed
            Used only with ``ci`` (as in ``estimate_ci``).
        """
        if ci is not None:
            return self.plane_ci(t, y, x=x, level=ci, n_resamples=n_resamples, subsample=subsample, seed=seed)
        t = check_array(t, "t")
        y = check_array(y, "y", discrete=True)
        if y.shape[0] != t.shape[0]:
            raise ValueError(f"'t' and 'y' must have the same number of samples; got {t.shape[0]} and {y.shape[0]}.")
        if x is not None:
            x = check_array(x, "x", discrete=True)
            if x.shape[0] != t.shape[0]:
                raise ValueError(f"'t' and 'x' must have the same number of samples; got {t.shape[0]} and {x.shape[0]}.")
        i_xt, i_ty = _plane_from_codes(self.codes(t), y, x, self._correction)
        self._record_flags(self._plane_flags(i_xt, i_ty, t.shape[0], y, x))  # vs log N (H(X)), H(Y)
        return from_nats(i_xt, self.unit), from_nats(i_ty, self.unit)


def _check_range(value_range: Any) -> None:
    if value_range is None:
        return
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise TypeError(
            f"The 'value_range' parameter of Binning must be None or a pair (low, high). Got {value_range!r} instead."
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(
            f"The 'value_range' parameter of Binning must be a finite pair with low < high. Got {value_range!r} instead."
        )


class Binning(_BinningBase):
    """Plug-in MI after quantization with fixed bins (Shwartz-Ziv & Tishby 2017).

    Parameters
    ----------
    n_bins : int, default 30
        Number of equal-width bins over ``value_range``.
    value_range : (float, float) or None, default None
        The binned interval; ``None`` uses the min and max of the array being
        quantized (all units of a layer pooled). Values outside are clipped to
        the edge bins. For a tanh layer the paper's choice is (-1, 1).
    bin_width : float or None, default None
        If given, use unbounded bins of this width anchored at 0 instead
        (Saxe et al. used 0.5 on MNIST); ``n_bins`` and ``value_range`` are
        then ignored.
    miller_madow : bool, default False
        Apply the Miller-Madow bias correction to every plug-in entropy.
    correction : {'none', 'miller_madow', 'chao_shen', 'jackknife'} or None, default None
        Entropy bias correction of every entropy (see ``_discrete`` and the
        comparison on the 12-bit plane in docs/estimators.md); None follows
        ``miller_madow``.
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    Bias: for a deterministic network the result is the MI of the *binned*
    layer, a quantity that depends on the bin size; I(X;T) <= log2(n) and
    I(T;Y) <= H(Y). As a generic estimator of continuous MI it is biased
    (low for coarse bins, high for fine bins at small n).
    Cost: O(n d) to quantize plus O(n log n) to count symbols.

    References
    ----------
    .. [1] Shwartz-Ziv & Tishby, arXiv:1703.00810 (2017).
    .. [2] Saxe et al., "On the information bottleneck theory of deep
       learning", ICLR 2018.
    """

    name = "binning"
    _constraints = {
        "n_bins": [Interval(int, 2, None)],
        "bin_width": [NONE, Interval(float, 0, None, closed="neither")],
        "miller_madow": [BOOLEAN],
        "correction": [Options((None, *CORRECTIONS))],
    }

    def __init__(
        self,
        *,
        n_bins: int = 30,
        value_range: tuple[float, float] | None = None,
        bin_width: float | None = None,
        miller_madow: bool = False,
        correction: str | None = None,
        unit: str = "bits",
    ):
        self.n_bins = n_bins
        self.value_range = value_range
        self.bin_width = bin_width
        self.miller_madow = miller_madow
        self.correction = correction
        self.unit = unit
        self._check_params()
        self._correction = resolve_correction(correction, miller_madow, type(self).__name__)
        _check_range(value_range)

    def codes(self, t: np.ndarray) -> np.ndarray:
        return fixed_bin_codes(t, n_bins=self.n_bins, value_range=self.value_range, bin_width=self.bin_width)


class AdaptiveBinning(_BinningBase):
    """Plug-in MI with adaptive, maximum-entropy bins (Chelombiev et al. 2019).

    Bins are rebuilt from the pooled values of the array being quantized (one
    layer at one snapshot), so that each bin holds about the same mass.

    Parameters
    ----------
    n_bins : int, default 30
    floor : float or None, default None
        The activation's floor (0 for ReLU, -1 for tanh); values at or below
        it get a bin of their own, the other ``n_bins - 1`` bins adapt.
    mode : {'equal_mass', 'equal_distinct'}, default 'equal_mass'
        'equal_mass' is the paper's intent; 'equal_distinct' (equal numbers of
        distinct values per bin) reproduces the authors' public code.
    miller_madow : bool, default False
    correction : {'none', 'miller_madow', 'chao_shen', 'jackknife'} or None, default None
        As for :class:`Binning`.
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    Bias: as for fixed binning, the value is the MI of the quantized layer;
    equal-mass bins maximize H(T_b) for a given number of bins, which makes
    layers with unbounded activations (ReLU) comparable to saturating ones.
    Cost: O(n d log(n d)) for the quantiles.

    References
    ----------
    .. [1] Chelombiev, Houghton & O'Donnell, ICLR 2019.
    """

    name = "adaptive_binning"
    _constraints = {
        "n_bins": [Interval(int, 2, None)],
        "floor": [NONE, Interval(float, None, None)],
        "mode": [Options(("equal_mass", "equal_distinct"))],
        "miller_madow": [BOOLEAN],
        "correction": [Options((None, *CORRECTIONS))],
    }

    def __init__(
        self,
        *,
        n_bins: int = 30,
        floor: float | None = None,
        mode: str = "equal_mass",
        miller_madow: bool = False,
        correction: str | None = None,
        unit: str = "bits",
    ):
        self.n_bins = n_bins
        self.floor = floor
        self.mode = mode
        self.miller_madow = miller_madow
        self.correction = correction
        self.unit = unit
        self._check_params()
        self._correction = resolve_correction(correction, miller_madow, type(self).__name__)

    def codes(self, t: np.ndarray) -> np.ndarray:
        return adaptive_bin_codes(t, n_bins=self.n_bins, floor=self.floor, mode=self.mode)
