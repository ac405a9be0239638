"""Figures and statistics of the tishby experiment (its ``summarize``, ``plot`` and ``sweep_sections`` hooks).

Kept apart from the training code in :mod:`ibscope.experiments._tishby`,
which re-exports these hooks. They work on the experiment's tidy rows
(seed, epoch, layer, layer_index, estimator, i_xt, i_ty, unit, and the
metrics train_loss, train_acc and test_loss/test_acc or eval_loss/eval_acc).

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
from pathlib import Path

import numpy as np
import pandas as pd

from .._intervals import PLANE_COLUMNS, is_information_plane_table, mean_interval

__all__ = ["summarize", "plot", "compression_statistics", "plot_compression_vs_gap", "sweep_sections"]


def _held_out(results: pd.DataFrame) -> str | None:
    """'test' or 'eval': the prefix of the held-out metric columns present (None if neither)."""
    for prefix in ("test", "eval"):
        if {f"{prefix}_acc", f"{prefix}_loss"} <= set(results.columns):
            return prefix
    return None


def summarize(results: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Final-epoch I(X;T), I(T;Y) (and held-out accuracy) per estimator and layer: the mean over seeds
    with its two-sided Student-t interval at ``level`` (NaN with one seed) and the seeds' flags."""
    if results.empty:
        return results
    last = results[results["epoch"] == results["epoch"].max()]
    keys = ["estimator", "layer_index", "layer", "unit"]
    held = _held_out(last)
    values = ["i_xt", "i_ty", *([f"{held}_acc"] if held else [])]
    out = mean_interval(last, keys, values, level=level).rename(columns={"n": "seeds"})
    out["interval"] = f"{level:.0%} Student t over seeds"
    if "flags" in last.columns:
        flags = last.groupby(keys, dropna=False)["flags"].agg(
            lambda s: ";".join(sorted({f for v in s.fillna("") for f in str(v).split(";") if f})))
        out = out.merge(flags.reset_index(), on=keys, how="left")
    return out.drop(columns="layer_index")


def plot(results: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """infoplane.png (per estimator: trajectories; several seeds: means with t-interval boxes),
    infocurves.png (I(X;T), I(T;Y) over epochs) and curves.png (losses and accuracies)."""
    from ..plots import plot_information_curves, plot_information_plane, plot_training_curves

    out_dir = Path(out_dir)
    return [plot_information_plane(results, out_dir / "infoplane.png"),
            plot_information_curves(results, out_dir / "infocurves.png"),
            plot_training_curves(results, out_dir / "curves.png")]


def compression_statistics(results: pd.DataFrame, point_columns: Sequence[str] = ()
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compression of each layer vs the generalization gap, per run and as rank correlations.

    For each run (grid point, seed), estimator and layer:

    * ``compression`` = max over epochs of I(X;T) - I(X;T) at the last epoch
      (>= 0; 0 means the layer never compressed) [1]_;
    * ``gap_acc`` = train accuracy - held-out accuracy at the last epoch;
      ``gap_loss`` = held-out loss - train loss at the last epoch (held out:
      the test_* columns, or eval_* where there are no test_* columns).

    Across runs, per (estimator, layer): Spearman's rank correlation of
    compression with each gap (rho, two-sided p value, number of runs).
    Positive rho: runs that compress more generalize worse; the compression
    claim [1]_ predicts a negative rho, which [2]_ disputes.

    Returns
    -------
    per_run : DataFrame
        One row per (point, seed, estimator, layer).
    correlation : DataFrame
        One row per (estimator, layer): n, compression_mean, rho_acc, p_acc,
        rho_loss, p_loss (NaN with fewer than 3 runs or a constant column).
    """
    from scipy import stats

    held = _held_out(results)
    needed = {"train_acc", "train_loss", "seed"}
    if not is_information_plane_table(results) or not needed <= set(results.columns) or held is None:
        raise ValueError(f"'results' needs columns {sorted(set(PLANE_COLUMNS) | needed)} and test_acc/test_loss "
                         "(or eval_acc/eval_loss): tishby-like results.")
    run = [*point_columns, "seed"]
    keys = [*run, "estimator", "layer"]
    r = results.sort_values("epoch", kind="stable")
    g = r.groupby(keys, sort=False, dropna=False)
    per = g.agg(i_xt_max=("i_xt", "max"), i_xt_final=("i_xt", "last"), i_ty_final=("i_ty", "last"),
                final_epoch=("epoch", "last"), train_acc=("train_acc", "last"), test_acc=(f"{held}_acc", "last"),
                train_loss=("train_loss", "last"), test_loss=(f"{held}_loss", "last")).reset_index()
    per["compression"] = per["i_xt_max"] - per["i_xt_final"]
    per["gap_acc"] = per["train_acc"] - per["test_acc"]
    per["gap_loss"] = per["test_loss"] - per["train_loss"]
    if "layer_index" in results.columns:
        per = per.merge(results[["layer", "layer_index"]].drop_duplicates("layer"), on="layer", how="left")
    if "unit" in results.columns:
        per["unit"] = results["unit"].iloc[0]
    rows = []
    for (est, layer), s in per.groupby(["estimator", "layer"], sort=False):
        row = {"estimator": est, "layer": layer, "n": len(s), "compression_mean": float(s["compression"].mean())}
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


def plot_compression_vs_gap(per_run: pd.DataFrame, correlation: pd.DataFrame, path: str | Path) -> Path:
    """Per run: final compression of each layer vs generalization gap (train - held-out accuracy).

    One panel per estimator; the legend gives Spearman's rho per layer. Takes
    the two tables of :func:`compression_statistics`.
    """
    from ..plots import pyplot, save_figure

    plt = pyplot()
    ests = list(dict.fromkeys(per_run["estimator"]))
    if "layer_index" in per_run.columns:
        layers = list(per_run.sort_values("layer_index", kind="stable")["layer"].drop_duplicates())
    else:
        layers = list(dict.fromkeys(per_run["layer"]))
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
        ax.set_ylabel("generalization gap (train - held-out accuracy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)


def sweep_sections(results: pd.DataFrame, point_columns: Sequence[str], out_dir: str | Path) -> list[dict]:
    """The sweep report's "Compression vs generalization" section (none when there are too few runs).

    Hook of the experiment contract (see :mod:`ibscope.experiments`).
    """
    try:
        per_run, corr = compression_statistics(results, point_columns)
    except ValueError:
        return []
    if not len(corr):
        return []
    axes = list(point_columns)
    fig = plot_compression_vs_gap(per_run, corr, Path(out_dir) / "sweep_compression.png")
    per_point = per_run.groupby([*axes, "estimator", "layer"], sort=False)[
        ["compression", "gap_acc", "gap_loss", "test_acc"]].mean().reset_index()
    unit = per_run["unit"].iloc[0] if "unit" in per_run.columns else "unit not recorded"
    return [{
        "title": "Compression vs generalization",
        "text": (f"compression = max over epochs of I(X;T) - final I(X;T) ({unit}); gap_acc = train - held-out "
                 "accuracy; gap_loss = held-out - train loss (nats), at the last epoch. Spearman rank correlation "
                 "over all runs (points x seeds); the second table is the mean over seeds per point."),
        "figures": [fig],
        "tables": [("Spearman correlation per estimator and layer", corr), ("Per point (mean over seeds)", per_point)],
    }]
