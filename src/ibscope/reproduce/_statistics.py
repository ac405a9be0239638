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

__all__ = ["Statistic", "STATISTICS", "compute_statistic", "late_compression_per_run", "worst_group_interval"]


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


def layer_trajectories(df: pd.DataFrame, *, estimator: str, layer: str, group: list[str] | None = None):
    """One estimator's rows of one layer (``last_hidden`` allowed), by epoch, split per run.

    Yields ``(layer name, row keys, trajectory)``: the keys are a dict of the
    ``group`` columns (default: the replicate columns) of one run, the
    trajectory its rows sorted by epoch.
    """
    sub = df[df["estimator"] == estimator]
    if sub.empty:
        raise ValueError(f"No rows of estimator {estimator!r} (estimators: {sorted(df['estimator'].unique())}).")
    name = _layer(sub, layer)
    sub = sub[sub["layer"] == name].sort_values("epoch")
    keys = list(group or _replicates(df))
    for key, g in sub.groupby(keys, sort=True):
        yield name, dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), g


def late_compression_per_run(df: pd.DataFrame, *, estimator: str, layer: str, from_epoch: int = 0,
                             group: list[str] | None = None) -> pd.DataFrame:
    """Per run: max over epochs >= ``from_epoch`` of I(X;T), minus I(X;T) at the last epoch.

    The quantity of Shwartz-Ziv & Tishby's compression phase: positive when
    the layer's I(X;T) fell after its peak (late in training), 0 when it
    never fell. Also returns the final train/test accuracy and loss where the
    table has them.
    """
    rows = []
    for name, row, g in layer_trajectories(df, estimator=estimator, layer=layer, group=group):
        late = g[g["epoch"] >= from_epoch]
        if late.empty:
            raise ValueError(f"No snapshot at or after epoch {from_epoch} (last epoch {int(g['epoch'].max())}).")
        last = g.iloc[-1]
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
    """One value of ``quantity`` per seed (the last tracked one); several rows of one seed are an error."""
    sub = _where(df[df["quantity"] == quantity], where, run)
    if sub.empty:
        raise ValueError(f"No rows of quantity {quantity!r} in run {run!r}.")
    if "epoch" in sub.columns:  # the last tracked value of each seed
        sub = sub.sort_values("epoch").groupby("seed").tail(1)
    if sub.duplicated("seed").any():
        raise ValueError(f"Run {run!r} has several rows per seed of {quantity!r} with {dict(where or {})}: "
                         "narrow its 'where' (e.g. to one grid point or method).")
    return sub.set_index("seed")["value"].astype(float)


def _arm(arm: Any, run: Any, label: str) -> tuple[str, Mapping[str, Any] | None]:
    """(run, where) of an arm: a ``where`` mapping of ``run``, or ``{run: ..., where: ...}`` naming its own run."""
    if arm is not None and not isinstance(arm, Mapping):
        raise ValueError(f"Arm {label!r} must be a mapping (a 'where', or 'run' and 'where'); got {arm!r}.")
    if arm and set(arm) <= {"run", "where"}:
        run, arm = arm.get("run", run), arm.get("where")
    if run is None:
        raise ValueError(f"Arm {label!r} names no run: give 'run' in the arm or as a parameter.")
    return run, arm


def _quantity_difference(runs, *, quantity: str, a: Mapping[str, Any], b: Mapping[str, Any],
                         run: str | None = None, level: float = 0.95) -> Statistic:
    """Paired by seed: quantity under ``a`` minus under ``b`` (Student t over seeds).

    An arm is a ``where`` mapping of the run ``run`` (e.g. ``{method: pib}``),
    or ``{run: name, where: {...}}`` naming its own run, so the arms may come
    from two runs of the claim (paired by seed: the same seed means the same
    initialization and data order in both).
    """
    vals, unit = {}, ""
    for label, arm in (("a", a), ("b", b)):
        name, where = _arm(arm, run, label)
        df = _run(runs, name)
        vals[label] = _per_seed_quantity(df, quantity, where, name)
        if not unit and "unit" in df.columns:
            unit = str(df.loc[df["quantity"] == quantity, "unit"].iloc[0])
    both = pd.concat(vals, axis=1).dropna()
    both["value"] = both["a"] - both["b"]
    m, lo, hi, n = t_interval(both["value"].to_numpy(float), level)
    return Statistic(m, lo, hi, n, "Student t over seeds (paired)", unit, both.reset_index())


