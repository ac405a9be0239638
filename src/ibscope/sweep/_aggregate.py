"""Aggregation of a sweep's results over seeds and grid points.

The statistics engine (means with Student-t intervals, trajectories on a
common epoch grid, information-plane bands) is :mod:`ibscope._intervals`,
re-exported here; this module adds :func:`summarize_points`, which applies
an experiment's own ``summarize`` to each grid point. Statistics specific to
one experiment (e.g. the tishby experiment's compression vs generalization)
live in that experiment's module and reach the sweep report through its
``sweep_sections`` hook (see :mod:`ibscope.experiments`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import pandas as pd

from .._intervals import (
    PLANE_COLUMNS,
    common_grid,
    is_information_plane_table,
    mean_interval,
    trajectory_bands,
)

__all__ = ["mean_interval", "common_grid", "trajectory_bands", "summarize_points",
           "is_information_plane_table", "PLANE_COLUMNS"]


def summarize_points(results: pd.DataFrame, experiment: ModuleType, point_columns: Sequence[str]) -> pd.DataFrame:
    """The experiment's own ``summarize(results)`` applied to each grid point (empty if it has none)."""
    fn = getattr(experiment, "summarize", None)
    if fn is None or results.empty:
        return pd.DataFrame()
    if not point_columns:
        return fn(results)
    frames = []
    for key, g in results.groupby(list(point_columns), sort=False, dropna=False):
        s = fn(g)
        if len(s):
            values = key if isinstance(key, tuple) else (key,)
            missing = [(c, v) for c, v in zip(point_columns, values, strict=False) if c not in s.columns]
            for i, (c, v) in enumerate(missing):  # a summary may already carry a grid column
                s.insert(i, c, v)
            frames.append(s)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
