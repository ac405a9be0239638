"""A token-sequence classification task with known input entropy (no download).

``token_task(n, vocab_size=6, length=12)`` draws ``n`` *distinct* sequences
of token ids uniformly at random and labels each by its most frequent token
among the first ``n_classes`` ids (ties go to the smaller id). Because the
sequences are distinct, H(X) = log2 n bits on the evaluation set, and any
injective layer T (an embedding) has I(X;T) = log2 n: the ground truth the
information-plane tests check discrete inputs against.
"""

from __future__ import annotations

import numpy as np

from .._validation import Interval, check_random_state, validate_params

__all__ = ["token_task"]


def token_task(n: int, *, vocab_size: int = 6, length: int = 12, n_classes: int = 2,
               seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct token sequences (int64, shape (n, length)) and their class labels (int64, (n,)).

    Parameters
    ----------
    n : int
        Number of sequences (at most ``vocab_size ** length``).
    vocab_size : int, default 6
    length : int, default 12
    n_classes : int, default 2
        Label = the most frequent of tokens ``0 .. n_classes - 1`` in the
        sequence (ties: the smallest id); at most ``vocab_size``.
    seed : int or None, default 0
    """
    validate_params("token_task", {"n": n, "vocab_size": vocab_size, "length": length, "n_classes": n_classes},
                    {"n": [Interval(int, 2, None)], "vocab_size": [Interval(int, 2, None)],
                     "length": [Interval(int, 1, None)], "n_classes": [Interval(int, 2, None)]})
    if n_classes > vocab_size:
        raise ValueError(f"'n_classes' ({n_classes}) must be at most 'vocab_size' ({vocab_size}).")
    if length * np.log(vocab_size) < np.log(2 * n):
        raise ValueError(f"'n' ({n}) is too large for distinct sequences: need vocab_size ** length >= 2 n "
                         f"(got {vocab_size} ** {length}).")
    rng = check_random_state(seed)
    rows: list[np.ndarray] = []
    seen: set[bytes] = set()
    while len(rows) < n:
        batch = rng.integers(0, vocab_size, size=(2 * (n - len(rows)), length), dtype=np.int64)
        for r in batch:
            key = r.tobytes()
            if key not in seen:
                seen.add(key)
                rows.append(r)
                if len(rows) == n:
                    break
    x = np.stack(rows)
    counts = np.stack([(x == c).sum(axis=1) for c in range(n_classes)], axis=1)
    return x, counts.argmax(axis=1).astype(np.int64)
