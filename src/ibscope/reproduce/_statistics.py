"""The statistics that decide claims, by name (a claim names one; no code is read from a claim file).

Each statistic takes the result tables of a claim's runs (``{run name:
DataFrame}``, the tidy tables of :mod:`ibscope.sweep`) and its parameters,
and returns a :class:`Statistic`: the estimate, its interval at ``level``, the
number of replicates, how the interval was made, and the per-replicate values
(shown in the claim's report).

Selecting rows: ``where`` (a mapping column -> value, e.g. ``{activation:
relu}``) picks a grid point of a run; ``layer`` is a layer name or
``last_hidden`` (the deepest layer that is not ``output``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._verdict import bootstrap_interval, t_interval

__all__ = ["Statistic", "STATISTICS", "compute_statistic", "late_compression_per_run"]


@dataclass
class Statistic:
    estimate: float
    low: float
    high: float
    n: int
    interval: str
    unit: str
    per_replicate: pd.DataFrame = field(default_factory=pd.DataFrame)
    details: dict[str, Any] = field(default_factory=dict)


def _run(runs: Mapping[str, pd.DataFrame], name: Any) -> pd.DataFrame:
    if name not in runs:
        raise ValueError(f"The statistic names run {name!r}, but the claim's runs are {sorted(runs)}.")
    df = runs[name]
    if df.empty:
        raise ValueError(f"Run {name!r} has no finished result.")
    return df


def _where(df: pd.DataFrame, where: Mapping[str, Any] | None, run: str) -> pd.DataFrame:
    for col, val in dict(where or {}).items():
        if col not in df.columns:
            raise ValueError(f"'where' names column {col!r}, which run {run!r} does not have "
                             f"(columns: {sorted(df.columns)}).")
        df = df[df[col].astype(str) == str(val)] if not isinstance(val, (int, float)) or isinstance(val, bool) \
            else df[np.isclose(pd.to_numeric(df[col], errors="coerce"), float(val))]
        if df.empty:
            raise ValueError(f"No rows of run {run!r} with {col} = {val!r}.")
    return df


def _layer(df: pd.DataFrame, layer: str) -> str:
    layers = (df.sort_values("layer_index")["layer"].drop_duplicates().tolist() if "layer_index" in df.columns
              else list(dict.fromkeys(df["layer"])))
    if layer == "last_hidden":
        hidden = [name for name in layers if name != "output"]
        if not hidden:
            raise ValueError("No hidden layer in the results.")
        return hidden[-1]
    if layer not in layers:
        raise ValueError(f"Layer {layer!r} is not in the results (layers: {layers}).")
    return layer


def _unit(df: pd.DataFrame) -> str:
    return str(df["unit"].iloc[0]) if "unit" in df.columns and len(df) else "bits"


def _replicates(df: pd.DataFrame) -> list[str]:
    """Columns that tell runs apart: a sweep's task id (one per grid point and seed) and the seed."""
    return ["task_id", "seed"] if "task_id" in df.columns else ["seed"]


def late_compression_per_run(df: pd.DataFrame, *, estimator: str, layer: str, from_epoch: int = 0,
                             group: list[str] | None = None) -> pd.DataFrame:
    """Per run: max over epochs >= ``from_epoch`` of I(X;T), minus I(X;T) at the last epoch.

    The quantity of Shwartz-Ziv & Tishby's compression phase: positive when
    the layer's I(X;T) fell after its peak (late in training), 0 when it
    never fell. Also returns the final train/test accuracy and loss where the
    table has them.
    """
    sub = df[df["estimator"] == estimator]
    if sub.empty:
        raise ValueError(f"No rows of estimator {estimator!r} (estimators: {sorted(df['estimator'].unique())}).")
    name = _layer(sub, layer)
    sub = sub[sub["layer"] == name].sort_values("epoch")
    keys = list(group or _replicates(df))
    rows = []
    for key, g in sub.groupby(keys, sort=True):
        late = g[g["epoch"] >= from_epoch]
        if late.empty:
            raise ValueError(f"No snapshot at or after epoch {from_epoch} (last epoch {int(g['epoch'].max())}).")
        last = g.iloc[-1]
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update({"layer": name, "peak_i_xt": float(late["i_xt"].max()), "final_i_xt": float(last["i_xt"]),
                    "final_epoch": int(last["epoch"])})
        row["value"] = row["peak_i_xt"] - row["final_i_xt"]
        for c in ("train_acc", "test_acc", "train_loss", "test_loss"):
            if c in g.columns:
                row[c] = float(last[c])
        rows.append(row)
    return pd.DataFrame(rows)


def _late_compression(runs, *, run: str, estimator: str, layer: str = "last_hidden", from_epoch: int = 0,
                      where: Mapping[str, Any] | None = None, level: float = 0.95) -> Statistic:
    df = _where(_run(runs, run), where, run)
    per = late_compression_per_run(df, estimator=estimator, layer=layer, from_epoch=from_epoch)
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over seeds", _unit(df), per,
                     {"layer": per["layer"].iloc[0], "from_epoch": from_epoch})


