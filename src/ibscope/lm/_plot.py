"""Figure of the language-model measures: each measure by layer, one line per checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_lm_measures"]

REQUIRED = ("checkpoint", "step", "layer_index", "measure", "value", "unit")


def plot_lm_measures(results: pd.DataFrame, path: str | Path, *, dpi: int = 120) -> Path:
    """Draw each measure against layer depth, one line per checkpoint (coloured by training step).

    Parameters
    ----------
    results : pandas.DataFrame
        The table of :func:`ibscope.lm.analyze`; needs the columns
        ``checkpoint``, ``step``, ``layer_index``, ``measure``, ``value``,
        ``unit`` and uses ``value_lo`` / ``value_hi`` (error bars) and
        ``flags`` (hollow markers) when present.
    path : str or Path
        Image file to write (the format from its suffix).
    dpi : int, default 120

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        ``results`` lacks a required column or has no rows.
    """
    from ..plots import pyplot, save_figure

    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"'results' must be a pandas DataFrame, got {type(results).__name__}.")
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"'results' lacks the column(s) {missing} (it should be the table of ibscope.lm.analyze).")
    if results.empty:
        raise ValueError("'results' has no rows to plot.")
    plt = pyplot()
    measures = list(dict.fromkeys(results["measure"]))
    ckpts = results.drop_duplicates("checkpoint").sort_values(["step", "checkpoint"])[["checkpoint", "step"]]
    cmap = plt.get_cmap("viridis")
    colors = {c: cmap(i / max(1, len(ckpts) - 1)) for i, c in enumerate(ckpts["checkpoint"])}
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 3.4), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        sub = results[results["measure"] == measure]
        for label, step in ckpts.itertuples(index=False):
            g = sub[sub["checkpoint"] == label].sort_values("layer_index")
            if g.empty:
                continue
            x, y = g["layer_index"].to_numpy(float), g["value"].to_numpy(float)
            color = colors[label]
            ax.plot(x, y, "-", color=color, label=f"{label} (step {step})")
            if {"value_lo", "value_hi"} <= set(g.columns) and np.isfinite(g["value_lo"].to_numpy(float)).any():
                ax.fill_between(x, g["value_lo"].to_numpy(float), g["value_hi"].to_numpy(float), color=color,
                                alpha=0.2, linewidth=0)
            flagged = g["flags"].astype(str).ne("").to_numpy() if "flags" in g.columns else np.zeros(len(g), bool)
            ax.scatter(x[~flagged], y[~flagged], color=color, s=14, zorder=3)
            ax.scatter(x[flagged], y[flagged], facecolors="none", edgecolors=[color], s=22, zorder=3)
        units = ", ".join(dict.fromkeys(sub["unit"].astype(str)))
        ax.set_title(measure.replace("_", " "))
        hidden = "layer" in sub.columns and sub["layer"].astype(str).str.startswith("hidden_states").all()
        ax.set_xlabel("layer (0 = embeddings)" if hidden else "layer index")
        ax.set_ylabel(f"{measure.replace('_', ' ')} [{units}]")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   title="checkpoint (hollow: flagged)")
    return save_figure(fig, path, dpi=dpi, bbox_inches="tight")
