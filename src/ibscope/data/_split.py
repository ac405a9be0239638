"""Shuffled, seeded train/test splits and label noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_random_state

__all__ = ["Split", "train_test_split", "add_label_noise", "load_digits_dataset"]


@dataclass(frozen=True)
class Split:
    """Row indices of a train/test split (both sorted)."""

    train: np.ndarray
    test: np.ndarray


def train_test_split(n: int, *, train_fraction: float, seed: int | None = 0,
                     stratify: np.ndarray | None = None) -> Split:
    """Split ``n`` rows at random into train and test index sets.

    Unlike the reference code (which took the first rows of a file ordered
    by binary pattern) the split is shuffled; with ``stratify`` (labels) each
    class keeps its proportion. ``train_fraction`` is in (0, 1]; 1 puts every
    row in the training set and leaves the test set empty.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"'n' must be an int >= 2, got {n!r}.")
    if isinstance(train_fraction, bool) or not (0.0 < float(train_fraction) <= 1.0):
        raise ValueError(f"'train_fraction' must be in (0, 1], got {train_fraction!r}.")
    rng = check_random_state(seed)
    if train_fraction == 1.0:
        return Split(np.arange(n), np.arange(0))
    if stratify is None:
        perm = rng.permutation(n)
        k = max(1, min(n - 1, int(round(train_fraction * n))))
        return Split(np.sort(perm[:k]), np.sort(perm[k:]))
    labels = np.asarray(stratify).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"'stratify' must have {n} labels, got {labels.shape[0]}.")
    train = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(train_fraction * idx.size))
        train.append(idx[:k])
    tr = np.sort(np.concatenate(train))
    if tr.size == 0 or tr.size == n:
        raise ValueError(f"'train_fraction'={train_fraction} leaves an empty train or test set for n={n}.")
    mask = np.ones(n, dtype=bool)
    mask[tr] = False
    return Split(tr, np.flatnonzero(mask))


def add_label_noise(y: np.ndarray, ratio: float, *, n_classes: int | None = None,
                    seed: int | None = 0) -> np.ndarray:
    """Replace a fraction ``ratio`` of labels by a uniformly drawn *different* class.

    Exactly round(ratio * n) labels change (chosen at random), so the noise
    ratio is the one asked for.
    """
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if isinstance(ratio, bool) or not (0.0 <= float(ratio) <= 1.0):
        raise ValueError(f"'ratio' must be in [0, 1], got {ratio!r}.")
    k = int(n_classes) if n_classes is not None else int(y.max()) + 1
    if k < 2:
        raise ValueError(f"'n_classes' must be >= 2 to flip labels, got {k}.")
    rng = check_random_state(seed)
    out = y.copy()
    idx = rng.choice(y.size, size=int(round(ratio * y.size)), replace=False)
    shift = rng.integers(1, k, size=idx.size)
    out[idx] = (y[idx] + shift) % k
    return out


def load_digits_dataset() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: x float32 (1797, 64) scaled to [0, 1], y int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