def _quantity_mean(runs, *, run: str, quantity: str, where: Mapping[str, Any] | None = None,
                   level: float = 0.95) -> Statistic:
    df = _run(runs, run)
    q = _per_seed_quantity(df, quantity, where, run)
    m, lo, hi, n = t_interval(q.to_numpy(), level)
    unit = str(df.loc[df["quantity"] == quantity, "unit"].iloc[0]) if "unit" in df.columns else ""
    return Statistic(m, lo, hi, n, "Student t over seeds", unit, q.rename("value").reset_index())


# --- 12-bit: claims over a grid axis (activations, initialization scales) ---


def _compression_by(runs, *, run: str, estimator: str, by: str, layer: str, from_epoch: int,
                    where: Mapping[str, Any] | None) -> tuple[pd.DataFrame, str]:
    df = _where(_run(runs, run), where, run)
    if by not in df.columns:
        raise ValueError(f"'by' names column {by!r}, which run {run!r} does not have (columns: {sorted(df.columns)}).")
    per = late_compression_per_run(df, estimator=estimator, layer=layer, from_epoch=from_epoch,
                                   group=[by, *_replicates(df)])
    if per[by].nunique() < 2:
        raise ValueError(f"'by' = {by!r} has one value in run {run!r}; the statistic compares groups.")
    return per, _unit(df)


def _late_compression_every(runs, *, run: str, estimator: str, by: str, layer: str = "last_hidden",
                            from_epoch: int = 0, where: Mapping[str, Any] | None = None,
                            level: float = 0.95) -> Statistic:
    """The least late compression over the groups of ``by`` (e.g. every activation), simultaneous interval.

    Per group a Student-t interval over seeds at the Bonferroni level
    (:func:`worst_group_interval`, ``worst='min'``); the estimate is the
    smallest group mean and the interval [min of the lower ends, min of the
    upper ends], which holds the smallest group mean with probability >= ``level``. A
    rule "greater than E0" on it says: every group compresses by more than E0
    (reproduced), or some group compresses by less (not reproduced).
    """
    per, unit = _compression_by(runs, run=run, estimator=estimator, by=by, layer=layer, from_epoch=from_epoch,
                                where=where)
    est, lo, hi, n, groups = worst_group_interval(per, by=by, level=level, worst="min")
    least = groups.loc[groups["estimate"].idxmin()]
    details = {"layer": per["layer"].iloc[0], "by": by, "least": str(least[by]),
               "groups": {str(r[by]): {"mean": r["estimate"], "low": r["low"], "high": r["high"], "n": int(r["n"])}
                          for _, r in groups.iterrows()}}
    return Statistic(est, lo, hi, n,
                     f"smallest of {len(groups)} group means; Student t over seeds, Bonferroni-simultaneous", unit,
                     per, details)


