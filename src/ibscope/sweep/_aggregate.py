"""Aggregation over seeds: means with 95% intervals, trajectories on a common epoch grid,
per-point summaries, and (for information-plane results) compression vs generalization.

The generic pieces (:func:`mean_interval`, :func:`common_grid`,
:func:`summarize_points`) work on any tidy table. What is specific to
information-plane results (columns epoch, layer, estimator, i_xt, i_ty, and
the tishby experiment's accuracy columns) is in :func:`trajectory_bands` and
:func:`tishby_compression_statistics`.

References
----------
.. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
   networks via information", arXiv:1703.00810, 2017 (compression phase and
   generalization; averages over 50 initializations).
.. [2] A. M. Saxe et al., "On the information bottleneck theory of deep
   learning", ICLR 2018 (compression is not necessary for generalization).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
import pandas as pd

__all__ = ["mean_interval", "common_grid", "trajectory_bands", "summarize_points",
           "tishby_compression_statistics", "is_information_plane_table", "PLANE_COLUMNS"]

PLANE_COLUMNS = ("epoch", "layer", "estimator", "i_xt", "i_ty")


def is_information_plane_table(results: pd.DataFrame) -> bool:
    """True if ``results`` has the information-plane columns (epoch, layer, estimator, i_xt, i_ty)."""
    return set(PLANE_COLUMNS) <= set(results.columns)


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
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"'level' must be in (0, 1), got {level!r}.")
    g = df.groupby(list(by), sort=sort, dropna=False)
    out = g[list(values)].mean()
    std = g[list(values)].std(ddof=1)
    cnt = g[list(values)].count()
    for v in values:
        n = cnt[v].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(n > 1, stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)), np.nan)
            half = t * std[v].to_numpy() / np.sqrt(n)
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


def tishby_compression_statistics(results: pd.DataFrame, point_columns: Sequence[str] = ()
                                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compression of each layer vs the generalization gap, per run and as rank correlations.

    For each run (grid point, seed), estimator and layer:

    * ``compression`` = max over epochs of I(X;T) - I(X;T) at the last epoch
      (>= 0; 0 means the layer never compressed) [1]_;
    * ``gap_acc`` = train accuracy - test accuracy at the last epoch;
      ``gap_loss`` = test loss - train loss at the last epoch.

    Across runs, per (estimator, layer): Spearman's rank correlation of
    compression with each gap (rho, two-sided p value, number of runs).
    Positive rho: runs that compress more generalize worse; the compression
    claim [1]_ predicts a negative rho, which [2]_ disputes.

    Returns
    -------
    per_run : DataFrame
        One row per (point, seed, estimator, layer).
    correlation : DataFrame
        One row per (estimator, layer): n, rho_acc, p_acc, rho_loss, p_loss
        (NaN with fewer than 3 runs or a constant column).
    """
    from scipy import stats

    needed = {"train_acc", "test_acc", "train_loss", "test_loss", "seed"}
    if not is_information_plane_table(results) or not needed <= set(results.columns):
        raise ValueError(f"'results' needs columns {sorted(set(PLANE_COLUMNS) | needed)} (tishby-like results).")
    run = [*point_columns, "seed"]
    keys = [*run, "estimator", "layer"]
    r = results.sort_values("epoch")
    g = r.groupby(keys, sort=False, dropna=False)
    per = g.agg(i_xt_max=("i_xt", "max"), i_xt_final=("i_xt", "last"), i_ty_final=("i_ty", "last"),
                final_epoch=("epoch", "last"), train_acc=("train_acc", "last"), test_acc=("test_acc", "last"),
                train_loss=("train_loss", "last"), test_loss=("test_loss", "last")).reset_index()
    per["compression"] = per["i_xt_max"] - per["i_xt_final"]
    per["gap_acc"] = per["train_acc"] - per["test_acc"]
    per["gap_loss"] = per["test_loss"] - per["train_loss"]
    if "layer_index" in results.columns:
        per = per.merge(results[["layer", "layer_index"]].drop_duplicates("layer"), on="layer", how="left")
    if "unit" in results.columns:
        per["unit"] = results["unit"].iloc[0]
    rows = []
    for (est, layer), s in per.groupby(["estimator", "layer"], sort=False):
        row = {"estimator": est, "layer": layer, "n": len(s),
               "compression_mean": float(s["compression"].mean())}
        for gap in ("acc", "loss"):
            ok = s[["compression", f"gap_{gap}"]].dropna()
            rho = p = np.nan
            if len(ok) >= 3 and ok["compression"].nunique() > 1 and ok[f"gap_{gap}"].nunique() > 1:
                res = stats.spearmanr(ok["compression"], ok[f"gap_{gap}"])
                rho, p = float(res.statistic), float(res.pvalue)
            row[f"rho_{gap}"], row[f"p_{gap}"] = rho, p
        rows.append(row)
    corr = pd.DataFrame(rows)
    if "layer_index" in per.columns and len(corr):
        corr = corr.merge(per[["layer", "layer_index"]].drop_duplicates("layer"), on="layer", how="left")
        corr = corr.sort_values(["estimator", "layer_index"]).drop(columns="layer_index").reset_index(drop=True)
    return per, corr