def _compression_difference(runs, *, a: Mapping[str, Any], b: Mapping[str, Any], estimator: str,
                            layer: str = "last_hidden", from_epoch: int = 0, level: float = 0.95) -> Statistic:
    """Mean late compression of arm ``a`` minus that of arm ``b`` (Welch interval)."""
    from scipy import stats

    per = []
    for label, arm in (("a", a), ("b", b)):
        arm = dict(arm)
        df = _where(_run(runs, arm["run"]), arm.get("where"), arm["run"])
        p = late_compression_per_run(df, estimator=estimator, layer=layer, from_epoch=from_epoch)
        p.insert(0, "arm", label)
        per.append(p)
    va, vb = per[0]["value"].to_numpy(float), per[1]["value"].to_numpy(float)
    diff = float(va.mean() - vb.mean())
    n = min(va.size, vb.size)
    if va.size < 2 or vb.size < 2:
        return Statistic(diff, float("nan"), float("nan"), n, "Welch t (two arms over seeds)", _unit(per[0]),
                         pd.concat(per, ignore_index=True))
    sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
    se = float(np.sqrt(sa + sb))
    if se == 0:
        lo = hi = diff
    else:
        dof = (sa + sb) ** 2 / (sa ** 2 / (va.size - 1) + sb ** 2 / (vb.size - 1))
        half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
        lo, hi = diff - half, diff + half
    return Statistic(diff, lo, hi, n, "Welch t (two arms over seeds)", _unit(per[0]),
                     pd.concat(per, ignore_index=True), {"mean_a": float(va.mean()), "mean_b": float(vb.mean())})


def _compression_gap_spearman(runs, *, run: str | list[str], estimator: str, layer: str = "last_hidden",
                              gap: str = "acc", from_epoch: int = 0, level: float = 0.95,
                              n_resamples: int = 2000) -> Statistic:
    """Spearman rho between a layer's late compression and the generalization gap, over all runs.

    gap 'acc' = train - test accuracy, 'loss' = test - train loss, at the
    last epoch. Interval: percentile bootstrap over runs (grid points x seeds).
    """
    from scipy import stats

    names = [run] if isinstance(run, str) else list(run)
    per = []
    for name in names:
        p = late_compression_per_run(_run(runs, name), estimator=estimator, layer=layer, from_epoch=from_epoch)
        p.insert(0, "run", name)
        per.append(p)
    table = pd.concat(per, ignore_index=True)
    if gap == "acc":
        table["gap"] = table["train_acc"] - table["test_acc"]
    elif gap == "loss":
        table["gap"] = table["test_loss"] - table["train_loss"]
    else:
        raise ValueError(f"'gap' must be 'acc' or 'loss', got {gap!r}.")

    def rho(rows: pd.DataFrame) -> float:
        if rows["value"].nunique() < 2 or rows["gap"].nunique() < 2:
            return float("nan")
        return float(stats.spearmanr(rows["value"], rows["gap"]).statistic)

    est, lo, hi, n = bootstrap_interval(rho, table[["value", "gap"]], level=level, n_resamples=n_resamples)
    return Statistic(est, lo, hi, n, f"percentile bootstrap over {n} runs ({n_resamples} resamples)", "rho",
                     table)


def _per_seed_quantity(df: pd.DataFrame, quantity: str, where: Mapping[str, Any] | None, run: str) -> pd.Series:
    sub = _where(df[df["quantity"] == quantity], where, run)
    if sub.empty:
        raise ValueError(f"No rows of quantity {quantity!r} in run {run!r}.")
    if "epoch" in sub.columns:  # the last tracked value of each seed
        sub = sub.sort_values("epoch").groupby("seed").tail(1)
    return sub.groupby("seed")["value"].mean()


def _quantity_difference(runs, *, run: str, quantity: str, a: Mapping[str, Any], b: Mapping[str, Any],
                         level: float = 0.95) -> Statistic:
    """Paired by seed: quantity under ``a`` minus under ``b`` (Student t over seeds)."""
    df = _run(runs, run)
    qa, qb = _per_seed_quantity(df, quantity, a, run), _per_seed_quantity(df, quantity, b, run)
    both = pd.concat({"a": qa, "b": qb}, axis=1).dropna()
    both["value"] = both["a"] - both["b"]
    m, lo, hi, n = t_interval(both["value"], level)
    unit = str(df.loc[df["quantity"] == quantity, "unit"].iloc[0]) if "unit" in df.columns else ""
    return Statistic(m, lo, hi, n, "Student t over seeds (paired)", unit, both.reset_index())


def _quantity_mean(runs, *, run: str, quantity: str, where: Mapping[str, Any] | None = None,
                   level: float = 0.95) -> Statistic:
    df = _run(runs, run)
    q = _per_seed_quantity(df, quantity, where, run)
    m, lo, hi, n = t_interval(q.to_numpy(), level)
    unit = str(df.loc[df["quantity"] == quantity, "unit"].iloc[0]) if "unit" in df.columns else ""
    return Statistic(m, lo, hi, n, "Student t over seeds", unit, q.rename("value").reset_index())


