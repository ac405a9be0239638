"""A synthetic language with a known entropy rate: a seeded order-k Markov source over a small vocabulary.

For language models the information-theoretic ground truth is the source's
*entropy rate* H(X_t | X_{t-k..t-1}) (what an ideal next-token predictor's
cross-entropy converges to) and the *next-token information*
I(context; next) = H(X_t) - H(X_t | context). For a stationary order-k Markov
chain both are exact sums over its stationary distribution [1]_ (Cover &
Thomas, Thm. 4.2.4): with pi the stationary distribution of the k-symbol
contexts c and P(y | c) the transition probabilities,

    H(next | context) = - sum_c pi(c) sum_y P(y|c) log P(y|c),
    H(next)           = - sum_y q(y) log q(y),   q(y) = sum_c pi(c) P(y|c),

and I(context; next) = H(next) - H(next | context). Any order-k' >= k
context gives the same conditional entropy (the chain is Markov of order k).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._units import check_unit

__all__ = ["MarkovSource"]


def _entropy_nats(p: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return t.sum(axis=axis)


def _de_bruijn_successor(v: int, k: int) -> np.ndarray:
    """For each context index, the next token on a de Bruijn cycle B(v, k) (every context once)."""
    a = [0] * (k * v + 1)
    seq: list[int] = []

    def rec(t: int, p: int) -> None:  # the Fredricksen-Kessler-Maiorana construction (Lyndon words)
        if t > k:
            if k % p == 0:
                seq.extend(a[1:p + 1])
            return
        a[t] = a[t - p]
        rec(t + 1, p)
        for j in range(a[t - p] + 1, v):
            a[t] = j
            rec(t + 1, t)

    rec(1, 1)
    n = len(seq)
    succ = np.empty(n, dtype=np.int64)
    for i in range(n):
        c = 0
        for j in range(k):
            c = c * v + seq[(i + j) % n]
        succ[c] = seq[(i + k) % n]
    return succ


def _int(v: Any, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise ValueError(f"The '{name}' parameter must be an integer >= {lo}. Got {v!r}.")
    return int(v)


class MarkovSource:
    """A stationary order-``k`` Markov source over ``vocab_size`` tokens with exact entropies.

    The transition distribution of each of the ``vocab_size ** order``
    contexts is drawn (seeded) from a sparse Dirichlet: ``support`` tokens
    get Dirichlet(``concentration``) weights, the others probability 0. One
    of the ``support`` tokens of every context is its successor on a de
    Bruijn cycle of order k (which passes through every context), the others
    are chosen uniformly at random; so the chain on contexts is irreducible
    and its stationary distribution unique. :meth:`from_transitions` takes any transition matrix instead
    (e.g. a deterministic or an iid source).

    Parameters
    ----------
    vocab_size : int >= 2
    order : int >= 1, default 1
        Context length k.
    support : int in [1, vocab_size], default 3
        Nonzero next tokens per context (1 = a deterministic chain).
    concentration : float > 0, default 0.5
        Dirichlet concentration of the nonzero weights (small = peaked).
    seed : int, default 0

    Attributes
    ----------
    transitions : ndarray, shape (vocab_size ** order, vocab_size)
        P(next | context); context index ``sum_i x_i V^(k-1-i)`` (oldest token first).
    stationary : ndarray, shape (vocab_size ** order,)
        Stationary distribution of the contexts.
    marginal : ndarray, shape (vocab_size,)
        Stationary distribution of one token.

    References
    ----------
    .. [1] T. M. Cover and J. A. Thomas, *Elements of Information Theory*,
       2nd ed., Wiley 2006, Sec. 4.2 (entropy rates of Markov chains).
    .. [2] C. E. Shannon, "Prediction and entropy of printed English", Bell
       System Technical Journal 30(1), 1951 (cross-entropy of a predictor
       bounds the entropy rate from above).
    """

    def __init__(self, vocab_size: int = 16, order: int = 1, *, support: int = 3, concentration: float = 0.5,
                 seed: int = 0):
        v = _int(vocab_size, "vocab_size", 2)
        k = _int(order, "order", 1)
        s = _int(support, "support", 1)
        if s > v:
            raise ValueError(f"The 'support' parameter must be <= vocab_size ({v}). Got {s}.")
        if isinstance(concentration, bool) or not isinstance(concentration, numbers.Real) or \
                not math.isfinite(concentration) or concentration <= 0:
            raise ValueError(f"The 'concentration' parameter must be a finite number > 0. Got {concentration!r}.")
        if v ** k > 1 << 16:
            raise ValueError(f"vocab_size ** order = {v ** k} contexts is too many (at most 65536).")
        rng = np.random.default_rng(_int(seed, "seed", 0))
        n_ctx = v ** k
        succ = _de_bruijn_successor(v, k)
        p = np.zeros((n_ctx, v))
        for c in range(n_ctx):
            others = rng.permutation(np.delete(np.arange(v), succ[c]))[:s - 1]
            idx = rng.permutation(np.concatenate([[succ[c]], others]))
            p[c, idx] = rng.dirichlet(np.full(s, float(concentration))) if s > 1 else 1.0
        if not self._irreducible(p, v, k):  # pragma: no cover - the de Bruijn cycle makes it irreducible
            raise RuntimeError("internal error: the chain on contexts is reducible.")
        self._setup(p, k)
        self.params = {"vocab_size": v, "order": k, "support": s, "concentration": float(concentration),
                       "seed": int(seed)}

    @classmethod
    def from_transitions(cls, transitions: Any, order: int = 1) -> MarkovSource:
        """A source with the given P(next | context), shape (vocab_size ** order, vocab_size).

        Rows must be probability vectors; the chain on contexts must be
        irreducible (else its stationary distribution is not unique: a
        ValueError).
        """
        p = np.asarray(transitions, dtype=np.float64)
        k = _int(order, "order", 1)
        if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] != p.shape[1] ** k:
            raise ValueError(f"'transitions' must have shape (V ** order, V) with V >= 2; got {p.shape} "
                             f"for order {k}.")
        if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-9):
            raise ValueError("'transitions' rows must be finite, nonnegative and sum to 1.")
        if not cls._irreducible(p, p.shape[1], k):
            raise ValueError("'transitions' gives a reducible chain on contexts: its stationary distribution "
                             "is not unique.")
        self = cls.__new__(cls)
        self._setup(p / p.sum(1, keepdims=True), k)
        self.params = {"vocab_size": p.shape[1], "order": k, "support": None, "concentration": None,
                       "seed": None}
        return self

    # ----------------------------------------------------------------------------------- internals
    @staticmethod
    def _context_matrix(p: np.ndarray, v: int, k: int):
        from scipy import sparse

        n = v ** k
        c = np.repeat(np.arange(n), v)
        y = np.tile(np.arange(v), n)
        nxt = (c * v + y) % n                    # drop the oldest token, append y
        w = p.reshape(-1)
        keep = w > 0
        return sparse.csr_matrix((w[keep], (c[keep], nxt[keep])), shape=(n, n))

    @classmethod
    def _irreducible(cls, p: np.ndarray, v: int, k: int) -> bool:
        from scipy.sparse.csgraph import connected_components

        n_comp, _ = connected_components(cls._context_matrix(p, v, k), directed=True, connection="strong")
        return n_comp == 1

    def _setup(self, p: np.ndarray, k: int) -> None:
        from scipy import sparse
        from scipy.sparse.linalg import spsolve

        v = p.shape[1]
        self.vocab_size, self.order, self.transitions = v, k, p
        m = self._context_matrix(p, v, k)
        n = v ** k
        # pi (M - I) = 0 with sum pi = 1: replace one equation by the normalisation (unique: irreducible)
        a = (m.T - sparse.identity(n, format="csr")).tolil()
        a[0, :] = np.ones(n)
        b = np.zeros(n)
        b[0] = 1.0
        pi = np.asarray(spsolve(a.tocsr(), b)).reshape(-1) if n > 1 else np.ones(1)
        pi = np.clip(pi, 0.0, None)
        self.stationary = pi / pi.sum()
        self.marginal = self.stationary @ p

    # ----------------------------------------------------------------------------------- entropies
    def entropy_rate(self, unit: str = "bits") -> float:
        """H(next | the previous ``order`` tokens) under the stationary distribution, in ``unit``."""
        h = float(self.stationary @ _entropy_nats(self.transitions))
        return h / math.log(2) if check_unit(unit) == "bits" else h

    def next_token_entropy(self, unit: str = "bits") -> float:
        """H(next): entropy of the stationary distribution of one token, in ``unit``."""
        h = float(_entropy_nats(self.marginal))
        return h / math.log(2) if check_unit(unit) == "bits" else h

    def next_token_information(self, unit: str = "bits") -> float:
        """I(context; next) = H(next) - H(next | context), in ``unit`` (>= 0)."""
        return max(0.0, self.next_token_entropy(unit) - self.entropy_rate(unit))

    # ----------------------------------------------------------------------------------- sampling
    def sample(self, n_sequences: int, length: int, *, seed: int = 0) -> np.ndarray:
        """Token sequences of the stationary chain, shape (n_sequences, length), int64.

        The first ``order`` tokens are a context drawn from the stationary
        distribution; each later token from P(next | the previous ``order``
        tokens). So every position >= ``order`` has exactly the entropy rate
        as its conditional entropy given the past.
        """
        n = _int(n_sequences, "n_sequences", 1)
        t = _int(length, "length", self.order + 1)
        rng = np.random.default_rng(_int(seed, "seed", 0))
        v, k = self.vocab_size, self.order
        ctx = rng.choice(v ** k, size=n, p=self.stationary)
        out = np.empty((n, t), dtype=np.int64)
        for i in range(k):
            out[:, i] = (ctx // v ** (k - 1 - i)) % v
        cum = np.cumsum(self.transitions, axis=1)
        cum[:, -1] = 1.0
        for j in range(k, t):
            u = rng.random(n)
            y = (u[:, None] >= cum[ctx]).sum(1)
            out[:, j] = y
            ctx = (ctx * v + y) % (v ** k)
        return out

    def __repr__(self) -> str:
        return (f"MarkovSource(vocab_size={self.vocab_size}, order={self.order}, "
                f"entropy_rate={self.entropy_rate():.4f} bits)")