def _late_compression_range(runs, *, run: str, estimator: str, by: str, layer: str = "last_hidden",
                            from_epoch: int = 0, where: Mapping[str, Any] | None = None,
                            level: float = 0.95) -> Statistic:
    """How much late compression varies over the groups of ``by``: max over pairs of |mean_i - mean_j|.

    Interval: Welch intervals of every pairwise difference at the Bonferroni
    level (k(k-1)/2 pairs), turned into intervals of |difference|; the range
    [max of their lower ends, max of their upper ends] holds the largest true
    pairwise difference with probability >= ``level``. A rule "greater than
    E0" says: some two groups (e.g. initialization scales) differ by more than E0.
    """
    from itertools import combinations

    from scipy import stats

    per, unit = _compression_by(runs, run=run, estimator=estimator, by=by, layer=layer, from_epoch=from_epoch,
                                where=where)
    groups = {g: v["value"].to_numpy(float) for g, v in per.groupby(by, sort=True)}
    pairs = list(combinations(sorted(groups), 2))
    adj = 1 - (1 - level) / len(pairs)
    rows = []
    for a, b in pairs:
        va, vb = groups[a], groups[b]
        d = float(va.mean() - vb.mean())
        if va.size < 2 or vb.size < 2:
            lo = hi = float("nan")
        else:
            sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
            se = float(np.sqrt(sa + sb))
            dof = (sa + sb) ** 2 / (sa ** 2 / (va.size - 1) + sb ** 2 / (vb.size - 1)) if se > 0 else 1.0
            half = float(stats.t.ppf(0.5 + adj / 2, dof)) * se
            lo, hi = d - half, d + half
        abs_lo = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        rows.append({"a": a, "b": b, "difference": d, "low": lo, "high": hi, "abs_low": abs_lo,
                     "abs_high": max(abs(lo), abs(hi))})
    table = pd.DataFrame(rows)
    best = table.loc[table["difference"].abs().idxmax()]
    bad = table[["low", "high"]].isna().any().any()
    lo, hi = (float("nan"), float("nan")) if bad else (float(table["abs_low"].max()), float(table["abs_high"].max()))
    details = {"layer": per["layer"].iloc[0], "by": by, "largest_pair": [str(best["a"]), str(best["b"])],
               "pairs": table.astype({"a": str, "b": str}).to_dict(orient="records")}
    return Statistic(float(abs(best["difference"])), lo, hi, min(v.size for v in groups.values()),
                     f"largest |difference| of {len(pairs)} pairs of group means; Welch t, Bonferroni-simultaneous",
                     unit, per, details)


# --- trajectories and cross-run pairs (infinite-ensemble NTK information, dual IB vs VIB) ---
def _arm_rows(runs: Mapping[str, pd.DataFrame], arm: Mapping[str, Any], quantity: str, default_run: Any,
              label: str) -> tuple[pd.DataFrame, str]:
    if not isinstance(arm, Mapping):
        raise ValueError(f"Arm {label!r} must be a mapping with 'where' (and optionally 'run'); got {arm!r}.")
    unknown = set(arm) - {"run", "where"}
    if unknown:
        raise ValueError(f"Arm {label!r} has unknown keys {sorted(unknown)}; use 'run' and 'where'.")
    name = arm.get("run", default_run)
    if name is None:
        raise ValueError(f"Arm {label!r} names no run: give 'run' in the arm or as a parameter.")
    df = _run(runs, name)
    sub = _where(df[df["quantity"] == quantity], arm.get("where"), name)
    if sub.empty:
        raise ValueError(f"No rows of quantity {quantity!r} in run {name!r}.")
    return sub, str(name)


def _unit_of(rows: pd.DataFrame) -> str:
    return str(rows["unit"].iloc[0]) if "unit" in rows.columns and len(rows) else ""


def excursion_per_seed(rows: pd.DataFrame, *, along: str = "t", extreme: str = "min") -> pd.DataFrame:
    """Per seed: how far a trajectory's last value lies from its extreme over ``along``.

    ``extreme='min'``: the last value minus the minimum (the rise after the
    best point, e.g. a test loss that overfits in training time);
    ``extreme='max'``: the maximum minus the last value (the fall after the
    peak, e.g. compression of I(X;Z)). Both are >= 0 and 0 for a trajectory
    that ends at its extreme. ``rows`` must hold one value per seed and
    ``along`` point (select them with ``where`` first).
    """
    if extreme not in ("min", "max"):
        raise ValueError(f"'extreme' must be 'min' or 'max'; got {extreme!r}.")
    if along not in rows.columns:
        raise ValueError(f"'along' names column {along!r}, which the rows do not have (columns: {sorted(rows.columns)}).")
    if rows.duplicated(["seed", along]).any():
        raise ValueError(f"More than one value per seed and {along!r}: narrow the selection with 'where' "
                         f"(e.g. dataset, split, source).")
    out = []
    for seed, g in rows.sort_values(along).groupby("seed", sort=True):
        v = g["value"].to_numpy(float)
        if not np.isfinite(v).all():
            raise ValueError(f"Seed {seed}: the trajectory has non-finite values.")
        last, ext = float(v[-1]), float(v.min() if extreme == "min" else v.max())
        where_ext = g[along].to_numpy()[int(np.argmin(v) if extreme == "min" else np.argmax(v))]
        out.append({"seed": seed, "last": last, extreme: ext, f"{along}_at_{extreme}": float(where_ext),
                    "value": last - ext if extreme == "min" else ext - last})
    return pd.DataFrame(out)


