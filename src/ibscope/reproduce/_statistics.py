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


# --- information in the weights (rank correlation of two per-run quantities) ---
_ORDER_COLUMNS = ("step", "iteration", "epoch")


def quantity_per_replicate(df: pd.DataFrame, quantity: str, *, layer: str | None = None,
                           method: str | None = None) -> pd.Series:
    """One value of ``quantity`` per replicate (task_id and seed, or seed) of a tidy table.

    Rows are narrowed by ``layer`` and ``method`` where given; a replicate
    left with several rows keeps its last one by step / iteration / epoch
    (the final value) and is an error when the table has no such column.
    """
    sub = df[df["quantity"] == quantity]
    for col, val in (("layer", layer), ("method", method)):
        if val is not None:
            if col not in sub.columns:
                raise ValueError(f"'{col}' = {val!r} is given, but the table has no column {col!r}.")
            sub = sub[sub[col].astype(str) == str(val)]
    if sub.empty:
        raise ValueError(f"No rows of quantity {quantity!r} (layer {layer!r}, method {method!r}); quantities: "
                         f"{sorted(df['quantity'].unique()) if 'quantity' in df.columns else []}.")
    keys = _replicates(df)
    order = next((c for c in _ORDER_COLUMNS if c in sub.columns), None)
    if order is not None:
        sub = sub.sort_values(order, kind="stable")
    elif sub.groupby(keys).size().max() > 1:
        raise ValueError(f"Quantity {quantity!r} has several rows per replicate; narrow it with 'layer' or "
                         f"'method'.")
    return sub.groupby(keys)["value"].last()


def _quantity_rank_correlation(runs, *, run: str | list[str], x: str, y: str, x_layer: str | None = None,
                               y_layer: str | None = None, method: str | None = None,
                               where: Mapping[str, Any] | None = None, require: str | None = None,
                               level: float = 0.95, n_resamples: int = 2000) -> Statistic:
    """Spearman rho between two quantities over replicates (grid points x seeds) of one or more runs.

    ``require`` names a 0/1 quantity (e.g. a convergence flag): replicates
    where it is 0 or missing are left out (their number is in the details).
    Interval: percentile bootstrap over replicates.
    """
    from scipy.stats import rankdata

    names = [run] if isinstance(run, str) else list(run)
    parts = []
    for name in names:
        df = _where(_run(runs, name), where, name)
        both = pd.concat({"x": quantity_per_replicate(df, x, layer=x_layer, method=method),
                          "y": quantity_per_replicate(df, y, layer=y_layer, method=method)}, axis=1)
        if require is not None:
            ok = quantity_per_replicate(df, require, method=method).reindex(both.index)
            both["required"] = ok.fillna(0.0).astype(float) != 0.0
        else:
            both["required"] = True
        both = both.reset_index()
        both.insert(0, "run", name)
        parts.append(both)
    table = pd.concat(parts, ignore_index=True)
    dropped = int((~table["required"]).sum())
    kept = table[table["required"] & table[["x", "y"]].notna().all(axis=1)].reset_index(drop=True)

    def rho(rows: np.ndarray) -> float:
        a, b = rows[:, 0], rows[:, 1]
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan")
        return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])  # Spearman: Pearson of mid-ranks

    est, lo, hi, n = bootstrap_interval(rho, kept[["x", "y"]].to_numpy(float), level=level, n_resamples=n_resamples)
    table["value"] = table["x"]
    return Statistic(est, lo, hi, n, f"percentile bootstrap over {n} replicates ({n_resamples} resamples)", "rho",
                     table, {"x": x, "y": y, "left_out": dropped, "require": require})


STATISTICS["quantity_rank_correlation"] = _quantity_rank_correlation  # appended at the end of STATISTICS
