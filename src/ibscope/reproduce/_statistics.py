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

from .._intervals import bonferroni_level, bootstrap_interval, t_interval, welch_interval

__all__ = ["Statistic", "STATISTICS", "LATE_COMPRESSION_STATISTICS", "COMPRESSION_METHODS", "compute_statistic",
           "late_compression_per_run", "compression_per_run", "signed_compression", "fitting_end_index",
           "worst_group_interval"]


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
    """Per run: max over epochs >= ``from_epoch`` of I(X;T), minus I(X;T) at the last epoch (biased; no claim uses it).

    Kept for the record: the statistic the catalogue first used for
    Shwartz-Ziv & Tishby's compression phase. It is >= 0 by construction, so
    estimator noise and one-off excursions of a few seeds read as
    compression (its false-positive rate on trajectories without compression
    is far above the nominal 5%; tests/test_statistics_null.py). The claims
    use the signed statistics of :func:`compression_per_run` instead. Also
    returns the final train/test accuracy and loss where the table has them.
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


# --- signed late-compression statistics: can be negative, ~0 on average when nothing compresses ---

COMPRESSION_METHODS = ("after_fitting", "late_window", "max_minus_final")


def fitting_end_index(i_ty_mean: Any, *, plateau: float = 0.9) -> int:
    """Where the fitting phase ends: the first snapshot at which the (seed-averaged) I(T;Y) has
    completed ``plateau`` of its rise.

    Rule: with ``m`` the seed-averaged I(T;Y) per snapshot and ``R = max(m) -
    m[0]`` its rise, the index of the first snapshot with ``m >= m[0] +
    plateau * R``; 0 when I(T;Y) does not rise (``R <= 0``: no fitting
    phase). The fitting phase is Shwartz-Ziv & Tishby's first phase, in which
    I(T;Y) grows; compression is a fall of I(X;T) *after* it [1]_.

    Parameters
    ----------
    i_ty_mean : array-like, shape (snapshots,)
        Finite values in snapshot order.
    plateau : float in (0, 1], default 0.9

    Returns
    -------
    int

    References
    ----------
    .. [1] R. Shwartz-Ziv and N. Tishby, "Opening the black box of deep neural
       networks via information", arXiv:1703.00810, 2017.
    """
    v = np.asarray(i_ty_mean, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"'i_ty_mean' must be a non-empty 1-D array, got shape {v.shape}.")
    if not np.isfinite(v).all():
        raise ValueError("'i_ty_mean' has non-finite values.")
    if isinstance(plateau, bool) or not isinstance(plateau, (int, float)) or not 0 < plateau <= 1:
        raise ValueError(f"'plateau' must be in (0, 1], got {plateau!r}.")
    rise = float(v.max() - v[0])
    if rise <= 0:
        return 0
    return int(np.argmax(v >= v[0] + plateau * rise - 1e-12 * max(1.0, abs(rise))))


def _window_size(n: int, window: Any) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, float)) or not np.isfinite(window):
        raise ValueError(f"'window' must be a fraction in (0, 1) or an int >= 1 of snapshots, got {window!r}.")
    if isinstance(window, int) and window >= 1:
        return int(window)
    if 0 < window < 1:
        return max(1, int(round(window * n)))
    raise ValueError(f"'window' must be a fraction in (0, 1) or an int >= 1 of snapshots, got {window!r}.")


def signed_compression(i_xt: Any, epochs: Any, *, method: str = "after_fitting", i_ty: Any = None,
                       window: float = 0.05, plateau: float = 0.9,
                       from_epoch: float | None = None) -> dict[str, Any]:
    """Per-replicate compression of I(X;T) trajectories on one snapshot grid.

    Parameters
    ----------
    i_xt : array-like, shape (replicates, snapshots)
        I(X;T) of one layer per replicate (seed), snapshots in epoch order.
    epochs : array-like, shape (snapshots,)
        Strictly increasing snapshot epochs.
    method : {'after_fitting', 'late_window', 'max_minus_final'}
        ``after_fitting`` (signed): per replicate, the mean of I(X;T) over the
        ``w`` snapshots from the end of the fitting phase
        (:func:`fitting_end_index` of the replicate-averaged ``i_ty``) minus
        its mean over the last ``w`` snapshots; the mean over replicates is
        the fall of the replicate-averaged trajectory between those windows.
        ``late_window`` (signed): the same difference with the first window
        starting at the first snapshot at or after ``from_epoch`` (default:
        half the last epoch). ``max_minus_final`` (biased, >= 0; kept for the
        record): max over snapshots at or after ``from_epoch`` (default 0)
        minus the last value.
    i_ty : array-like, shape (replicates, snapshots)
        I(T;Y) of the same layer; needed by ``after_fitting``.
    window : float in (0, 1) or int >= 1, default 0.05
        Window length: a fraction of the snapshots (rounded, at least 1) or
        a number of snapshots.
    plateau : float in (0, 1], default 0.9
        The fitting-phase rule's share of the I(T;Y) rise.
    from_epoch : float, optional
        Start of the early window (``late_window``) or of the maximum
        (``max_minus_final``); for ``after_fitting`` a lower bound on the
        start (the first window starts at the later of the fitting-phase end
        and the first snapshot at or after ``from_epoch``; used to give
        compared groups one common start).

    Returns
    -------
    dict
        ``values`` (replicates,), ``early`` and ``late`` (window means, or peak
        and final), ``start`` (index of the first window's start),
        ``start_epoch``, ``w`` and ``reason`` (why the values are NaN: the
        fitting phase ends inside the last window, so nothing comes after it).
        For ``late_window`` windows that overlap are a ValueError naming
        ``from_epoch``/``window``.
    """
    if method not in COMPRESSION_METHODS:
        raise ValueError(f"'method' must be one of {COMPRESSION_METHODS}, got {method!r}.")
    x = np.asarray(i_xt, dtype=np.float64)
    e = np.asarray(epochs, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[0] == 0:
        raise ValueError(f"'i_xt' must be a (replicates, snapshots) array, got shape {x.shape}.")
    if e.shape != (x.shape[1],) or (np.diff(e) <= 0).any():
        raise ValueError(f"'epochs' must be strictly increasing with one value per snapshot ({x.shape[1]}).")
    if not np.isfinite(x).all():
        raise ValueError("'i_xt' has non-finite values.")
    n = x.shape[1]
    out: dict[str, Any] = {"reason": ""}
    if method == "max_minus_final":
        start = int(np.searchsorted(e, 0.0 if from_epoch is None else float(from_epoch), side="left"))
        if start >= n:
            raise ValueError(f"No snapshot at or after epoch {from_epoch} (last epoch {e[-1]:g}).")
        early, late = x[:, start:].max(axis=1), x[:, -1]
        out.update(values=early - late, early=early, late=late, start=start, start_epoch=float(e[start]), w=1)
        return out
    w = _window_size(n, window)
    if method == "after_fitting":
        if i_ty is None:
            raise ValueError("method 'after_fitting' needs I(T;Y) ('i_ty') to find the end of the fitting phase.")
        y = np.asarray(i_ty, dtype=np.float64)
        if y.shape != x.shape or not np.isfinite(y).all():
            raise ValueError(f"'i_ty' must be finite with the shape of 'i_xt' {x.shape}, got {y.shape}.")
        start = fitting_end_index(y.mean(axis=0), plateau=plateau)
        if from_epoch is not None:
            start = max(start, int(np.searchsorted(e, float(from_epoch), side="left")))
    else:
        f = float(e[-1]) / 2 if from_epoch is None else float(from_epoch)
        start = int(np.searchsorted(e, f, side="left"))
        if start + w > n - w:
            raise ValueError(f"'from_epoch' {f:g} with 'window' {window!r} ({w} snapshot(s)) leaves no room for "
                             f"two separate windows in {n} snapshots (epochs {e[0]:g}..{e[-1]:g}).")
    out.update(start=start, start_epoch=float(e[min(start, n - 1)]), w=w)
    if start + w > n - w:
        nan = np.full(x.shape[0], np.nan)
        out.update(values=nan, early=nan, late=nan,
                   reason=(f"the fitting phase ends at epoch {e[start]:g}, inside the last window of {w} "
                           f"snapshot(s): there is no post-fitting phase to test"))
        return out
    early, late = x[:, start:start + w].mean(axis=1), x[:, n - w:].mean(axis=1)
    out.update(values=early - late, early=early, late=late)
    return out


def compression_per_run(df: pd.DataFrame, *, estimator: str, layer: str, method: str = "after_fitting",
                        window: float = 0.05, plateau: float = 0.9, from_epoch: float | None = None,
                        by: str | list[str] | None = None,
                        common_start: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per run (seed), the signed compression of a layer's I(X;T) (:func:`signed_compression`).

    The runs are split into groups by the columns ``by`` (e.g. a grid axis);
    within a group every run must hold the same snapshot epochs, and
    ``after_fitting`` finds one fitting-phase end from the group's
    seed-averaged I(T;Y). With ``common_start`` every group's first window
    starts at the latest of the groups' fitting-phase ends, so that groups
    are compared over the same epochs (a group whose fitting end, found from
    noisy I(T;Y), falls early while its I(X;T) still rises would otherwise
    differ from the others without any difference in compression). Returns the per-run table (the group and replicate
    keys, ``layer``, ``value``, ``early``, ``late``, ``start_epoch``, and the
    last train/test accuracy and loss where present) and details per group.
    """
    by_cols = [by] if isinstance(by, str) else list(by or [])
    sub = df[df["estimator"] == estimator]
    if sub.empty:
        raise ValueError(f"No rows of estimator {estimator!r} (estimators: {sorted(df['estimator'].unique())}).")
    name = _layer(sub, layer)
    sub = sub[sub["layer"] == name]
    reps = [c for c in _replicates(df) if c not in by_cols]
    need = ["i_xt"] + (["i_ty"] if method == "after_fitting" else [])
    for c in need + by_cols:
        if c not in sub.columns:
            raise ValueError(f"The results have no column {c!r} (columns: {sorted(sub.columns)}).")
    rows, details, prepared = [], {}, []
    groups = sub.groupby(by_cols, sort=True) if by_cols else [((), sub)]
    for gkey, g in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        if g.duplicated([*reps, "epoch"]).any():
            raise ValueError(f"Several rows per run and epoch of layer {name!r} (group {gkey}): narrow the rows "
                             "with 'where' or give the grid column in 'by'.")
        tables = {c: g.set_index([*reps, "epoch"])[c].astype(float).unstack("epoch").sort_index(axis=1)
                  for c in need}
        xt = tables["i_xt"]
        if xt.isna().any().any():
            bad = xt.index[xt.isna().any(axis=1)].tolist()
            raise ValueError(f"Runs {bad[:5]} lack snapshots the others have (group {gkey}); the seed average "
                             "needs one snapshot grid.")
        prepared.append((gkey, g, tables, xt))
    start = from_epoch
    if common_start and method == "after_fitting" and len(prepared) > 1:
        ends = [float(xt.columns[fitting_end_index(tables["i_ty"].to_numpy(float).mean(axis=0), plateau=plateau)])
                for _, _, tables, xt in prepared]
        start = max(ends) if from_epoch is None else max(max(ends), float(from_epoch))
    for gkey, g, tables, xt in prepared:
        res = signed_compression(xt.to_numpy(), xt.columns.to_numpy(dtype=float), method=method,
                                 i_ty=tables["i_ty"].to_numpy() if "i_ty" in tables else None, window=window,
                                 plateau=plateau, from_epoch=start)
        last = g.sort_values("epoch").groupby(reps, sort=True).tail(1).set_index(reps)
        label = ", ".join(f"{c}={k}" for c, k in zip(by_cols, gkey, strict=True)) or "all"
        details[label] = {"start_epoch": res["start_epoch"], "window": int(res["w"]),
                          "mean": float(np.mean(res["values"])), "reason": res["reason"]}
        for i, key in enumerate(xt.index):
            key = key if isinstance(key, tuple) else (key,)
            row = {**dict(zip(by_cols, gkey, strict=True)), **dict(zip(reps, key, strict=True)), "layer": name,
                   "method": method, "start_epoch": res["start_epoch"], "early": float(res["early"][i]),
                   "late": float(res["late"][i]), "value": float(res["values"][i])}
            lrow = last.loc[key if len(key) > 1 else key[0]]
            for c in ("train_acc", "test_acc", "train_loss", "test_loss"):
                if c in last.columns:
                    row[c] = float(lrow[c])
            rows.append(row)
    return pd.DataFrame(rows), details


_METHOD_TEXT = {"after_fitting": "I(X;T) over the window at the end of the fitting phase minus over the last window",
                "late_window": "I(X;T) over the window from 'from_epoch' minus over the last window",
                "max_minus_final": "max of I(X;T) minus its final value (biased, >= 0)"}


def _compression_table(runs, *, run: str, estimator: str, layer: str, method: str, window: float, plateau: float,
                       from_epoch: float | None, where: Mapping[str, Any] | None,
                       by: str | list[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any], str]:
    df = _where(_run(runs, run), where, run)
    per, groups = compression_per_run(df, estimator=estimator, layer=layer, method=method, window=window,
                                      plateau=plateau, from_epoch=from_epoch, by=by)
    return per, groups, _unit(df)


def _signed(runs, *, run: str, estimator: str, layer: str, method: str, window: float, plateau: float,
            from_epoch: float | None, where: Mapping[str, Any] | None, level: float) -> Statistic:
    per, groups, unit = _compression_table(runs, run=run, estimator=estimator, layer=layer, method=method,
                                           window=window, plateau=plateau, from_epoch=from_epoch, where=where)
    m, lo, hi, n = t_interval(per["value"], level)
    if n == 0:  # every value NaN: the fitting phase leaves no room (details say why)
        n = int(len(per))
    g = groups["all"]
    return Statistic(m, lo, hi, n, f"Student t over seeds of the per-seed {_METHOD_TEXT[method]}", unit, per,
                     {"layer": per["layer"].iloc[0], "method": method, "start_epoch": g["start_epoch"],
                      "window": g["window"], **({"reason": g["reason"]} if g["reason"] else {})})


def _compression_after_fitting(runs, *, run: str, estimator: str, layer: str = "last_hidden",
                               where: Mapping[str, Any] | None = None, window: float = 0.05, plateau: float = 0.9,
                               level: float = 0.95) -> Statistic:
    """The fall of the seed-averaged I(X;T) after the fitting phase (signed; Student t over seeds).

    Per seed: the mean of the layer's I(X;T) over the ``window`` snapshots
    from the end of the fitting phase (where the seed-averaged I(T;Y) has
    completed ``plateau`` of its rise, :func:`fitting_end_index`) minus its
    mean over the last ``window`` snapshots. The mean over seeds is the fall
    of the seed-averaged trajectory between the two windows; negative when
    I(X;T) still rises. Early dips before the fitting phase ends are not
    counted.
    """
    return _signed(runs, run=run, estimator=estimator, layer=layer, method="after_fitting", window=window,
                   plateau=plateau, from_epoch=None, where=where, level=level)


def _late_window_fall(runs, *, run: str, estimator: str, layer: str = "last_hidden",
                      where: Mapping[str, Any] | None = None, from_epoch: float | None = None,
                      window: float = 0.05, level: float = 0.95) -> Statistic:
    """Signed late-window difference: per seed, mean I(X;T) over the ``window`` snapshots from
    ``from_epoch`` (default half the last epoch) minus over the last ``window``; Student t over seeds."""
    return _signed(runs, run=run, estimator=estimator, layer=layer, method="late_window", window=window,
                   plateau=0.9, from_epoch=from_epoch, where=where, level=level)


def _late_compression(runs, *, run: str, estimator: str, layer: str = "last_hidden", from_epoch: int = 0,
                      where: Mapping[str, Any] | None = None, level: float = 0.95) -> Statistic:
    """The old per-seed max-minus-final (:func:`late_compression_per_run`); biased upwards, no claim uses it."""
    df = _where(_run(runs, run), where, run)
    per = late_compression_per_run(df, estimator=estimator, layer=layer, from_epoch=from_epoch)
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over seeds", _unit(df), per,
                     {"layer": per["layer"].iloc[0], "from_epoch": from_epoch})