def _trajectory_excursion(runs, *, quantity: str, a: Mapping[str, Any], b: Mapping[str, Any] | None = None,
                          run: str | None = None, along: str = "t", extreme: str = "min",
                          level: float = 0.95) -> Statistic:
    """The excursion of a trajectory from its extreme (see :func:`excursion_per_seed`); with ``b``, a minus b
    paired by seed. Student t over seeds."""
    rows_a, _ = _arm_rows(runs, a, quantity, run, "a")
    per = excursion_per_seed(rows_a, along=along, extreme=extreme).set_index("seed")
    if b is not None:
        rows_b, _ = _arm_rows(runs, b, quantity, run, "b")
        per_b = excursion_per_seed(rows_b, along=along, extreme=extreme).set_index("seed")
        both = pd.concat({"a": per["value"], "b": per_b["value"]}, axis=1).dropna()
        both["value"] = both["a"] - both["b"]
        per, kind = both, "Student t over seeds (paired)"
    else:
        kind = "Student t over seeds"
    m, lo, hi, n = t_interval(per["value"].to_numpy(float), level)
    return Statistic(m, lo, hi, n, kind, _unit_of(rows_a), per.reset_index(), {"along": along, "extreme": extreme})


# --- grouped paired differences (CS-IB regression, Yu et al. 2024) ---
def worst_group_interval(per: pd.DataFrame, *, by: str, level: float = 0.95, worst: str = "max",
                         value: str = "value") -> tuple[float, float, float, int, pd.DataFrame]:
    """Simultaneous interval for the worst group's mean: max (or min) over groups of the group means.

    ``per`` holds one row per (group, replicate): the group in column ``by``,
    the replicate's value in ``value``. Each of the G groups gets a Student-t
    interval of its mean at the Bonferroni level 1 - (1 - level) / G, so all G
    intervals hold together with probability >= ``level``. On that event
    max_g mu_g lies in [max_g lo_g, max_g hi_g] (and min_g mu_g in
    [min_g lo_g, min_g hi_g]), which is the interval returned with the
    estimate max_g (min_g) of the group means. A claim "the difference is
    < t in every group" is then ``worst: max`` with rule ``less``; "> t in
    every group" is ``worst: min`` with rule ``greater``. A group with fewer
    than two finite replicates makes the bounds NaN (an inconclusive verdict).

    Returns
    -------
    (estimate, low, high, n, groups) : n is the smallest group's replicate
    count; ``groups`` has one row per group: ``by``, estimate, low, high, n,
    level (the per-group Bonferroni level), sorted by group.
    """
    if worst not in ("max", "min"):
        raise ValueError(f"'worst' must be 'max' or 'min', got {worst!r}.")
    for col in (by, value):
        if col not in per.columns:
            raise ValueError(f"The per-replicate table has no column {col!r} (columns: {sorted(per.columns)}).")
    if per.empty:
        raise ValueError("The per-replicate table is empty: no group to take the worst of.")
    keys = sorted(per[by].unique(), key=str)
    g_level = 1.0 - (1.0 - float(level)) / len(keys)
    rows = []
    for key in keys:
        m, lo, hi, n = t_interval(per.loc[per[by] == key, value].to_numpy(dtype=float), g_level)
        rows.append({by: key, "estimate": m, "low": lo, "high": hi, "n": n, "level": g_level})
    groups = pd.DataFrame(rows)
    pick = np.max if worst == "max" else np.min
    est, lo, hi = (float(pick(groups[c].to_numpy(dtype=float))) for c in ("estimate", "low", "high"))
    if not np.isfinite(groups[["low", "high"]].to_numpy(dtype=float)).all():
        lo = hi = float("nan")
    return est, lo, hi, int(groups["n"].min()), groups


