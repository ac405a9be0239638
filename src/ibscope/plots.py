"""Figures: information planes and training curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["pyplot", "save_figure", "plot_information_plane", "plot_training_curves", "plot_information_plane_bands",
           "plot_trajectory_bands", "plot_compression_vs_gap"]


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures are only saved to files)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, *, dpi: int, tight_layout: bool = True, **savefig_kwargs) -> Path:
    """Lay out (unless ``tight_layout=False``), save ``fig`` to ``path`` and close it; returns the path."""
    path = Path(path)
    try:
        if tight_layout:
            fig.tight_layout()
        fig.savefig(path, dpi=dpi, **savefig_kwargs)
    finally:
        pyplot().close(fig)
    return path


def plot_information_plane(results: pd.DataFrame, path: str | Path) -> Path:
    """One panel per estimator: each layer's trajectory (mean over seeds) colored by epoch (log scale).

    Expects columns estimator, layer, layer_index, epoch, i_xt, i_ty, unit.
    """
    plt = pyplot()
    from matplotlib.colors import LogNorm

    path = Path(path)
    names = list(dict.fromkeys(results["estimator"]))
    unit = results["unit"].iloc[0] if len(results) else "bits"
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4), squeeze=False)
    mean = results.groupby(["estimator", "layer_index", "layer", "epoch"], as_index=False)[["i_xt", "i_ty"]].mean()
    emax = max(int(mean["epoch"].max()), 1) if len(mean) else 1
    norm = LogNorm(vmin=1, vmax=emax)
    sc = None
    for ax, name in zip(axes[0], names, strict=False):
        sub = mean[mean["estimator"] == name]
        for (_li, layer), g in sub.groupby(["layer_index", "layer"]):
            g = g.sort_values("epoch")
            ax.plot(g["i_xt"], g["i_ty"], color="0.75", lw=0.8, zorder=1)
            sc = ax.scatter(g["i_xt"], g["i_ty"], c=np.maximum(g["epoch"], 1), cmap="viridis", norm=norm,
                            s=14, zorder=2, edgecolors="none")
            last = g.iloc[-1]
            ax.annotate(layer, (last["i_xt"], last["i_ty"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        seeds = results.loc[results["estimator"] == name, "seed"].nunique()
        ax.set_title(f"{name} (mean of {seeds} seed{'s' if seeds != 1 else ''})")
        ax.set_xlabel(f"I(X;T) [{unit}]")
        ax.set_ylabel(f"I(T;Y) [{unit}]")
        ax.grid(alpha=0.3)
    if sc is not None:
        cb = fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.9)
        cb.set_label("epoch (log scale)")
    return save_figure(fig, path, dpi=110, tight_layout=False, bbox_inches="tight")


def plot_training_curves(results: pd.DataFrame, path: str | Path) -> Path:
    """Train/test loss and accuracy over epochs (mean and range over seeds)."""
    plt = pyplot()
    path = Path(path)
    per = results.drop_duplicates(["seed", "epoch"])[["seed", "epoch", "train_loss", "test_loss", "train_acc", "test_acc"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in ((a1, "loss"), (a2, "acc")):
        for split, color in (("train", "C0"), ("test", "C1")):
            g = per.groupby("epoch")[f"{split}_{kind}"]
            m, lo, hi = g.mean(), g.min(), g.max()
            x = np.maximum(m.index.values, 1)
            ax.plot(x, m.values, color=color, label=split)
            ax.fill_between(x, lo.values, hi.values, color=color, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("epoch (epoch 0 drawn at 1)")
        ax.set_ylabel("cross-entropy (nats)" if kind == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- sweeps


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


def _layers(df: pd.DataFrame) -> list[str]:
    if "layer_index" in df.columns:
        return list(df.sort_values("layer_index")["layer"].drop_duplicates())
    return list(dict.fromkeys(df["layer"]))


def _per_layer(sub: pd.DataFrame, layers: list[str]):
    """(layer, its rows sorted by epoch) for each layer present in ``sub``."""
    for layer in layers:
        g = sub[sub["layer"] == layer].sort_values("epoch")
        if len(g):
            yield layer, g


def _band_layout(plt, bands: pd.DataFrame, point_columns: list[str], max_points: int):
    """Points (first ``max_points``), estimators, unit, layers in order, and a color per layer."""
    points = _point_labels(bands, point_columns)[:max_points]
    ests = list(dict.fromkeys(bands["estimator"]))
    unit = bands["unit"].iloc[0] if "unit" in bands.columns and len(bands) else "bits"
    layers = _layers(bands)
    colors = {layer: plt.cm.viridis(i / max(len(layers) - 1, 1)) for i, layer in enumerate(layers)}
    return points, ests, unit, layers, colors


def plot_information_plane_bands(bands: pd.DataFrame, path: str | Path, point_columns: list[str] | None = None,
                                 *, max_points: int = 8) -> Path:
    """Mean information-plane trajectory of each layer with its 95% interval over seeds.

    One row of panels per estimator, one column per grid point (the first
    ``max_points``). The band is drawn as the union of the interval boxes
    [I(X;T) lo, hi] x [I(T;Y) lo, hi] at each snapshot epoch. ``bands`` is the
    table of :func:`ibscope.sweep.trajectory_bands`.
    """
    plt = pyplot()
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    path = Path(path)
    point_columns = list(point_columns or [])
    points, ests, unit, layers, colors = _band_layout(plt, bands, point_columns, max_points)
    fig, axes = plt.subplots(len(ests), len(points), figsize=(4.4 * len(points), 3.9 * len(ests)),
                             squeeze=False, sharex="row", sharey="row")
    for r, est in enumerate(ests):
        for c, (key, label) in enumerate(points):
            ax = axes[r][c]
            sub = _select(bands[bands["estimator"] == est], point_columns, key)
            for layer, g in _per_layer(sub, layers):
                boxes = [Rectangle((x0, y0), x1 - x0, y1 - y0) for x0, x1, y0, y1 in
                         zip(g["i_xt_lo"], g["i_xt_hi"], g["i_ty_lo"], g["i_ty_hi"], strict=False)
                         if np.isfinite([x0, x1, y0, y1]).all()]
                if boxes:
                    ax.add_collection(PatchCollection(boxes, facecolor=colors[layer], alpha=0.12,
                                                      edgecolor="none", zorder=1))
                ax.plot(g["i_xt"], g["i_ty"], "-o", ms=2.5, lw=1.2, color=colors[layer], label=layer, zorder=2)
            n = int(sub["n"].max()) if len(sub) else 0
            ax.set_title(f"{est}: {label} (n={n})", fontsize=9)
            ax.set_xlabel(f"I(X;T) [{unit}]")
            ax.set_ylabel(f"I(T;Y) [{unit}]")
            ax.grid(alpha=0.3)
            ax.autoscale_view()
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Information plane: mean over seeds, 95% interval boxes", fontsize=10)
    return save_figure(fig, path, dpi=100)


def plot_trajectory_bands(bands: pd.DataFrame, path: str | Path, point_columns: list[str] | None = None,
                          *, max_points: int = 8) -> Path:
    """I(X;T) and I(T;Y) of each layer over epochs: mean and 95% band over seeds.

    Rows: (estimator, quantity); columns: grid points (the first ``max_points``).
    """
    plt = pyplot()
    path = Path(path)
    point_columns = list(point_columns or [])
    points, ests, unit, layers, colors = _band_layout(plt, bands, point_columns, max_points)
    rows = [(e, q) for e in ests for q in ("i_xt", "i_ty")]
    fig, axes = plt.subplots(len(rows), len(points), figsize=(4.4 * len(points), 2.9 * len(rows)),
                             squeeze=False, sharex=True, sharey="row")
    for r, (est, q) in enumerate(rows):
        for c, (key, label) in enumerate(points):
            ax = axes[r][c]
            for layer, g in _per_layer(_select(bands[bands["estimator"] == est], point_columns, key), layers):
                x = np.maximum(g["epoch"].to_numpy(), 1)
                ax.plot(x, g[q], color=colors[layer], lw=1.2, label=layer)
                ax.fill_between(x, g[f"{q}_lo"], g[f"{q}_hi"], color=colors[layer], alpha=0.2, lw=0)
            ax.set_xscale("log")
            ax.set_title(f"{est}: {label}", fontsize=9)
            ax.set_ylabel(f"{'I(X;T)' if q == 'i_xt' else 'I(T;Y)'} [{unit}]")
            ax.grid(alpha=0.3)
            if r == len(rows) - 1:
                ax.set_xlabel("epoch (epoch 0 drawn at 1)")
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path, dpi=100)


def plot_compression_vs_gap(per_run: pd.DataFrame, correlation: pd.DataFrame, path: str | Path) -> Path:
    """Per run: final compression of each layer vs generalization gap (train - test accuracy).

    One panel per estimator; the legend gives Spearman's rho per layer.
    """
    plt = pyplot()
    path = Path(path)
    ests = list(dict.fromkeys(per_run["estimator"]))
    layers = _layers(per_run)
    unit = per_run["unit"].iloc[0] if "unit" in per_run.columns and len(per_run) else "bits"
    colors = {layer: plt.cm.viridis(i / max(len(layers) - 1, 1)) for i, layer in enumerate(layers)}
    fig, axes = plt.subplots(1, len(ests), figsize=(5 * len(ests), 4), squeeze=False)
    for ax, est in zip(axes[0], ests, strict=False):
        sub = per_run[per_run["estimator"] == est]
        for layer in layers:
            g = sub[sub["layer"] == layer]
            row = correlation[(correlation["estimator"] == est) & (correlation["layer"] == layer)]
            rho = float(row["rho_acc"].iloc[0]) if len(row) else float("nan")
            ax.scatter(g["compression"], g["gap_acc"], s=14, color=colors[layer],
                       label=f"{layer} (rho={rho:.2f})" if np.isfinite(rho) else f"{layer} (rho n/a)")
        ax.set_title(est, fontsize=9)
        ax.set_xlabel(f"compression: max I(X;T) - final I(X;T) [{unit}]")
        ax.set_ylabel("generalization gap (train - test accuracy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)