def _compression_difference(runs, *, a: Mapping[str, Any], b: Mapping[str, Any], estimator: str,
                            layer: str = "last_hidden", method: str = "after_fitting", window: float = 0.05,
                            plateau: float = 0.9, from_epoch: float | None = None,
                            level: float = 0.95) -> Statistic:
    """Mean compression (``method``, :func:`signed_compression`) of arm ``a`` minus arm ``b`` (Welch interval).

    Both arms are measured from one common start: the later of the two
    arms' fitting-phase ends (each from its seed-averaged I(T;Y)), so that
    an arm whose fitting end falls early while its I(X;T) still rises does
    not differ from the other for that reason alone.
    """
    start = from_epoch
    for _ in range(2 if method == "after_fitting" else 1):
        per, arms = [], {}
        for label, arm in (("a", a), ("b", b)):
            arm = dict(arm)
            p, groups, unit = _compression_table(runs, run=arm["run"], estimator=estimator, layer=layer,
                                                 method=method, window=window, plateau=plateau, from_epoch=start,
                                                 where=arm.get("where"))
            p.insert(0, "arm", label)
            per.append(p)
            arms[label] = groups["all"]
        common = max(arms["a"]["start_epoch"], arms["b"]["start_epoch"])
        if start is not None and common <= start:
            break
        start = common
    va = per[0]["value"].to_numpy(float)
    vb = per[1]["value"].to_numpy(float)
    va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    diff = float(va.mean() - vb.mean()) if va.size and vb.size else float("nan")
    n = min(va.size, vb.size)
    kind = f"Welch t (two arms over seeds) of the per-seed {_METHOD_TEXT[method]}"
    details = {"method": method, "arms": arms}
    if va.size < 2 or vb.size < 2:
        return Statistic(diff, float("nan"), float("nan"), n, kind, unit, pd.concat(per, ignore_index=True), details)
    _, lo, hi, _ = welch_interval(va, vb, level)
    return Statistic(diff, lo, hi, n, kind, unit, pd.concat(per, ignore_index=True),
                     {**details, "mean_a": float(va.mean()), "mean_b": float(vb.mean())})