def _quantity_difference_every(runs, *, run: str, quantity: str, a: Mapping[str, Any], b: Mapping[str, Any],
                               by: str, worst: str = "max", groups: list[Any] | None = None,
                               level: float = 0.95) -> Statistic:
    """Paired by seed within each group of column ``by``: quantity under ``a`` minus under ``b``, worst group.

    The groups are the values of ``by`` among the run's rows of ``quantity``
    (or ``groups``); every group needs both arms. The estimate and interval
    are :func:`worst_group_interval`'s (Bonferroni over groups). The
    per-replicate table has one row per (group, seed) with the group's own
    estimate and interval (``group_*`` columns); ``details['groups']`` holds
    the per-group summary.
    """
    df = _run(runs, run)
    if by not in df.columns:
        raise ValueError(f"'by' names column {by!r}, which run {run!r} does not have (columns: {sorted(df.columns)}).")
    sub = df[df["quantity"] == quantity]
    if sub.empty:
        raise ValueError(f"No rows of quantity {quantity!r} in run {run!r}.")
    keys = list(groups) if groups is not None else sorted(sub[by].unique(), key=str)
    if not keys:
        raise ValueError("'groups' is empty.")
    per = []
    for key in keys:
        qa = _per_seed_quantity(df, quantity, {**dict(a), by: key}, run)
        qb = _per_seed_quantity(df, quantity, {**dict(b), by: key}, run)
        both = pd.concat({"a": qa, "b": qb}, axis=1).dropna()
        both["value"] = both["a"] - both["b"]
        both = both.reset_index()
        both.insert(0, by, key)
        per.append(both)
    table = pd.concat(per, ignore_index=True)
    est, lo, hi, n, summary = worst_group_interval(table, by=by, level=level, worst=worst)
    table = table.merge(summary.drop(columns="level").rename(columns={c: f"group_{c}" for c in
                                                                      ("estimate", "low", "high", "n")}), on=by)
    unit = str(sub["unit"].iloc[0]) if "unit" in sub.columns else ""
    pick = summary["estimate"].idxmax() if worst == "max" else summary["estimate"].idxmin()
    details = {"by": by, "worst": worst, "group_level": float(summary["level"].iloc[0]),
               "worst_group": str(summary.loc[pick, by]),
               "groups": {str(r[by]): {"estimate": float(r["estimate"]), "low": float(r["low"]),
                                       "high": float(r["high"]), "n": int(r["n"])}
                          for _, r in summary.iterrows()}}
    return Statistic(est, lo, hi, n, f"{worst} over {len(keys)} groups of paired Student t over seeds "
                     f"(Bonferroni: each group at {summary['level'].iloc[0]:.4g})", unit, table, details)


# --- per-run quantities: correlations over runs, the shape of a tracked curve (Wang et al. 2022 claims) ---
def _curve(df: pd.DataFrame, quantity: str, x: str, run: str) -> pd.Series:
    """A run's tracked ``quantity`` indexed by ``x``; rows repeated at one x must agree (else: narrow ``where``)."""
    sub = df[df["quantity"] == quantity]
    if sub.empty:
        known = sorted(df["quantity"].unique()) if "quantity" in df.columns else []
        raise ValueError(f"No rows of quantity {quantity!r} in run {run!r} (quantities: {known}).")
    if x not in sub.columns:
        raise ValueError(f"Run {run!r} has no column {x!r} to order quantity {quantity!r} by.")
    spread = sub.groupby(x)["value"].agg(lambda v: float(np.nanmax(v) - np.nanmin(v)) if len(v) > 1 else 0.0)
    scale = sub.groupby(x)["value"].agg(lambda v: float(np.nanmax(np.abs(v))) if len(v) else 0.0)
    if (spread > 1e-9 * np.maximum(scale, 1.0)).any():
        raise ValueError(f"Run {run!r}: several different values of {quantity!r} at one {x} (layers or methods?); "
                         "pick one with 'where' (e.g. {layer: total}).")
    return sub.groupby(x)["value"].first().sort_index()