STATISTICS: dict[str, Callable[..., Statistic]] = {
    "late_compression": _late_compression,
    "compression_difference": _compression_difference,
    "compression_gap_spearman": _compression_gap_spearman,
    "quantity_difference": _quantity_difference,
    "quantity_mean": _quantity_mean,
}


def compute_statistic(name: str, runs: Mapping[str, pd.DataFrame], params: Mapping[str, Any],
                      level: float) -> Statistic:
    """Run the statistic ``name`` (see :data:`STATISTICS`) with ``params`` at ``level``."""
    if name not in STATISTICS:
        raise ValueError(f"Unknown statistic {name!r}. Known: {', '.join(sorted(STATISTICS))}.")
    try:
        return STATISTICS[name](runs, level=level, **dict(params))
    except TypeError as e:
        raise ValueError(f"Statistic {name!r}: bad parameters {dict(params)} ({e}).") from None


# --- estimator accuracy against ground truth; information-plane phases (Butakov et al. 2024 claims) ---
def _mean_abs_error(runs, *, run: str, estimate: str = "estimate", truth: str = "true_mi",
                    where: Mapping[str, Any] | None = None, signed: bool = False, level: float = 0.95) -> Statistic:
    """Per seed: mean over the rows (e.g. the cells of an estimator grid) of |estimate - truth|.

    ``signed=True`` averages estimate - truth instead (the bias; negative =
    underestimation). Rows are picked with ``where``; every seed must hold
    the same cells (a seed with missing cells would be averaged over a
    different grid). Interval: Student t over seeds (the seeds are
    independent samples of the whole grid).
    """
    df = _where(_run(runs, run), where, run)
    for col in (estimate, truth):
        if col not in df.columns:
            raise ValueError(f"Run {run!r} has no column {col!r} (columns: {sorted(df.columns)}).")
    err = pd.to_numeric(df[estimate], errors="coerce") - pd.to_numeric(df[truth], errors="coerce")
    if not np.all(np.isfinite(err)):
        raise ValueError(f"Run {run!r} has non-finite {estimate!r} or {truth!r} values.")
    df = df.assign(_err=err if signed else err.abs())
    counts = df.groupby("seed")["_err"].size()
    if counts.nunique() != 1:
        raise ValueError(f"The seeds of run {run!r} hold different numbers of cells ({counts.to_dict()}).")
    per = df.groupby("seed")["_err"].agg(value="mean", cells="size", max_error="max").reset_index()
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over seeds", _unit(df), per,
                     {"cells": int(counts.iloc[0]), "signed": bool(signed)})


def rise_per_run(df: pd.DataFrame, *, estimator: str, layer: str, column: str = "i_ty", to: str = "last",
                 group: list[str] | None = None) -> pd.DataFrame:
    """Per run: a layer's ``column`` (default I(T;Y)) at the last snapshot (``to='last'``) or at its
    maximum over snapshots (``to='peak'``) minus its value at the first snapshot (the initialization).

    The quantity of the fitting phase of Shwartz-Ziv & Tishby: positive when
    the layer gained information (about the labels) during training. 'last'
    is signed (negative when the layer lost information); 'peak' is >= 0 by
    construction and biased upwards by estimator noise (a maximum).
    """
    if to not in ("last", "peak"):
        raise ValueError(f"'to' must be 'last' or 'peak', got {to!r}.")
    sub = df[df["estimator"] == estimator]
    if sub.empty:
        raise ValueError(f"No rows of estimator {estimator!r} (estimators: {sorted(df['estimator'].unique())}).")
    if column not in sub.columns:
        raise ValueError(f"The results have no column {column!r}.")
    name = _layer(sub, layer)
    sub = sub[sub["layer"] == name].sort_values("epoch")
    keys = list(group or _replicates(df))
    rows = []
    for key, g in sub.groupby(keys, sort=True):
        first = g.iloc[0]
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update({"layer": name, "first_epoch": int(first["epoch"]), "first": float(first[column]),
                    "peak": float(g[column].max()), "peak_epoch": int(g.loc[g[column].idxmax(), "epoch"])})
        row.update({"last_epoch": int(g["epoch"].iloc[-1]), "last": float(g[column].iloc[-1])})
        row["value"] = row[to] - row["first"]
        rows.append(row)
    return pd.DataFrame(rows)


def _rise_from_init(runs, *, run: str, estimator: str, layer: str = "last_hidden", column: str = "i_ty",
                  to: str = "last", where: Mapping[str, Any] | None = None, level: float = 0.95) -> Statistic:
    """Mean over seeds of :func:`rise_per_run` (Student t)."""
    df = _where(_run(runs, run), where, run)
    per = rise_per_run(df, estimator=estimator, layer=layer, column=column, to=to)
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over seeds", _unit(df), per,
                     {"layer": per["layer"].iloc[0], "column": column, "to": to})


STATISTICS.update({
    "mean_abs_error": _mean_abs_error,
    "rise_from_init": _rise_from_init,
})
