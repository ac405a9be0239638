"""Plug-in estimators for discrete variables (and the entropy core of binning).

Entropy of a histogram of counts c_1..c_m (N = sum c, p_i = c_i / N), with
an optional bias correction (``correction=``):

* ``'none'``: plug-in H = -sum p log p (biased low by about (m - 1) / (2N));
* ``'miller_madow'``: plug-in + (m - 1) / (2N) [1]_;
* ``'chao_shen'``: coverage-adjusted Horvitz-Thompson estimator [3]_: with
  f_1 singletons, coverage C = 1 - f_1 / N (f_1 = N - 1 if all are
  singletons), q_i = C p_i and H = -sum q_i log q_i / (1 - (1 - q_i)^N);
  it accounts for unseen symbols, which matters when N is not >> m;
* ``'jackknife'``: H_J = N H - (N - 1)/N sum_j H_(-j) over the N leave-one-out
  plug-in entropies [4]_ (computed per distinct count, O(m)).

References
----------
.. [1] G. A. Miller, "Note on the bias of information estimates", in
   Information Theory in Psychology, 1955 (the Miller-Madow correction).
.. [2] L. Paninski, "Estimation of entropy and mutual information",
   Neural Computation 15(6), 2003.
.. [3] A. Chao and T.-J. Shen, "Nonparametric estimation of Shannon's index
   of diversity when there are unseen species in sample", Environmental and
   Ecological Statistics 10, 2003.
.. [4] S. Zahl, "Jackknifing an index of diversity", Ecology 58(4), 1977.
"""

from __future__ import annotations

import numpy as np

from .._validation import BOOLEAN, Options, discrete_symbols
from .base import DISCRETE, BaseMIEstimator

__all__ = ["Discrete", "plugin_entropy", "entropy_of_symbols", "discrete_mi", "entropy_from_counts",
           "CORRECTIONS", "resolve_correction"]

CORRECTIONS = ("none", "miller_madow", "chao_shen", "jackknife")


def resolve_correction(correction: str | None, miller_madow: bool, owner: str) -> str:
    """The entropy correction from the ``correction`` and legacy ``miller_madow`` parameters."""
    if correction is None:
        return "miller_madow" if miller_madow else "none"
    if correction not in CORRECTIONS:
        raise ValueError(f"The 'correction' parameter of {owner} must be one of {CORRECTIONS}. "
                         f"Got {correction!r} instead.")
    if miller_madow and correction != "miller_madow":
        raise ValueError(f"{owner}: miller_madow=True contradicts correction={correction!r}; "
                         f"pass only correction=.")
    return correction


def _plugin(c: np.ndarray, n: float) -> float:
    p = c / n
    return float(-(p * np.log(p)).sum())


def entropy_from_counts(counts: np.ndarray, correction: str = "none") -> float:
    """Entropy in nats of a histogram of counts with the bias ``correction`` (see module docstring)."""
    if correction not in CORRECTIONS:
        raise ValueError(f"The 'correction' parameter must be one of {CORRECTIONS}. "
                         f"Got {correction!r} instead.")
    c = np.asarray(counts, dtype=np.float64)
    if c.size and (c.min() < 0 or not np.isfinite(c).all()):
        raise ValueError("'counts' must be finite and non-negative.")
    c = c[c > 0]
    n = c.sum()
    if n <= 0:
        return 0.0
    if correction == "none":
        h = _plugin(c, n)
    elif correction == "miller_madow":
        h = _plugin(c, n) + (c.size - 1) / (2.0 * n)
    elif correction == "chao_shen":
        f1 = float((c == 1).sum())
        if f1 == n:
            f1 = n - 1.0
        q = (1.0 - f1 / n) * c / n
        # inclusion probability 1 - (1 - q)^N, = 1 for q = 1 (a single symbol)
        safe = np.minimum(q, 0.5)
        incl = np.where(q < 1.0, -np.expm1(n * np.log1p(-np.where(q < 1.0, q, safe))), 1.0)
        h = float(-(q * np.log(q) / incl).sum())
    else:  # jackknife
        if n < 2:
            return 0.0
        s = float((c * np.log(c)).sum())
        vals, mult = np.unique(c, return_counts=True)
        clog = vals * np.log(vals)
        cm1 = vals - 1.0
        cm1log = np.where(cm1 > 0, cm1 * np.log(np.where(cm1 > 0, cm1, 1.0)), 0.0)
        h_loo = np.log(n - 1.0) - (s - clog + cm1log) / (n - 1.0)  # leave one out of a cell of count v
        mean_loo = float((mult * vals * h_loo).sum() / n)
        h = n * _plugin(c, n) - (n - 1.0) * mean_loo
    return max(h, 0.0)


