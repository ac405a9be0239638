"""Figures: information planes, information over epochs, weight information, training curves.

Every figure function takes a tidy table (see docs/information_plane.md and
docs/weights.md for the columns), writes a PNG to ``path`` (matplotlib, Agg
backend) and returns the path. Each documents the few columns it *requires*;
every other column is optional and only adds to the figure:

* ``seed`` with several values: mean trajectories with Student-t intervals
  over seeds (:func:`ibscope._intervals.mean_interval`);
* ``i_xt_lo``, ``i_xt_hi``, ``i_ty_lo``, ``i_ty_hi`` (one run): per-estimate
  error bars (the estimators' own confidence intervals, level ``ci_level``);
* ``flags`` (';'-separated diagnostic flag names, '' when healthy): flagged
  estimates are drawn as hollow markers, with a legend note;
* ``estimator`` (one panel each), ``layer_index`` (layer order), ``unit``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ._intervals import mean_interval, trajectory_bands

__all__ = ["pyplot", "save_figure", "plot_information_plane", "plot_information_curves", "plot_weight_information",
           "plot_training_curves", "plot_information_plane_bands", "plot_trajectory_bands"]

PLANE_REQUIRED = ("epoch", "layer", "i_xt", "i_ty")
WEIGHT_REQUIRED = ("epoch", "quantity", "value")
CI_COLUMNS = ("i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi")
_FLAG_NOTE = "hollow: flagged estimate (see the flags column)"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures are only saved to files)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, *, dpi: int, tight_layout: bool = True, **savefig_kwargs) -> Path:
    """Lay out (unless ``tight_layout=False``), save ``fig`` to ``path`` and close it; returns the path.

    The one way ibscope writes a figure: the image goes to a temporary file
    in the same directory, which is then renamed over ``path``
    (:func:`ibscope.store.atomic_path`). A symbolic link planted at ``path``
    is thus replaced, never followed, and a crash never leaves half an image.
    The format is the suffix of ``path`` (e.g. ``.png``) unless ``format`` is given.
    """
    from .store import atomic_path

    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or (path.suffix[1:].lower() or "png")
    try:
        if tight_layout:
            fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt, **savefig_kwargs)
    finally:
        pyplot().close(fig)
    return path


# --------------------------------------------------------------------------- input checks


def _check_table(results: pd.DataFrame, required: Iterable[str], argument: str) -> pd.DataFrame:
    """A copy of ``results`` after checking its type, its required columns and that it has rows."""
    required = list(required)
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"'{argument}' must be a pandas DataFrame, got {type(results).__name__}.")
    missing = [c for c in required if c not in results.columns]
    if missing:
        raise ValueError(f"'{argument}' lacks the column(s) {missing}: the figure needs {required} "
                         f"(every other column is optional).")
    if results.empty:
        raise ValueError(f"'{argument}' has no rows; nothing to plot.")
    df = results.copy()
    for c in required:
        if c in ("layer", "quantity"):
            df[c] = df[c].astype(str)
        else:
            df[c] = _numeric(df[c], c, argument)
    return df


def _numeric(col: pd.Series, name: str, argument: str) -> pd.Series:
    try:
        return pd.to_numeric(col).astype(float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"Column '{name}' of '{argument}' must be numeric ({e}).") from None


def _plane_frame(results: pd.DataFrame, argument: str = "results") -> pd.DataFrame:
    """The information-plane table with the optional columns filled in (estimator, layer_index, flags)."""
    df = _check_table(results, PLANE_REQUIRED, argument)
    df["estimator"] = df["estimator"].astype(str) if "estimator" in df.columns else "estimate"
    if "layer_index" not in df.columns:
        order = {layer: i + 1 for i, layer in enumerate(dict.fromkeys(df["layer"]))}
        df["layer_index"] = df["layer"].map(order)
    for c in CI_COLUMNS:
        if c in df.columns:
            df[c] = _numeric(df[c], c, argument)
    df["flags"] = df["flags"].fillna("").astype(str) if "flags" in df.columns else ""
    return df


def _unit(df: pd.DataFrame, argument: str = "results") -> str:
    """The one unit of the table ('' when it has no unit column)."""
    if "unit" not in df.columns:
        return ""
    units = sorted(df["unit"].dropna().astype(str).unique())
    if len(units) > 1:
        raise ValueError(f"'{argument}' mixes units {units}; convert every row to one unit first.")
    return units[0] if units else ""


def _in(unit: str) -> str:
    return f" [{unit}]" if unit else ""


def _n_seeds(df: pd.DataFrame) -> int:
    return int(df["seed"].nunique()) if "seed" in df.columns else 1


def _join_flags(values: Iterable[str]) -> str:
    """The union of ';'-separated flag strings, sorted and ';'-joined ('' when none)."""
    return ";".join(sorted({f for v in values for f in str(v).split(";") if f}))


def _layers(df: pd.DataFrame) -> list[str]:
    if "layer_index" in df.columns:
        return list(df.sort_values("layer_index", kind="stable")["layer"].drop_duplicates())
    return list(dict.fromkeys(df["layer"]))


def _layer_colors(plt, layers: list[str]) -> dict[str, tuple]:
    """One colour per layer from a qualitative colormap (tab10, tab20 beyond 10 layers; cycles beyond 20)."""
    cmap, n = (plt.cm.tab10, 10) if len(layers) <= 10 else (plt.cm.tab20, 20)
    return {layer: cmap(i % n) for i, layer in enumerate(layers)}


def _epoch_sizes(epochs: Iterable[float], *, smallest: float = 10.0, largest: float = 64.0):
    """Marker area of each recorded epoch: grows linearly with the epoch's rank among the recorded epochs.

    The rank (not the epoch itself) spreads log-spaced schedules evenly, and
    the first epoch (0, the initialization) keeps a visible marker. Returns
    (the sorted distinct epochs, a function mapping epochs to areas in pt^2).
    """
    uniq = np.unique(np.asarray(list(epochs), float))
    uniq = uniq[np.isfinite(uniq)]
    span = max(len(uniq) - 1, 1)

    def size(e) -> np.ndarray:
        rank = np.searchsorted(uniq, np.asarray(e, float))
        return smallest + (largest - smallest) * rank / span

    return uniq, size


def _size_handles(uniq: np.ndarray, size) -> list:
    """Legend handles for the marker-size encoding: the first, a middle and the last recorded epoch."""
    from matplotlib.lines import Line2D

    picks = list(dict.fromkeys([uniq[0], uniq[len(uniq) // 2], uniq[-1]])) if len(uniq) else []
    return [Line2D([], [], ls="none", marker="o", color="0.45", ms=float(np.sqrt(size(e))),
                   label=f"epoch {e:g}") for e in picks]


def _outside_legend(fig, handles: list, *, title: str | None = None) -> None:
    """One legend for the whole figure, right of the panels (never over the data).

    Needs a figure made with ``layout="constrained"`` (the legend's room is then
    part of the layout, also for renderers that do not crop, e.g. TensorBoard's
    ``add_figure``).
    """
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False, title=title,
                   title_fontsize=7)


def _ci_level(df: pd.DataFrame) -> str:
    """'95% ' style text of the CI level column, or '' when none is recorded."""
    if "ci_level" not in df.columns:
        return ""
    levels = pd.to_numeric(df["ci_level"], errors="coerce").dropna().unique()
    return f"{levels[0]:.0%} " if len(levels) == 1 else ""


def _per_run_points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (estimator, layer, epoch): the values (mean of any duplicates) and the union of flags."""
    values = ["i_xt", "i_ty", *[c for c in CI_COLUMNS if c in df.columns]]
    keys = ["estimator", "layer_index", "layer", "epoch"]
    g = df.groupby(keys, sort=True, dropna=False)
    out = g[values].mean()
    out["flags"] = g["flags"].agg(_join_flags)
    return out.reset_index()