def _compression_gap_spearman(runs, *, run: str | list[str], estimator: str, layer: str = "last_hidden",
                              gap: str = "acc", method: str = "after_fitting", by: str | list[str] | None = None,
                              window: float = 0.05, plateau: float = 0.9, from_epoch: float | None = None,
                              level: float = 0.95, n_resamples: int = 2000) -> Statistic:
    """Spearman rho between a layer's compression (``method``) and the generalization gap, over all runs.

    gap 'acc' = train - test accuracy, 'loss' = test - train loss, at the
    last epoch. ``by``: the grid columns (e.g. ``weight_decay``) whose groups
    are measured from one common start, the latest of their fitting-phase
    ends (``common_start``). Interval: percentile bootstrap
    over runs (grid points x seeds).
    """
    from scipy import stats

    names = [run] if isinstance(run, str) else list(run)
    per = []
    for name in names:
        p, _ = compression_per_run(_run(runs, name), estimator=estimator, layer=layer, method=method, window=window,
                                   plateau=plateau, from_epoch=from_epoch, by=by, common_start=True)
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

    kept = table[["value", "gap"]].dropna()
    est, lo, hi, n = bootstrap_interval(rho, kept, level=level, n_resamples=n_resamples)
    return Statistic(est, lo, hi, n, f"percentile bootstrap over {n} runs ({n_resamples} resamples)", "rho",
                     table, {"method": method})


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