def plugin_entropy(counts: np.ndarray, *, miller_madow: bool = False, correction: str | None = None
                   ) -> float:
    """Plug-in (maximum-likelihood) entropy in nats of a histogram of counts.

    With ``miller_madow`` the first-order bias correction (m - 1) / (2 N) is
    added, m being the number of non-empty cells; ``correction`` chooses any
    of :data:`CORRECTIONS` instead.
    """
    return entropy_from_counts(counts, resolve_correction(correction, miller_madow, "plugin_entropy"))


def entropy_of_symbols(ids: np.ndarray, *, miller_madow: bool = False, correction: str | None = None
                       ) -> float:
    """Entropy (nats) of a 1-D array of non-negative integer symbol ids (plug-in or corrected)."""
    return plugin_entropy(np.bincount(np.asarray(ids, dtype=np.int64)), miller_madow=miller_madow,
                          correction=correction)


def discrete_mi(a: np.ndarray, b: np.ndarray, *, miller_madow: bool = False,
                correction: str | None = None) -> float:
    """I(A;B) = H(A) + H(B) - H(A,B) in nats for integer arrays (n,) or (n, d).

    Never negative without a correction (a property of the plug-in
    estimator); with a correction a negative value is clipped to 0. Each of
    the three entropies gets the same ``correction`` (or Miller-Madow).
    """
    corr = resolve_correction(correction, miller_madow, "discrete_mi")
    ia, ma = discrete_symbols(a)
    ib, mb = discrete_symbols(b)
    joint = ia * mb + ib
    h_a = entropy_of_symbols(ia, correction=corr)
    h_b = entropy_of_symbols(ib, correction=corr)
    _, joint_ids = np.unique(joint, return_inverse=True)
    h_ab = entropy_of_symbols(joint_ids.reshape(-1), correction=corr)
    return max(h_a + h_b - h_ab, 0.0)


class Discrete(BaseMIEstimator):
    """Plug-in mutual information of two discrete variables.

    I(X;Y) = H(X) + H(Y) - H(X,Y) from the empirical joint distribution; rows
    of a 2-D input are joint symbols.

    Parameters
    ----------
    miller_madow : bool, default False
        Add the Miller-Madow bias correction (m-1)/(2N) to each entropy.
    correction : {'none', 'miller_madow', 'chao_shen', 'jackknife'} or None, default None
        Entropy bias correction of each of the three entropies (see the
        module docstring); None follows ``miller_madow``.
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    Bias: the plug-in MI is biased upward (roughly (m_x-1)(m_y-1)/(2N) nats for
    independent variables); Miller-Madow removes the first-order term,
    Chao-Shen and the jackknife also the effect of unseen symbols (see the
    comparison in docs/estimators.md).
    Cost: O(n log n).

    References
    ----------
    .. [1] Paninski (2003), Neural Computation 15(6).
    .. [3] Chao & Shen (2003), Environ. Ecol. Stat. 10.
    .. [4] Zahl (1977), Ecology 58(4).
    """

    name = "discrete"
    bound = None
    supports = frozenset({(DISCRETE, DISCRETE)})
    _constraints = {"miller_madow": [BOOLEAN], "correction": [Options((None, *CORRECTIONS))]}

    def __init__(self, *, miller_madow: bool = False, correction: str | None = None,
                 unit: str = "bits"):
        self.miller_madow = miller_madow
        self.correction = correction
        self.unit = unit
        self._check_params()
        self._correction = resolve_correction(correction, miller_madow, "Discrete")

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        return discrete_mi(x, y, correction=self._correction)
