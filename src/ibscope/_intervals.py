"""Means and confidence intervals over replicates (seeds), and trajectories on a common epoch grid.

The one statistics engine behind every interval in ibscope: the sweep
aggregation (:mod:`ibscope.sweep`), the figures (:mod:`ibscope.plots`), the
experiments' summaries, the claims' statistics and verdicts
(:mod:`ibscope.reproduce`) and the estimators' subsampling intervals all
call these. It imports nothing from the package, so any layer may use it.

* Student t: :func:`t_interval` (one set of replicates), :func:`mean_interval`
  (per group): mean +- t_{(1+level)/2, n-1} s / sqrt(n); with one replicate
  the interval is NaN (unknown), never zero. :func:`t_quantile` /
  :func:`t_ppf` are the quantiles every t-based interval uses.
* Welch: :func:`welch_interval`, the difference of two means with unequal
  variances (Welch-Satterthwaite degrees of freedom).
* Percentile bootstrap: :func:`bootstrap_interval`.
* Bonferroni: :func:`bonferroni_level`, the per-interval level that makes
  ``m`` intervals hold together with probability >= ``level``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["mean_interval", "t_interval", "t_quantile", "t_ppf", "welch_interval", "bootstrap_interval",
           "bonferroni_level", "common_grid", "trajectory_bands", "is_information_plane_table", "PLANE_COLUMNS"]

PLANE_COLUMNS = ("epoch", "layer", "estimator", "i_xt", "i_ty")


def is_information_plane_table(results: pd.DataFrame) -> bool:
    """True if ``results`` has the information-plane columns (epoch, layer, estimator, i_xt, i_ty)."""
    return set(PLANE_COLUMNS) <= set(results.columns)


def t_ppf(q: float, dof: float | np.ndarray) -> float | np.ndarray:
    """The ``q`` quantile of Student's t distribution with ``dof`` degrees of freedom (scipy.stats.t.ppf)."""
    from scipy import stats

    return stats.t.ppf(q, dof)


def t_quantile(level: float, dof: float | np.ndarray) -> float | np.ndarray:
    """t_{(1+level)/2, dof}: the multiplier of the standard error in a two-sided ``level`` t interval.

    ``dof`` may be fractional (Welch) or an array.

    References
    ----------
    .. [1] Student, "The probable error of a mean", Biometrika 6(1), 1908.
    """
    return t_ppf(0.5 + level / 2, dof)


def bonferroni_level(level: float, m: int) -> float:
    """The level of each of ``m`` intervals that hold together with probability >= ``level``: 1 - (1-level)/m.

    References
    ----------
    .. [1] O. J. Dunn, "Multiple comparisons among means", JASA 56(293), 1961.
    """
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"'m' must be an int >= 1 (the number of intervals), got {m!r}.")
    return 1.0 - (1.0 - float(level)) / int(m)


def _t_half_width(std: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """t_{(1+level)/2, n-1} * std / sqrt(n); NaN where n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n > 1, t_quantile(level, np.maximum(n - 1, 1)), np.nan)
        return t * np.asarray(std, dtype=float) / np.sqrt(n)


def welch_interval(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
                   ) -> tuple[float, float, float, float]:
    """Difference of two means with Welch's t interval: (mean(a) - mean(b), lo, hi, dof).

    mean(a) - mean(b) +- t_{(1+level)/2, dof} sqrt(s_a^2/n_a + s_b^2/n_b),
    with the Welch-Satterthwaite degrees of freedom ``dof``. Non-finite
    values are left out; NaN bounds (and dof) when an arm has fewer than two
    values; a zero standard error gives the point interval [d, d] (dof NaN).

    References
    ----------
    .. [1] B. L. Welch, "The generalization of 'Student's' problem when several
       different population variances are involved", Biometrika 34, 1947.
    """
    if not 0 < level < 1:
        raise ValueError(f"'level' must be in (0, 1), got {level!r}.")
    va, vb = (np.asarray(v, dtype=np.float64).ravel() for v in (a, b))
    va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    nan = float("nan")
    diff = float(va.mean() - vb.mean()) if va.size and vb.size else nan
    if va.size < 2 or vb.size < 2:
        return diff, nan, nan, nan
    sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
    se = float(np.sqrt(sa + sb))
    if se == 0:
        return diff, diff, diff, nan
    dof = (sa + sb) ** 2 / (sa ** 2 / (va.size - 1) + sb ** 2 / (vb.size - 1))
    half = float(t_quantile(level, dof)) * se
    return diff, diff - half, diff + half, float(dof)


def bootstrap_interval(statistic: Callable[[Any], float], data: Any, *, level: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float, float, int]:
    """Percentile bootstrap over rows of ``data`` (an array or DataFrame): (estimate, lo, hi, n).

    ``statistic(rows) -> float``; the estimate is the statistic of all rows,
    the bounds the (1-level)/2 and (1+level)/2 quantiles of the statistic
    over ``n_resamples`` resamples of the rows with replacement (seeded).
    Resamples whose statistic is NaN (e.g. a constant column for a
    correlation) are left out; fewer than half valid, or fewer than 3 rows,
    gives NaN bounds.

    References
    ----------
    .. [1] B. Efron and R. J. Tibshirani, *An Introduction to the Bootstrap*,
       Chapman & Hall, 1993, ch. 13.
    """
    rows = np.arange(len(data))
    n = int(rows.size)
    take = (lambda idx: data.iloc[idx]) if hasattr(data, "iloc") else (lambda idx: np.asarray(data)[idx])
    est = float(statistic(take(rows))) if n else float("nan")
    if n < 3:
        return est, float("nan"), float("nan"), n
    rng = np.random.default_rng(seed)
    reps = np.array([statistic(take(rng.integers(0, n, n))) for _ in range(n_resamples)], dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size < n_resamples / 2:
        return est, float("nan"), float("nan"), n
    a = 1 - level
    lo, hi = np.quantile(reps, [a / 2, 1 - a / 2])
    return est, float(lo), float(hi), n


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


