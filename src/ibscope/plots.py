"""Figures: information planes and training curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_information_plane", "plot_training_curves"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_information_plane(results: pd.DataFrame, path: str | Path) -> Path:
    """One panel per estimator: each layer's trajectory (mean over seeds) colored by epoch (log scale).

    Expects columns estimator, layer, layer_index, epoch, i_xt, i_ty, unit.
    """
    plt = _plt()
    from matplotlib.colors import LogNorm

    path = Path(path)
    names = list(dict.fromkeys(results["estimator"]))
    unit = results["unit"].iloc[0] if len(results) else "bits"
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4), squeeze=False)
    mean = results.groupby(["estimator", "layer_index", "layer", "epoch"], as_index=False)[["i_xt", "i_ty"]].mean()
    emax = max(int(mean["epoch"].max()), 1) if len(mean) else 1
    norm = LogNorm(vmin=1, vmax=emax)
    sc = None
    for ax, name in zip(axes[0], names):
        sub = mean[mean["estimator"] == name]
        for (li, layer), g in sub.groupby(["layer_index", "layer"]):
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
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(results: pd.DataFrame, path: str | Path) -> Path:
    """Train/test loss and accuracy over epochs (mean and range over seeds)."""
    plt = _plt()
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
