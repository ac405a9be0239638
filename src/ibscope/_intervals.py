"""Means and confidence intervals over replicates (seeds), and trajectories on a common epoch grid.

The one statistics engine behind every "mean and interval over seeds" in
ibscope: the sweep aggregation (:mod:`ibscope.sweep`), the figures
(:mod:`ibscope.plots`) and the experiments' summaries all call these. It
imports nothing from the package, so any layer may use it.

Intervals are two-sided Student-t intervals of the mean over replicates
(mean +- t_{(1+level)/2, n-1} s / sqrt(n)); with one replicate the interval
is NaN (unknown), never zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["mean_interval", "t_interval", "common_grid", "trajectory_bands", "is_information_plane_table", "PLANE_COLUMNS"]

PLANE_COLUMNS = ("epoch", "layer", "estimator", "i_xt", "i_ty")


def is_information_plane_table(results: pd.DataFrame) -> bool:
    """True if ``results`` has the information-plane columns (epoch, layer, estimator, i_xt, i_ty)."""
    return set(PLANE_COLUMNS) <= set(results.columns)


def _t_half_width(std: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """t_{(1+level)/2, n-1} * std / sqrt(n); NaN where n < 2."""
    from scipy import stats

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n > 1, stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)), np.nan)
        return t * np.asarray(std, dtype=float) / np.sqrt(n)


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and Student-t interval of the mean of one set of replicates: (mean, lo, hi, n).

    Non-finite values are left out; NaN bounds for fewer than two replicates.
    """
    if not 0 < level < 1:
        raise ValueError(f"'level' must be in (0, 1), got {level!r}.")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    half = float(_t_half_width(v.std(ddof=1) if v.size > 1 else np.nan, v.size, level))
    return m, m - half, m + half, int(v.size)


def mean_interval(df: pd.DataFrame, by: Sequence[str], values: Sequence[str], *, level: float = 0.95,
                  sort: bool = True) -> pd.DataFrame:
    """Mean and two-sided Student-t interval of the mean of each value column within groups.

    Parameters
    ----------
    df : DataFrame
        One row per (group, replicate), e.g. per (point, epoch, layer, seed).
    by : list of str
        Group columns.
    values : list of str
        Numeric columns to aggregate (NaN rows are left out per column).
    level : float
        Coverage of the interval (0.95: mean +- t_{0.975, n-1} s / sqrt(n)).
    sort : bool
        Groups in sorted order (default) or in order of first appearance.

    Returns
    -------
    DataFrame
        ``by`` columns, then for each value ``v``: ``v`` (mean), ``v_lo``,
        ``v_hi``, and ``n`` (replicates of the first value). With one replicate
        the interval is NaN (unknown), not zero.
    """
    if not 0 < level < 1:
        raise ValueError(f"'level' must be in (0, 1), got {level!r}.")
    g = df.groupby(list(by), sort=sort, dropna=False)
    out = g[list(values)].mean()
    std = g[list(values)].std(ddof=1)
    cnt = g[list(values)].count()
    for v in values:
        half = _t_half_width(std[v].to_numpy(), cnt[v].to_numpy(), level)
        out[f"{v}_lo"] = out[v].to_numpy() - half
        out[f"{v}_hi"] = out[v].to_numpy() + half
    out["n"] = cnt[values[0]].to_numpy()
    cols = [c for v in values for c in (v, f"{v}_lo", f"{v}_hi")] + ["n"]
    return out[cols].reset_index()


def common_grid(df: pd.DataFrame, keys: Sequence[str], values: Sequence[str], *, x: str = "epoch",
                replicate: str = "seed") -> pd.DataFrame:
    """Put every replicate's trajectory on the union of the x values of its group.

    Within each ``keys`` group, the grid is the sorted union of ``x`` over its
    replicates; each replicate's values are interpolated linearly in
    log(1 + x) (snapshot epochs are log-spaced), only inside the range the
    replicate covers (NaN outside: nothing is extrapolated). Replicates that
    already share the grid come back unchanged.
    """
    frames = []
    for gkey, g in df.groupby(list(keys), sort=False, dropna=False):
        grid = np.unique(g[x].to_numpy())
        lg = np.log1p(grid.astype(float))
        for rep, r in g.groupby(replicate, sort=False):
            r = r.sort_values(x)
            rx = np.log1p(r[x].to_numpy(dtype=float))
            block = {k: v for k, v in zip(keys, gkey if isinstance(gkey, tuple) else (gkey,), strict=False)}
            block[replicate] = rep
            block[x] = grid
            inside = (lg >= rx.min()) & (lg <= rx.max())
            for v in values:
                y = np.interp(lg, rx, r[v].to_numpy(dtype=float))
                block[v] = np.where(inside, y, np.nan)
            frames.append(pd.DataFrame(block))
    if not frames:
        return pd.DataFrame(columns=[*keys, replicate, x, *values])
    return pd.concat(frames, ignore_index=True)


def trajectory_bands(results: pd.DataFrame, point_columns: Sequence[str] = (), *,
                     level: float = 0.95) -> pd.DataFrame:
    """Information-plane trajectories: mean and interval over seeds per (point, estimator, layer, epoch).

    ``results``: tidy rows with columns epoch, layer, estimator, i_xt, i_ty,
    seed (and ``layer_index``, ``unit`` if present). Returns the
    :func:`mean_interval` table of i_xt and i_ty on a common epoch grid, the
    lower ends clipped at 0 (mutual information cannot be negative).
    """
    if not is_information_plane_table(results):
        raise ValueError(f"'results' lacks information-plane columns {list(PLANE_COLUMNS)}.")
    keys = [*point_columns, "estimator", "layer"]
    extra = [c for c in ("layer_index", "unit") if c in results.columns]
    grid = common_grid(results, keys, ["i_xt", "i_ty"], x="epoch")
    bands = mean_interval(grid, [*keys, "epoch"], ["i_xt", "i_ty"], level=level)
    for v in ("i_xt", "i_ty"):  # mutual information is >= 0: intersect the interval with [0, inf)
        bands[f"{v}_lo"] = bands[f"{v}_lo"].clip(lower=0.0)
    if extra:
        lookup = results[[*keys, *extra]].drop_duplicates(keys)
        bands = bands.merge(lookup, on=keys, how="left")
    return bands