def _compression_by(runs, *, run: str, estimator: str, by: str, layer: str, where: Mapping[str, Any] | None,
                    method: str = "after_fitting", window: float = 0.05, plateau: float = 0.9,
                    from_epoch: float | None = None,
                    common_start: bool = False) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    df = _where(_run(runs, run), where, run)
    if by not in df.columns:
        raise ValueError(f"'by' names column {by!r}, which run {run!r} does not have (columns: {sorted(df.columns)}).")
    if df[by].nunique() < 2:
        raise ValueError(f"'by' = {by!r} has one value in run {run!r}; the statistic compares groups.")
    per, groups = compression_per_run(df, estimator=estimator, layer=layer, method=method, window=window,
                                      plateau=plateau, from_epoch=from_epoch, by=by, common_start=common_start)
    return per, _unit(df), groups


def _late_compression_every(runs, *, run: str, estimator: str, by: str, layer: str = "last_hidden",
                            where: Mapping[str, Any] | None = None, method: str = "after_fitting",
                            window: float = 0.05, plateau: float = 0.9, from_epoch: float | None = None,
                            level: float = 0.95) -> Statistic:
    """The least compression (``method``, signed by default) over the groups of ``by`` (e.g. every activation).

    Each group finds its own fitting-phase end (its seed-averaged I(T;Y)).
    Per group a Student-t interval over seeds at the Bonferroni level
    (:func:`worst_group_interval`, ``worst='min'``); the estimate is the
    smallest group mean and the interval [min of the lower ends, min of the
    upper ends], which holds the smallest group mean with probability >= ``level``. A
    rule "greater than E0" on it says: every group compresses by more than E0
    (reproduced), or some group compresses by less (not reproduced).
    """
    per, unit, fit = _compression_by(runs, run=run, estimator=estimator, by=by, layer=layer, where=where,
                                     method=method, window=window, plateau=plateau, from_epoch=from_epoch)
    est, lo, hi, n, groups = worst_group_interval(per, by=by, level=level, worst="min")
    least = groups.loc[groups["estimate"].idxmin()] if groups["estimate"].notna().any() else {by: None}
    details = {"layer": per["layer"].iloc[0], "by": by, "least": str(least[by]), "method": method, "fit": fit,
               "groups": {str(r[by]): {"mean": r["estimate"], "low": r["low"], "high": r["high"], "n": int(r["n"])}
                          for _, r in groups.iterrows()}}
    return Statistic(est, lo, hi, n,
                     f"smallest of {len(groups)} group means; Student t over seeds, Bonferroni-simultaneous", unit,
                     per, details)