def _run_tables(runs: Mapping[str, pd.DataFrame], run: str | list[str],
                where: Mapping[str, Any] | None) -> list[tuple[str, pd.DataFrame]]:
    names = [run] if isinstance(run, str) else list(run)
    if not names:
        raise ValueError("'run' must name at least one run.")
    return [(name, _where(_run(runs, name), where, name)) for name in names]


def _order_column(df: pd.DataFrame) -> str:
    for c in ("iteration", "step", "epoch"):
        if c in df.columns:
            return c
    raise ValueError("The results have no 'iteration', 'step' or 'epoch' column to find each run's last value.")


def quantities_per_run(runs: Mapping[str, pd.DataFrame], *, run: str | list[str], quantities: list[str],
                       where: Mapping[str, Any] | None = None, layers: Mapping[str, str | None] | None = None,
                       optional: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per run (a run of a sweep = one grid point and seed), one column per quantity: its last value.

    "Last" is at the largest ``iteration`` (else ``step``, else ``epoch``) of
    that quantity's rows in the run after ``where``; rows repeated there must
    agree (a tracked and a final row of the same value), otherwise a
    ValueError asks for a narrower ``where`` (e.g. ``{layer: total}``).
    Columns: ``run``, the replicate keys (``task_id``, ``seed``), the grid
    settings that vary, and the quantities. ``layers`` maps a quantity to the
    one layer whose rows it reads (e.g. ``{info_weights: total}``); a quantity
    in ``optional`` that a run lacks is NaN there instead of an error.
    """
    out = []
    for name, df in _run_tables(runs, run, where):
        keys, xcol = _replicates(df), _order_column(df)
        rows = []
        for key, g in df.groupby(keys, sort=True):
            row = {"run": name, **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))}
            for q in quantities:
                sub = g
                layer = (layers or {}).get(q)
                if layer is not None:
                    if "layer" not in g.columns:
                        raise ValueError(f"A layer is given for {q!r}, but run {name!r} has no 'layer' column.")
                    sub = g[g["layer"].astype(str) == str(layer)]
                if q in optional and not (sub["quantity"] == q).any():
                    row[q] = float("nan")
                    continue
                c = _curve(sub, q, xcol, name)
                row[q] = float(c.iloc[-1])
            rows.append(row)
        out.append(pd.DataFrame(rows))
    return pd.concat(out, ignore_index=True)


def _quantity_spearman(runs, *, run: str | list[str], x: str, y: str | Mapping[str, str],
                       where: Mapping[str, Any] | None = None, also: list[str] | None = None,
                       x_layer: str | None = None, y_layer: str | None = None, require: str | None = None,
                       level: float = 0.95, n_resamples: int = 2000) -> Statistic:
    """Spearman rho between two per-run quantities over all runs (grid points x seeds) of ``run``.

    ``x``: a quantity; ``y``: a quantity, or ``{a: q1, b: q2}`` for the
    difference q1 - q2 (e.g. ``{a: train_acc, b: test_acc}``: the
    generalization gap). Each run's value of a quantity is its last one
    (:func:`quantities_per_run`). ``also``: further quantities copied into the
    per-replicate table (e.g. ``train_acc``, to check every grid point
    trained). ``x_layer`` / ``y_layer``: the layer whose rows ``x`` / ``y``
    read (e.g. ``total``). ``require``: a 0/1 quantity (e.g. a convergence
    flag); runs where it is 0 or missing are left out (their number is in the
    details, and they stay in the per-replicate table with ``required``
    False). Interval: percentile bootstrap over runs; unit 'rho'.
    """
    from scipy import stats

    if not isinstance(x, str):
        raise ValueError(f"'x' must be a quantity name, got {x!r}.")
    if isinstance(y, str):
        ys, label = [y], y
    elif isinstance(y, Mapping) and set(y) == {"a", "b"} and all(isinstance(v, str) for v in y.values()):
        ys, label = [y["a"], y["b"]], f"{y['a']} - {y['b']}"
    else:
        raise ValueError(f"'y' must be a quantity name or {{a: quantity, b: quantity}}, got {y!r}.")
    extra = [q for q in (also or []) if q not in (x, *ys)]
    if require is not None and require not in (x, *ys, *extra):
        extra.append(require)
    layers = {x: x_layer, **{q: y_layer for q in ys}}
    table = quantities_per_run(runs, run=run, quantities=list(dict.fromkeys([x, *ys, *extra])), where=where,
                               layers=layers, optional=[require] if require is not None else [])
    table["x"] = table[x]
    table["value"] = table[ys[0]] if len(ys) == 1 else table[ys[0]] - table[ys[1]]
    table["required"] = True if require is None else table[require].fillna(0.0).astype(float) != 0.0
    kept = table[table["required"] & table[["x", "value"]].notna().all(axis=1)]

    def rho(rows: np.ndarray) -> float:  # rows: (runs, 2) array of (x, y)
        if np.unique(rows[:, 0]).size < 2 or np.unique(rows[:, 1]).size < 2:
            return float("nan")
        # Spearman's rho = Pearson's r of the (average-tie) ranks; cheaper than spearmanr per resample
        return float(np.corrcoef(stats.rankdata(rows[:, 0]), stats.rankdata(rows[:, 1]))[0, 1])

    data = kept[["x", "value"]].to_numpy(dtype=np.float64)
    est, lo, hi, n = bootstrap_interval(rho, data, level=level, n_resamples=n_resamples)
    return Statistic(est, lo, hi, n, f"percentile bootstrap over {n} runs ({n_resamples} resamples)", "rho",
                     table, {"x": x, "y": label, "require": require, "left_out": int(len(table) - len(kept))})


def _interior_peak(runs, *, run: str | list[str], quantity: str, where: Mapping[str, Any] | None = None,
                   x: str | None = None, level: float = 0.95) -> Statistic:
    """Per run: how far a tracked curve's highest *interior* point rises above both its ends.

    value = (max over interior points - max(first, last)) / max |curve|, in
    [-1, 1]: positive if and only if the curve rises to a peak strictly
    inside the tracked span and falls again (fitting then compression, as in
    Wang et al. 2022's IIW curves), negative for a monotone curve or a dip.
    ``x`` orders the points (default: ``iteration``, else ``step``, else
    ``epoch``). Mean over runs, Student t interval; unit 'fraction'.
    """
    rows = []
    for name, df in _run_tables(runs, run, where):
        col = x or _order_column(df)
        keys = _replicates(df)
        for key, g in df.groupby(keys, sort=True):
            c = _curve(g, quantity, col, name)
            if len(c) < 3:
                raise ValueError(f"Run {name!r}: {quantity!r} is tracked at {len(c)} points; 'interior_peak' "
                                 "needs at least 3.")
            v = c.to_numpy(float)
            scale = float(np.max(np.abs(v)))
            inner = int(np.argmax(v[1:-1])) + 1
            value = (v[inner] - max(v[0], v[-1])) / scale if scale > 0 else 0.0
            rows.append({"run": name, **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                         "first": v[0], "peak": v[inner], "peak_at": float(c.index[inner]), "last": v[-1],
                         "value": float(value)})
    per = pd.DataFrame(rows)
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over runs", "fraction", per,
                     {"median_peak_at": float(per["peak_at"].median())})


__all__ += ["quantities_per_run"]

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
    if column not in df.columns:
        raise ValueError(f"The results have no column {column!r}.")
    rows = []
    for name, row, g in layer_trajectories(df, estimator=estimator, layer=layer, group=group):
        first = g.iloc[0]
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


# --- the registry: a claim names its statistic here (no code is ever read from a claim file) ---

STATISTICS: dict[str, Callable[..., Statistic]] = {
    "late_compression": _late_compression,
    "compression_difference": _compression_difference,
    "compression_gap_spearman": _compression_gap_spearman,
    "quantity_difference": _quantity_difference,
    "quantity_mean": _quantity_mean,
    "late_compression_every": _late_compression_every,
    "late_compression_range": _late_compression_range,
    "trajectory_excursion": _trajectory_excursion,
    "quantity_difference_every": _quantity_difference_every,
    "quantity_spearman": _quantity_spearman,
    "interior_peak": _interior_peak,
    "mean_abs_error": _mean_abs_error,
    "rise_from_init": _rise_from_init,
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


