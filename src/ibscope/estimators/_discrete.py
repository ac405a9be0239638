"""Plug-in estimators for discrete variables (and the entropy core of binning).

References
----------
.. [1] G. A. Miller, "Note on the bias of information estimates", in
   Information Theory in Psychology, 1955 (the Miller-Madow correction).
.. [2] L. Paninski, "Estimation of entropy and mutual information",
   Neural Computation 15(6), 2003.
"""

from __future__ import annotations

import numpy as np

from .._validation import BOOLEAN, discrete_symbols
from .base import DISCRETE, BaseMIEstimator

__all__ = ["Discrete", "plugin_entropy", "entropy_of_symbols", "discrete_mi"]


def plugin_entropy(counts: np.ndarray, *, miller_madow: bool = False) -> float:
    """Plug-in (maximum-likelihood) entropy in nats of a histogram of counts.

    With ``miller_madow`` the first-order bias correction (m - 1) / (2 N) is
    added, m being the number of non-empty cells.
    """
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    if n <= 0:
        return 0.0
    p = c / n
    h = float(-(p * np.log(p)).sum())
    if miller_madow:
        h += (c.size - 1) / (2.0 * n)
    return max(h, 0.0)


def entropy_of_symbols(ids: np.ndarray, *, miller_madow: bool = False) -> float:
    """Plug-in entropy (nats) of a 1-D array of non-negative integer symbol ids."""
    return plugin_entropy(np.bincount(np.asarray(ids, dtype=np.int64)), miller_madow=miller_madow)


def discrete_mi(a: np.ndarray, b: np.ndarray, *, miller_madow: bool = False) -> float:
    """Plug-in I(A;B) = H(A) + H(B) - H(A,B) in nats for integer arrays (n,) or (n, d).

    Never negative without the correction (a property of the plug-in
    estimator); with Miller-Madow a negative value is clipped to 0.
    """
    ia, ma = discrete_symbols(a)
    ib, mb = discrete_symbols(b)
    joint = ia * mb + ib
    h_a = entropy_of_symbols(ia, miller_madow=miller_madow)
    h_b = entropy_of_symbols(ib, miller_madow=miller_madow)
    _, joint_ids = np.unique(joint, return_inverse=True)
    h_ab = entropy_of_symbols(joint_ids.reshape(-1), miller_madow=miller_madow)
    return max(h_a + h_b - h_ab, 0.0)


class Discrete(BaseMIEstimator):
    """Plug-in mutual information of two discrete variables.

    I(X;Y) = H(X) + H(Y) - H(X,Y) from the empirical joint distribution; rows
    of a 2-D input are joint symbols.

    Parameters
    ----------
    miller_madow : bool, default False
        Add the Miller-Madow bias correction (m-1)/(2N) to each entropy.
    unit : {'bits', 'nats'}, default 'bits'

    Notes
    -----
    Bias: the plug-in MI is biased upward (roughly (m_x-1)(m_y-1)/(2N) nats for
    independent variables); Miller-Madow removes the first-order term.
    Cost: O(n log n).

    References
    ----------
    .. [1] Paninski (2003), Neural Computation 15(6).
    """

    name = "discrete"
    bound = None
    supports = frozenset({(DISCRETE, DISCRETE)})
    _constraints = {"miller_madow": [BOOLEAN]}

    def __init__(self, *, miller_madow: bool = False, unit: str = "bits"):
        self.miller_madow = miller_madow
        self.unit = unit
        self._check_params()

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        return discrete_mi(x, y, miller_madow=self.miller_madow)
