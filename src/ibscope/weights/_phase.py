"""Fitting-to-compression phase transition: the epoch where a smoothed IIW curve peaks.

PAC-Bayes IB [1]_ reads the IIW curve over training as a rise (fitting)
then a fall (compression); the transition is the epoch of its maximum. A raw
curve is noisy (stochastic estimates, SGD noise), so:

1. the curve is smoothed with a centred moving average of ``window`` points
   (shrinking at the ends), optionally on log values (``log=True``, for
   curves spanning orders of magnitude);
2. the transition is the epoch of the smoothed maximum;
3. ``prominence`` = (peak - max(min before, min after)) / (max - min of
   the smoothed curve), in [0, 1]: 0 for a monotone curve (peak at an end,
   no fall or no rise), near 1 for a clean rise and fall;
4. ``confidence`` = fraction of residual-bootstrap replicates whose smoothed
   peak lies within ``tolerance`` points of the detected one: residuals
   (raw - smoothed) are resampled with replacement, added back to the
   smoothed curve, re-smoothed, and the peak re-located. A peak at either
   end of the curve is not a transition: ``transition=False`` and the
   confidence counts only interior replicate peaks.

References
----------
.. [1] Z. Wang et al., "PAC-Bayes Information Bottleneck", ICLR 2022.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_random_state

__all__ = ["PhaseTransition", "detect_phase_transition", "moving_average"]


@dataclass(frozen=True)
class PhaseTransition:
    epoch: float
    index: int
    transition: bool  # True when the peak is interior (a rise then a fall)
    confidence: float
    prominence: float
    smoothed: np.ndarray


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; the window shrinks symmetrically at the ends."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    h = max(0, (int(window) - 1) // 2)
    c = np.concatenate([[0.0], np.cumsum(v)])
    out = np.empty(n)
    for i in range(n):
        k = min(h, i, n - 1 - i)
        out[i] = (c[i + k + 1] - c[i - k]) / (2 * k + 1)
    return out


def _prominence(s: np.ndarray, i: int) -> float:
    span = float(s.max() - s.min())
    if span <= 0 or i in (0, s.size - 1):
        return 0.0
    base = max(float(s[:i].min()), float(s[i + 1:].min()))
    return float((s[i] - base) / span)


def detect_phase_transition(epochs, values, *, window: int = 5, log: bool = False, n_bootstrap: int = 200,
                            tolerance: int | None = None, seed: int | None = 0) -> PhaseTransition:
    """Epoch where the smoothed curve ``values(epochs)`` peaks, with a bootstrap confidence.

    Parameters
    ----------
    epochs, values : array-like of shape (n,)
        The curve (n >= 3), e.g. total IIW at the tracked epochs.
    window : int
        Moving-average width in points (odd; 1 disables smoothing).
    log : bool
        Smooth log(values) (values must be > 0).
    n_bootstrap : int
        Residual-bootstrap replicates (0 skips: confidence NaN).
    tolerance : int, optional
        Points around the peak that count as agreeing; default window // 2.
    seed : int or None
    """
    e = np.asarray(epochs, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if e.size != v.size:
        raise ValueError(f"'epochs' and 'values' must have the same length; got {e.size} and {v.size}.")
    if v.size < 3:
        raise ValueError(f"'values' needs at least 3 points to locate a peak; got {v.size}.")
    if not (np.isfinite(e).all() and np.isfinite(v).all()):
        raise ValueError("'epochs' and 'values' must be finite (no NaN).")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"'window' must be an int >= 1; got {window!r}.")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"'n_bootstrap' must be an int >= 0; got {n_bootstrap!r}.")
    order = np.argsort(e, kind="stable")
    e, v = e[order], v[order]
    if log:
        if (v <= 0).any():
            raise ValueError("log=True needs values > 0.")
        v = np.log(v)
    tol = window // 2 if tolerance is None else int(tolerance)
    s = moving_average(v, window)
    i = int(np.argmax(s))
    interior = 0 < i < v.size - 1
    conf = float("nan")
    if n_bootstrap:
        rng = check_random_state(seed)
        resid = v - s
        hits = 0
        for _ in range(n_bootstrap):
            sb = moving_average(s + rng.choice(resid, size=resid.size, replace=True), window)
            j = int(np.argmax(sb))
            if abs(j - i) <= tol and (0 < j < v.size - 1 or not interior):
                hits += 1
        conf = hits / n_bootstrap if interior else 0.0
    smoothed = np.exp(s) if log else s
    return PhaseTransition(epoch=float(e[i]), index=int(order[i]), transition=bool(interior), confidence=conf,
                           prominence=_prominence(s, i), smoothed=smoothed)
