"""Snapshot schedules."""

from __future__ import annotations

import numpy as np

__all__ = ["log_schedule", "linear_schedule"]


def _check(n_epochs: int, n_snapshots: int) -> None:
    for name, v, lo in (("n_epochs", n_epochs, 1), ("n_snapshots", n_snapshots, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"'{name}' must be an int >= {lo}, got {v!r}.")


def log_schedule(n_epochs: int, n_snapshots: int) -> list[int]:
    """About ``n_snapshots`` log-spaced epochs in [0, n_epochs], always with 0 and n_epochs.

    Epoch 0 is the initialization (before any update); epoch e is after e
    passes over the training set. Fewer points come back when the log grid
    collides on small integers (every epoch is then taken early on).
    """
    _check(n_epochs, n_snapshots)
    n_snapshots = min(n_snapshots, n_epochs + 1)
    # grow the grid until the rounded log-spaced points give enough distinct epochs
    k = n_snapshots - 1
    epochs = {0, n_epochs}
    while len(epochs) < n_snapshots and k <= 20 * n_snapshots:
        grid = np.unique(np.round(np.logspace(0, np.log10(n_epochs), k)).astype(int))
        epochs = {0, n_epochs, *grid.tolist()}
        k += 1
    out = sorted(epochs)
    if len(out) > n_snapshots:  # thin evenly in log space, keeping the ends
        idx = np.unique(np.round(np.linspace(0, len(out) - 1, n_snapshots)).astype(int))
        out = [out[i] for i in idx]
    return out


def linear_schedule(n_epochs: int, n_snapshots: int) -> list[int]:
    """``n_snapshots`` evenly spaced epochs in [0, n_epochs] including both ends."""
    _check(n_epochs, n_snapshots)
    return sorted(set(np.round(np.linspace(0, n_epochs, min(n_snapshots, n_epochs + 1))).astype(int).tolist()))