def _late_compression_range(runs, *, run: str, estimator: str, by: str, layer: str = "last_hidden",
                            where: Mapping[str, Any] | None = None, method: str = "after_fitting",
                            window: float = 0.05, plateau: float = 0.9, from_epoch: float | None = None,
                            level: float = 0.95) -> Statistic:
    """How much compression (``method``, signed by default) varies over the groups of ``by``:
    max over pairs of |mean_i - mean_j|.

    The groups are compared from one common start, the latest of their
    fitting-phase ends (``common_start``, :func:`compression_per_run`). Interval: Welch intervals of
    every pairwise difference at the Bonferroni level (k(k-1)/2 pairs), turned
    into intervals of |difference|; the range [max of their lower ends, max
    of their upper ends] holds the largest true pairwise difference with
    probability >= ``level``. A rule "greater than E0" says: some two groups
    (e.g. initialization scales) differ by more than E0.
    """
    from itertools import combinations

    per, unit, fit = _compression_by(runs, run=run, estimator=estimator, by=by, layer=layer, where=where,
                                     method=method, window=window, plateau=plateau, from_epoch=from_epoch,
                                     common_start=True)
    per = per[np.isfinite(per["value"].to_numpy(float))]
    if per[by].nunique() < 2:
        return Statistic(float("nan"), float("nan"), float("nan"), 0, "no two groups with a post-fitting phase",
                         unit, per, {"by": by, "method": method, "fit": fit})
    groups = {g: v["value"].to_numpy(float) for g, v in per.groupby(by, sort=True)}
    pairs = list(combinations(sorted(groups), 2))
    adj = bonferroni_level(level, len(pairs))
    rows = []
    for a, b in pairs:
        d, lo, hi, _ = welch_interval(groups[a], groups[b], adj)
        abs_lo = 0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi))
        rows.append({"a": a, "b": b, "difference": d, "low": lo, "high": hi, "abs_low": abs_lo,
                     "abs_high": max(abs(lo), abs(hi))})
    table = pd.DataFrame(rows)
    best = table.loc[table["difference"].abs().idxmax()]
    bad = table[["low", "high"]].isna().any().any()
    lo, hi = (float("nan"), float("nan")) if bad else (float(table["abs_low"].max()), float(table["abs_high"].max()))
    details = {"layer": per["layer"].iloc[0], "by": by, "method": method, "fit": fit,
               "largest_pair": [str(best["a"]), str(best["b"])],
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
    g_level = bonferroni_level(level, len(keys))
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
    "late_compression": _late_compression,  # the old max-minus-final, kept for the record: no claim uses it
    "compression_difference": _compression_difference,
    "compression_gap_spearman": _compression_gap_spearman,
    "compression_after_fitting": _compression_after_fitting,  # the signed late-compression statistics
    "late_window_fall": _late_window_fall,
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

#: The statistics of late compression (each can take a signed method); the catalogue's null-data
#: test (tests/test_statistics_null.py) runs every one of them.
LATE_COMPRESSION_STATISTICS = ("compression_after_fitting", "late_window_fall", "compression_difference",
                               "late_compression_every", "late_compression_range", "compression_gap_spearman")


def compute_statistic(name: str, runs: Mapping[str, pd.DataFrame], params: Mapping[str, Any],
                      level: float) -> Statistic:
    """Run the statistic ``name`` (see :data:`STATISTICS`) with ``params`` at ``level``."""
    if name not in STATISTICS:
        raise ValueError(f"Unknown statistic {name!r}. Known: {', '.join(sorted(STATISTICS))}.")
    try:
        return STATISTICS[name](runs, level=level, **dict(params))
    except TypeError as e:
        raise ValueError(f"Statistic {name!r}: bad parameters {dict(params)} ({e}).") from None




# --- the shape of a curve over depth (Skean et al. 2025 claims: an intermediate layer has the extreme) ---
def _quantity_runs(df: pd.DataFrame, quantity: str, x: str, along: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of ``quantity`` and the replicate keys, after checking the columns a depth curve needs."""
    for c in ("quantity", "value", x, along):
        if c not in df.columns:
            raise ValueError(f"The results have no column {c!r} (columns: {sorted(df.columns)}).")
    sub = df[df["quantity"] == quantity]
    if sub.empty:
        raise ValueError(f"No rows of quantity {quantity!r} (quantities: {sorted(df['quantity'].dropna().unique())}).")
    return sub, _replicates(sub)


def _curve_at(g: pd.DataFrame, quantity: str, x: str, along: str, a: float, key: Any) -> pd.Series:
    """One run's curve of ``quantity`` over ``x`` (sorted) at ``along`` = ``a``; one value per x."""
    g = g[np.isclose(g[along].astype(float), a)]
    if g.duplicated(x).any():
        raise ValueError(f"Run {key}: several values of {quantity!r} per {x} at {along} = {a}; narrow with 'where'.")
    return g.set_index(x)["value"].astype(float).sort_index()


def interior_extreme_per_run(df: pd.DataFrame, *, quantity: str, x: str = "layer_index", along: str = "epoch",
                             at: Any = "last", extreme: str = "min") -> pd.DataFrame:
    """Per run (replicate): how far the curve of ``quantity`` over ``x`` at its ``at`` point of ``along``
    goes beyond both of its ends at an interior point chosen *out of sample*.

    For each run the interior point k* is the extreme (``'min'`` or ``'max'``)
    of the mean curve of the *other* runs over the interior x values (with a
    single run, its own curve: in-sample, biased). The value is
    ``min(v[first], v[last]) - v[k*]`` for ``extreme='min'`` (positive iff
    that interior point lies below both ends) and ``v[k*] - max(v[first],
    v[last])`` for ``'max'``, in the quantity's unit. Choosing k* from the
    other runs keeps the statistic unbiased-or-conservative on null curves:
    for a curve that is flat or monotone plus independent noise the expected
    value is <= 0 (the in-sample extreme of several interior points would be
    biased towards the claim).

    ``at='last'`` takes each run's largest ``along`` value; a number takes
    that value. Runs must share one x grid with at least 3 points.
    """
    if extreme not in ("min", "max"):
        raise ValueError(f"'extreme' must be 'min' or 'max'; got {extreme!r}.")
    sub, keys = _quantity_runs(df, quantity, x, along)
    curves, meta = {}, {}
    for key, g in sub.groupby(keys, sort=True):
        a = float(g[along].max()) if at == "last" else float(at)
        c = _curve_at(g, quantity, x, along, a, key)
        if c.empty:
            raise ValueError(f"Run {key}: no rows of {quantity!r} at {along} = {at!r}.")
        if len(c) < 3 or not np.isfinite(c.to_numpy()).all():
            raise ValueError(f"Run {key}: the curve of {quantity!r} over {x} needs >= 3 finite points; got {len(c)}.")
        curves[key], meta[key] = c, a
    grids = {tuple(c.index) for c in curves.values()}
    if len(grids) != 1:
        raise ValueError(f"The runs hold different {x} grids: {sorted(grids)}.")
    table = pd.DataFrame(curves).T  # runs x points
    rows = []
    for key in table.index:
        others = table.drop(index=key) if len(table) > 1 else table
        inner = others.mean(axis=0).to_numpy(float)[1:-1]
        k = 1 + int(np.argmin(inner) if extreme == "min" else np.argmax(inner))
        v = table.loc[key].to_numpy(float)
        value = min(v[0], v[-1]) - v[k] if extreme == "min" else v[k] - max(v[0], v[-1])
        kd = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        rows.append({**kd, along: meta[key], "at_x": table.columns[k], "first": v[0], "interior": v[k],
                     "last": v[-1], "value": float(value), "out_of_sample": len(table) > 1})
    return pd.DataFrame(rows)


def _interior_extreme(runs, *, run: str, quantity: str, x: str = "layer_index", along: str = "epoch",
                      at: Any = "last", extreme: str = "min", where: Mapping[str, Any] | None = None,
                      level: float = 0.95) -> Statistic:
    """Mean over runs of :func:`interior_extreme_per_run` (Student t over seeds), in the quantity's unit."""
    df = _where(_run(runs, run), where, run)
    per = interior_extreme_per_run(df, quantity=quantity, x=x, along=along, at=at, extreme=extreme)
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over seeds (interior point chosen from the other seeds)",
                     _unit(df[df["quantity"] == quantity]), per,
                     {"extreme": extreme, "median_at_x": float(per["at_x"].median())})


STATISTICS["interior_extreme"] = _interior_extreme
__all__ += ["interior_extreme_per_run"]


# --- the change of a depth curve over training (Skean et al. 2025: the intermediate layers change most) ---
def interior_change_per_run(df: pd.DataFrame, *, quantity: str, x: str = "layer_index", along: str = "epoch",
                            reference: str = "first") -> pd.DataFrame:
    """Per run: how much more ``quantity`` falls over training at the interior ``x`` points than at an end.

    For each run, with ``a0`` and ``a1`` its smallest and largest ``along``
    values (the first and the last checkpoint), the fall of a point is
    ``v(a0) - v(a1)``; the value is the fall of the interior points' mean
    (every ``x`` but the first and the last) minus the fall at the
    ``reference`` end (``'first'``: the embeddings; ``'last'``: the last
    layer), in the quantity's unit. Positive iff the intermediate layers lose
    more of the quantity over training than the reference layer. The interior
    points are fixed in advance (all of them), so no point is picked from the
    data: for curves whose layers all change by the same amount plus
    independent noise the expected value is 0. Runs must share one x grid
    with at least 3 points, tracked at both checkpoints.
    """
    if reference not in ("first", "last"):
        raise ValueError(f"'reference' must be 'first' or 'last'; got {reference!r}.")
    sub, keys = _quantity_runs(df, quantity, x, along)
    rows, grids = [], set()
    for key, g in sub.groupby(keys, sort=True):
        a = g[along].astype(float)
        c0, c1 = (_curve_at(g, quantity, x, along, float(at), key) for at in (a.min(), a.max()))
        if len(c0) < 3 or list(c0.index) != list(c1.index) or not (np.isfinite(c0).all() and np.isfinite(c1).all()):
            raise ValueError(f"Run {key}: the curve of {quantity!r} over {x} needs the same >= 3 finite points at "
                             f"the first and the last {along}; got {len(c0)} and {len(c1)}.")
        if float(a.min()) == float(a.max()):
            raise ValueError(f"Run {key}: {quantity!r} is tracked at one {along} only; a change needs two.")
        grids.add(tuple(c0.index))
        fall = (c0 - c1).to_numpy(float)
        ref = fall[0] if reference == "first" else fall[-1]
        kd = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        rows.append({**kd, "from": float(a.min()), "to": float(a.max()), "interior_fall": float(fall[1:-1].mean()),
                     "reference_fall": float(ref), "value": float(fall[1:-1].mean() - ref)})
    if len(grids) != 1:
        raise ValueError(f"The runs hold different {x} grids: {sorted(grids)}.")
    return pd.DataFrame(rows)


def _interior_change(runs, *, run: str, quantity: str, x: str = "layer_index", along: str = "epoch",
                     reference: str = "first", where: Mapping[str, Any] | None = None,
                     level: float = 0.95) -> Statistic:
    """Mean over runs of :func:`interior_change_per_run` (Student t over seeds), in the quantity's unit."""
    df = _where(_run(runs, run), where, run)
    per = interior_change_per_run(df, quantity=quantity, x=x, along=along, reference=reference)
    m, lo, hi, n = t_interval(per["value"], level)
    return Statistic(m, lo, hi, n, "Student t over seeds", _unit(df[df["quantity"] == quantity]), per,
                     {"reference": reference, "interior_fall": float(per["interior_fall"].mean()),
                      "reference_fall": float(per["reference_fall"].mean())})


STATISTICS["interior_change"] = _interior_change
__all__ += ["interior_change_per_run"]