def _seed_bands(df: pd.DataFrame, level: float) -> pd.DataFrame:
    """Mean and t-interval over seeds per (estimator, layer, epoch), with the union of flags of the seeds."""
    bands = trajectory_bands(df[["seed", "estimator", "layer", "layer_index", "epoch", "i_xt", "i_ty"]],
                             level=level)
    flags = df.groupby(["estimator", "layer", "epoch"], sort=False)["flags"].agg(_join_flags).rename("flags")
    bands = bands.merge(flags.reset_index(), on=["estimator", "layer", "epoch"], how="left")
    bands["flags"] = bands["flags"].fillna("")
    return bands


def _errors(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of finite intervals, 2 x n error lengths, clipped at 0: an interval may miss its estimate)."""
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(v)
    err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
    return ok, err


def _markers(ax, x, y, flagged, *, color=None, c=None, cmap=None, norm=None, s=16, zorder=3, label=None):
    """Filled markers for healthy estimates, hollow ones for flagged estimates; True if any was flagged."""
    x, y, flagged = np.asarray(x, float), np.asarray(y, float), np.asarray(flagged, bool)
    import matplotlib
    from matplotlib.colors import to_rgba

    if c is not None:
        colors = np.asarray(matplotlib.colormaps[cmap](norm(np.asarray(c, float))))
    else:
        colors = np.tile(np.asarray(to_rgba(color)), (len(x), 1))
    s = np.broadcast_to(np.asarray(s, float), x.shape)
    ok = ~flagged
    if ok.any():
        ax.scatter(x[ok], y[ok], c=colors[ok], s=s[ok], zorder=zorder, edgecolors="none", label=label)
    if flagged.any():
        ax.scatter(x[flagged], y[flagged], facecolors="none", edgecolors=colors[flagged], linewidths=1.1,
                   s=s[flagged] * 1.6, zorder=zorder, label=None if ok.any() else label)
    return bool(flagged.any())


def _epoch_axis(ax, epochs: np.ndarray) -> np.ndarray:
    """A log-like x-axis (symlog, linear below 1, so epoch 0 stays at 0) when the epochs span more than a
    decade; returns the x values."""
    epochs = np.asarray(epochs, float)
    if np.nanmax(epochs) > 10:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("epoch (log scale above 1)")
    else:
        ax.set_xlabel("epoch")
    return epochs


def _flag_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3", label=_FLAG_NOTE)


def _layer_handles(layers: list[str], colors: dict[str, tuple], *, marker: str | None = "o") -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=colors[layer], lw=1.4, marker=marker, ms=4, label=layer) for layer in layers]


# --------------------------------------------------------------------------- one run or several seeds


def plot_information_plane(results: pd.DataFrame, path: str | Path, *, level: float = 0.95) -> Path:
    """The information plane: I(T;Y) against I(X;T) of each layer over training, one panel per estimator.

    Parameters
    ----------
    results : DataFrame
        Required columns: ``epoch``, ``layer``, ``i_xt``, ``i_ty``. Optional:
        ``estimator`` (one panel each; one panel when absent), ``layer_index``
        (layer order), ``unit``, ``seed``, the CI columns ``i_xt_lo``,
        ``i_xt_hi``, ``i_ty_lo``, ``i_ty_hi`` (and ``ci_level``), ``flags``.
    path : path-like
        The PNG to write.
    level : float
        Coverage of the intervals over seeds (several seeds only).

    Returns
    -------
    Path

    Notes
    -----
    Encoding (the plane of Shwartz-Ziv and Tishby, 2017, "Opening the black
    box of deep neural networks via information", arXiv:1703.00810): **colour
    is the layer** (a qualitative colormap, the same colour in every panel)
    and **marker area is the epoch**, growing with the epoch's rank among the
    recorded epochs, so the trajectory of a layer runs from its smallest
    marker (the first recorded epoch, usually 0 = the initialization, always
    drawn) to its largest. One legend right of the panels names the layers,
    shows the marker area of the first, a middle and the last epoch and, when
    there are any, the hollow marker of flagged estimates; it is never drawn
    over the data.

    One run (no ``seed`` column, or one seed): every estimate is a marker on
    the layer's trajectory, with error bars from the CI columns where they
    are finite. Several seeds: each layer's mean trajectory (seeds put on a
    common epoch grid, see :func:`ibscope._intervals.common_grid`) with the
    box [I(X;T) lo, hi] x [I(T;Y) lo, hi] of the Student-t interval over seeds
    at each epoch. Flagged estimates (non-empty ``flags``; several seeds: any
    seed's) are hollow markers.
    """
    return save_figure(_plane_figure(results, level=level), path, dpi=110, tight_layout=False,
                       bbox_inches="tight")


def _plane_figure(results: pd.DataFrame, *, level: float = 0.95):
    """The matplotlib figure of :func:`plot_information_plane` (open; the caller saves or closes it)."""
    plt = pyplot()
    df = _plane_frame(results)
    unit = _unit(df)
    names = list(dict.fromkeys(df["estimator"]))
    seeds = _n_seeds(df)
    layers = _layers(df)
    colors = _layer_colors(plt, layers)
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names) + 1.6, 4.2), squeeze=False,
                             layout="constrained")
    any_flag = False
    if seeds > 1:
        bands = _seed_bands(df, level)
        uniq, size = _epoch_sizes(bands["epoch"])
        for ax, name in zip(axes[0], names, strict=False):
            for layer, g in _per_layer(bands[bands["estimator"] == name], layers):
                _interval_boxes(ax, g, colors[layer])
                ax.plot(g["i_xt"], g["i_ty"], "-", lw=1.2, color=colors[layer], zorder=2)
                any_flag |= _markers(ax, g["i_xt"], g["i_ty"], g["flags"] != "", color=colors[layer],
                                     s=size(g["epoch"]), label=layer)
            ax.set_title(f"{name}: mean of {seeds} seeds, {level:.0%} t-interval boxes", fontsize=9)
    else:
        pts = _per_run_points(df)
        uniq, size = _epoch_sizes(pts["epoch"])
        has_ci = all(c in pts.columns for c in CI_COLUMNS)
        for ax, name in zip(axes[0], names, strict=False):
            drew_bars = False
            for layer, g in _per_layer(pts[pts["estimator"] == name], layers):
                x, y = g["i_xt"].to_numpy(), g["i_ty"].to_numpy()
                ax.plot(x, y, color=colors[layer], lw=1.0, alpha=0.7, zorder=2)
                if has_ci:
                    okx, ex = _errors(x, g["i_xt_lo"].to_numpy(), g["i_xt_hi"].to_numpy())
                    oky, ey = _errors(y, g["i_ty_lo"].to_numpy(), g["i_ty_hi"].to_numpy())
                    ok = okx & oky
                    if ok.any():
                        ax.errorbar(x[ok], y[ok], xerr=ex[:, ok], yerr=ey[:, ok], fmt="none",
                                    ecolor=colors[layer], alpha=0.45, elinewidth=0.7, capsize=1.5, zorder=1.5)
                        drew_bars = True
                any_flag |= _markers(ax, x, y, g["flags"] != "", color=colors[layer], s=size(g["epoch"]),
                                     label=layer)
            bars = f", error bars: {_ci_level(df)}CI" if drew_bars else ""
            ax.set_title(f"{name} (one run{bars})", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel(f"I(X;T){_in(unit)}")
        ax.set_ylabel(f"I(T;Y){_in(unit)}")
        ax.grid(alpha=0.3)
        ax.autoscale_view()
    handles = _layer_handles(layers, colors) + _size_handles(uniq, size)
    _outside_legend(fig, handles + ([_flag_handle()] if any_flag else []),
                    title="colour: layer; marker size: epoch")
    return fig


def plot_information_curves(results: pd.DataFrame, path: str | Path, *, level: float = 0.95) -> Path:
    """I(X;T) and I(T;Y) of each layer against the epoch; one row of two panels per estimator.

    Takes the table of :func:`plot_information_plane` (required columns
    ``epoch``, ``layer``, ``i_xt``, ``i_ty``). One run: the estimates with
    error bars from the CI columns where they are finite; several seeds: the
    mean with a band of the Student-t interval over seeds. Flagged
    estimates are hollow markers.
    """
    plt = pyplot()
    df = _plane_frame(results)
    unit = _unit(df)
    names = list(dict.fromkeys(df["estimator"]))
    layers = _layers(df)
    colors = _layer_colors(plt, layers)
    seeds = _n_seeds(df)
    table = _seed_bands(df, level) if seeds > 1 else _per_run_points(df)
    fig, axes = plt.subplots(len(names), 2, figsize=(11.4, 3.2 * len(names)), squeeze=False, sharex=True,
                             layout="constrained")
    flagged = False
    for r, name in enumerate(names):
        sub = table[table["estimator"] == name]
        for c, q in enumerate(("i_xt", "i_ty")):
            ax = axes[r][c]
            any_flag = drew = False
            for layer, g in _per_layer(sub, layers):
                x = _epoch_axis(ax, g["epoch"].to_numpy())
                v = g[q].to_numpy()
                ax.plot(x, v, lw=1.2, color=colors[layer], label=layer, zorder=2)
                if f"{q}_lo" in g.columns:
                    lo, hi = g[f"{q}_lo"].to_numpy(), g[f"{q}_hi"].to_numpy()
                    if seeds > 1:
                        ax.fill_between(x, lo, hi, color=colors[layer], alpha=0.2, lw=0)
                        drew |= bool(np.isfinite(lo).any())
                    else:
                        ok, err = _errors(v, lo, hi)
                        if ok.any():
                            ax.errorbar(x[ok], v[ok], yerr=err[:, ok], fmt="none", ecolor=colors[layer],
                                        elinewidth=0.7, capsize=1.5, zorder=1.5)
                            drew = True
                any_flag |= _markers(ax, x, v, g["flags"] != "", color=colors[layer], s=10)
            what = (f"mean of {seeds} seeds, {level:.0%} t-band" if seeds > 1 else
                    f"one run{', error bars: ' + _ci_level(df) + 'CI' if drew else ''}")
            ax.set_title(f"{name}: {'I(X;T)' if q == 'i_xt' else 'I(T;Y)'} ({what})", fontsize=9)
            ax.set_ylabel(f"{'I(X;T)' if q == 'i_xt' else 'I(T;Y)'}{_in(unit)}")
            ax.grid(alpha=0.3)
            flagged |= any_flag
    _outside_legend(fig, _layer_handles(layers, colors, marker=None) + ([_flag_handle()] if flagged else []),
                    title="layer")
    return save_figure(fig, path, dpi=100, tight_layout=False)


def plot_weight_information(results: pd.DataFrame, path: str | Path, *, level: float = 0.95) -> Path:
    """Information in the weights over training: one panel per quantity (IIW, Fisher, ...), layers as lines.

    Parameters
    ----------
    results : DataFrame
        The weight-information table. Required columns: ``epoch``,
        ``quantity``, ``value``. Optional: ``layer`` ('total' for the sum over
        layers, drawn bold and black; all rows are 'total' when absent),
        ``unit`` (per quantity, on the y axis), ``method`` (lines per method
        when a quantity has several), ``seed`` (several seeds: the mean with a
        band of the Student-t interval over seeds).
    path : path-like
        The PNG to write.
    level : float
        Coverage of the band over seeds.

    Returns
    -------
    Path
    """
    plt = pyplot()
    df = _check_table(results, WEIGHT_REQUIRED, "results")
    df["layer"] = df["layer"].astype(str) if "layer" in df.columns else "total"
    df = df[np.isfinite(df["epoch"])]
    if df.empty:
        raise ValueError("'results' has no row with a finite epoch; nothing to plot over epochs.")
    quantities = list(dict.fromkeys(df["quantity"]))
    seeds = _n_seeds(df)
    fig, axes = plt.subplots(1, len(quantities), figsize=(5.2 * len(quantities) + 1.4, 3.9), squeeze=False,
                             layout="constrained")
    handles: dict[str, object] = {}
    palette: dict[str, tuple] = {}
    for ax, q in zip(axes[0], quantities, strict=False):
        sub = df[df["quantity"] == q]
        unit = _unit(sub, f"results (quantity {q!r})")
        split = "method" in sub.columns and sub["method"].nunique() > 1
        keys = ["layer", "method"] if split else ["layer"]
        lines = list(sub[keys].drop_duplicates().itertuples(index=False, name=None))
        lines.sort(key=lambda k: k[0] == "total")  # layers first (in order), the total last, on top
        for key in lines:
            g = sub
            for col, val in zip(keys, key, strict=False):
                g = g[g[col] == val]
            label = " ".join(str(k) for k in key) if split else key[0]
            total = key[0] == "total"
            if not total:  # one colour per line label across the panels (the legend is shared)
                palette.setdefault(label, plt.cm.tab10(len(palette) % 10))
            color = "black" if total else palette[label]
            style = {"color": color, "lw": 2.4 if total else 1.1, "zorder": 3 if total else 2}
            if seeds > 1:
                m = mean_interval(g, ["epoch"], ["value"], level=level)
                x = _epoch_axis(ax, m["epoch"].to_numpy())
                (line,) = ax.plot(x, m["value"], marker="o", ms=2.5, label=label, **style)
                ax.fill_between(x, m["value_lo"], m["value_hi"], color=color, alpha=0.15, lw=0)
            else:
                m = g.groupby("epoch")["value"].mean()
                x = _epoch_axis(ax, m.index.to_numpy())
                (line,) = ax.plot(x, m.to_numpy(), marker="o", ms=2.5, label=label, **style)
            handles.setdefault(label, line)
        vals = sub["value"].to_numpy()
        vals = vals[np.isfinite(vals)]
        if len(vals) and vals.min() > 0 and vals.max() / vals.min() > 100:
            ax.set_yscale("log")
        ax.set_title(f"{q}" + (f" (mean of {seeds} seeds, {level:.0%} t-band)" if seeds > 1 else ""), fontsize=9)
        ax.set_ylabel(f"{q}{_in(unit)}")
        ax.grid(alpha=0.3)
    if len(handles) > 1:  # one legend right of the panels, never over the data
        _outside_legend(fig, list(handles.values()))
    return save_figure(fig, path, dpi=110, tight_layout=False)


def plot_training_curves(results: pd.DataFrame, path: str | Path, *, level: float = 0.95) -> Path:
    """Losses and accuracies over epochs (train / eval / test, whichever columns are present).

    Required: ``epoch`` and at least one of ``train_loss``, ``eval_loss``,
    ``test_loss``, ``train_acc``, ``eval_acc``, ``test_acc``. Rows repeated per
    layer or estimator are counted once per (seed, epoch). Several seeds: the
    mean with a band of the Student-t interval over seeds.
    """
    plt = pyplot()
    kinds = {"loss": [f"{s}_loss" for s in ("train", "eval", "test")],
             "acc": [f"{s}_acc" for s in ("train", "eval", "test")]}
    present = {k: [c for c in cols if c in results.columns] for k, cols in kinds.items()}
    present = {k: v for k, v in present.items() if v}
    if not present:
        raise ValueError("'results' has none of the metric columns "
                         f"{[c for cols in kinds.values() for c in cols]}; nothing to plot.")
    df = _check_table(results, ["epoch", *[c for cols in present.values() for c in cols]], "results")
    seeds = _n_seeds(df)
    per = df.drop_duplicates(["seed", "epoch"] if "seed" in df.columns else ["epoch"])
    if "seed" not in per.columns:
        per = per.assign(seed=0)
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.8), squeeze=False)
    for ax, (kind, cols) in zip(axes[0], present.items(), strict=False):
        for i, col in enumerate(cols):
            m = mean_interval(per, ["epoch"], [col], level=level)
            x = _epoch_axis(ax, m["epoch"].to_numpy())
            ax.plot(x, m[col], color=f"C{i}", label=col.rsplit("_", 1)[0])
            if seeds > 1:
                ax.fill_between(x, m[f"{col}_lo"], m[f"{col}_hi"], color=f"C{i}", alpha=0.2, lw=0)
        ax.set_ylabel("loss" if kind == "loss" else "accuracy")
        ax.set_title(f"mean of {seeds} seeds, {level:.0%} t-band" if seeds > 1 else "one run", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- grid points (sweeps)


def _point_labels(df: pd.DataFrame, point_columns: list[str]) -> list[tuple[tuple, str]]:
    if not point_columns:
        return [((), "all runs")]
    keys = df[point_columns].drop_duplicates().itertuples(index=False, name=None)
    return [(k, ", ".join(f"{c}={v}" for c, v in zip(point_columns, k, strict=False))) for k in keys]


def _select(df: pd.DataFrame, point_columns: list[str], key: tuple) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for c, v in zip(point_columns, key, strict=False):
        mask &= (df[c] == v).to_numpy()
    return df[mask]


def _per_layer(sub: pd.DataFrame, layers: list[str]):
    """(layer, its rows sorted by epoch) for each layer present in ``sub``."""
    for layer in layers:
        g = sub[sub["layer"] == layer].sort_values("epoch")
        if len(g):
            yield layer, g


def _interval_boxes(ax, g: pd.DataFrame, color) -> None:
    """The boxes [I(X;T) lo, hi] x [I(T;Y) lo, hi] of the rows of ``g`` that have finite intervals."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    if not all(c in g.columns for c in CI_COLUMNS):
        return
    boxes = [Rectangle((x0, y0), x1 - x0, y1 - y0) for x0, x1, y0, y1 in
             zip(g["i_xt_lo"], g["i_xt_hi"], g["i_ty_lo"], g["i_ty_hi"], strict=False)
             if np.isfinite([x0, x1, y0, y1]).all()]
    if boxes:
        ax.add_collection(PatchCollection(boxes, facecolor=color, alpha=0.12, edgecolor="none", zorder=1))


def _band_layout(plt, bands: pd.DataFrame, point_columns: list[str], max_points: int):
    """Points (first ``max_points``), estimators, unit, layers in order, and a color per layer."""
    points = _point_labels(bands, point_columns)[:max_points]
    ests = list(dict.fromkeys(bands["estimator"]))
    unit = _unit(bands, "bands")
    layers = _layers(bands)
    return points, ests, unit, layers, _layer_colors(plt, layers)


def _bands_frame(bands: pd.DataFrame, point_columns: list[str]) -> pd.DataFrame:
    df = _check_table(bands, PLANE_REQUIRED, "bands")
    missing = [c for c in point_columns if c not in df.columns]
    if missing:  # grid axes may hold any value (an activation's name, a number)
        raise ValueError(f"'bands' lacks the grid column(s) {missing} named in 'point_columns'.")
    df["estimator"] = df["estimator"].astype(str) if "estimator" in df.columns else "estimate"
    return df


def plot_information_plane_bands(bands: pd.DataFrame, path: str | Path, point_columns: list[str] | None = None,
                                 *, max_points: int = 8) -> Path:
    """Mean information-plane trajectory of each layer with its interval over seeds, per grid point.

    One row of panels per estimator, one column per grid point (the first
    ``max_points``). The band is drawn as the union of the interval boxes
    [I(X;T) lo, hi] x [I(T;Y) lo, hi] at each snapshot epoch. ``bands`` is the
    table of :func:`ibscope.sweep.trajectory_bands`; it needs ``epoch``,
    ``layer``, ``i_xt``, ``i_ty`` and the ``point_columns``; the interval
    columns ``i_xt_lo`` ... ``i_ty_hi``, ``estimator``, ``layer_index``,
    ``unit`` and ``n`` (seeds, shown in the titles) are optional.
    """
    plt = pyplot()
    point_columns = list(point_columns or [])
    bands = _bands_frame(bands, point_columns)
    points, ests, unit, layers, colors = _band_layout(plt, bands, point_columns, max_points)
    fig, axes = plt.subplots(len(ests), len(points), figsize=(4.4 * len(points) + 1.2, 3.9 * len(ests)),
                             squeeze=False, sharex="row", sharey="row", layout="constrained")
    for r, est in enumerate(ests):
        for c, (key, label) in enumerate(points):
            ax = axes[r][c]
            sub = _select(bands[bands["estimator"] == est], point_columns, key)
            for layer, g in _per_layer(sub, layers):
                _interval_boxes(ax, g, colors[layer])
                ax.plot(g["i_xt"], g["i_ty"], "-o", ms=2.5, lw=1.2, color=colors[layer], label=layer, zorder=2)
            n = f" (n={int(sub['n'].max())})" if "n" in sub.columns and len(sub) else ""
            ax.set_title(f"{est}: {label}{n}", fontsize=9)
            ax.set_xlabel(f"I(X;T){_in(unit)}")
            ax.set_ylabel(f"I(T;Y){_in(unit)}")
            ax.grid(alpha=0.3)
            ax.autoscale_view()
    _outside_legend(fig, _layer_handles(layers, colors), title="layer")
    fig.suptitle("Information plane: mean over seeds, interval boxes", fontsize=10)
    return save_figure(fig, path, dpi=100, tight_layout=False)


def plot_trajectory_bands(bands: pd.DataFrame, path: str | Path, point_columns: list[str] | None = None,
                          *, max_points: int = 8) -> Path:
    """I(X;T) and I(T;Y) of each layer over epochs: mean and interval band over seeds, per grid point.

    Rows: (estimator, quantity); columns: grid points (the first
    ``max_points``). Same table and columns as :func:`plot_information_plane_bands`.
    """
    plt = pyplot()
    point_columns = list(point_columns or [])
    bands = _bands_frame(bands, point_columns)
    points, ests, unit, layers, colors = _band_layout(plt, bands, point_columns, max_points)
    rows = [(e, q) for e in ests for q in ("i_xt", "i_ty")]
    fig, axes = plt.subplots(len(rows), len(points), figsize=(4.4 * len(points) + 1.2, 2.9 * len(rows)),
                             squeeze=False, sharex=True, sharey="row", layout="constrained")
    for r, (est, q) in enumerate(rows):
        for c, (key, label) in enumerate(points):
            ax = axes[r][c]
            for layer, g in _per_layer(_select(bands[bands["estimator"] == est], point_columns, key), layers):
                x = g["epoch"].to_numpy(dtype=float)
                ax.plot(x, g[q], color=colors[layer], lw=1.2, label=layer)
                if f"{q}_lo" in g.columns and f"{q}_hi" in g.columns:
                    ax.fill_between(x, g[f"{q}_lo"], g[f"{q}_hi"], color=colors[layer], alpha=0.2, lw=0)
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_title(f"{est}: {label}", fontsize=9)
            ax.set_ylabel(f"{'I(X;T)' if q == 'i_xt' else 'I(T;Y)'}{_in(unit)}")
            ax.grid(alpha=0.3)
            if r == len(rows) - 1:
                ax.set_xlabel("epoch (log scale above 1)")
    _outside_legend(fig, _layer_handles(layers, colors, marker=None), title="layer")
    return save_figure(fig, path, dpi=100, tight_layout=False)
