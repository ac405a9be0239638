"""Self-contained HTML reports (figures embedded as base64) of a run or a sweep directory."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from .store import atomic_write_text

__all__ = ["build_report", "build_sweep_report"]

_STYLE = ("<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
          "img{max-width:100%}figure{margin:1em 0}pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>")


def _head(title: str) -> list[str]:
    return ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
            _STYLE, "</head><body>"]


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"/><figcaption>{html.escape(path.name)}</figcaption></figure>'


def build_report(run_dir: str | Path) -> Path:
    """(Re)build figures and ``report.html`` from the stored results of a run; returns the report path."""
    from .experiments.runner import collect_results, load_experiment

    run_dir = Path(run_dir)
    if (run_dir / "sweep.json").is_file():
        return build_sweep_report(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory (no config.json); argument 'run_dir'.")
    record = json.loads(cfg_path.read_text())
    mod = load_experiment(record["experiment"])
    results = collect_results(run_dir)
    if results.empty:
        raise ValueError(f"'{run_dir}' has no finished seed yet; nothing to report.")
    figures = mod.plot(results, run_dir)
    summary = mod.summarize(results) if hasattr(mod, "summarize") else pd.DataFrame()
    n_seeds = results["seed"].nunique()
    unit = results["unit"].iloc[0] if "unit" in results else ""
    parts = [
        *_head(f"ibscope report: {run_dir.name}"),
        f"<h1>ibscope: {html.escape(record['experiment'])} run <code>{html.escape(run_dir.name)}</code></h1>",
        f"<p>{n_seeds} seed(s); information in <b>{html.escape(str(unit))}</b>; config hash "
        f"<code>{html.escape(record['config_hash'])}</code>.</p>",
        "<h2>Figures</h2>",
        *[_img(p) for p in figures if Path(p).is_file()],
    ]
    if len(summary):
        parts += ["<h2>Summary (final epoch, mean over seeds)</h2>",
                  _table(summary)]
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(record['config'], indent=2))}</pre>",
              f"<p>Tidy results: <code>{html.escape(str((run_dir / 'results.parquet').name))}</code> "
              f"({len(results)} rows).</p>", "</body></html>"]
    return atomic_write_text(run_dir / "report.html", "\n".join(parts))


def build_sweep_report(sweep_dir: str | Path, *, max_points: int = 8) -> Path:
    """(Re)build the figures and ``report.html`` of a sweep directory; returns the report path.

    Contents: task counts and failures (last traceback line), the experiment's
    own summary per grid point, and for information-plane results the mean
    trajectories with 95% intervals over seeds (information plane and over
    epochs) and final compression vs generalization gap with Spearman's rho.
    """
    from .experiments.runner import load_experiment
    from .plots import plot_compression_vs_gap, plot_information_plane_bands, plot_trajectory_bands
    from .sweep import (
        SweepStore,
        is_information_plane_table,
        summarize_points,
        tishby_compression_statistics,
        trajectory_bands,
    )

    store = SweepStore(sweep_dir)
    meta = store.read_meta()
    if meta is None:
        raise FileNotFoundError(f"'{sweep_dir}' is not a sweep directory (no sweep.json); argument 'sweep_dir'.")
    tasks = store.read_manifest()
    if not store.results_path.is_file():
        store.compact(tasks, meta["sweep_hash"])
    results = store.results()
    status = store.write_status(tasks)
    axes = [a for a in meta["grid"] if a in results.columns]
    d = store.directory
    parts = [*_head(f"ibscope sweep: {d.name}"),
             f"<h1>ibscope: {html.escape(meta['experiment'])} sweep <code>{html.escape(d.name)}</code></h1>",
             f"<p>{status['counts']['done']} of {len(tasks)} task(s) finished, {status['counts']['failed']} failed, "
             f"{status['counts']['pending']} pending; seeds {html.escape(str(meta['seeds']))}; sweep hash "
             f"<code>{html.escape(meta['sweep_hash'])}</code>.</p>"]
    if meta["grid"]:
        parts += ["<p>Grid: " + "; ".join(f"<b>{html.escape(k)}</b> = {html.escape(str(v))}"
                                          for k, v in meta["grid"].items()) + "</p>"]
    if status["errors"]:
        failed = pd.DataFrame({"task": list(status["errors"]), "last error": list(status["errors"].values())})
        parts += ["<h2>Failed tasks</h2>", "<p>Full tracebacks: <code>tasks/&lt;task&gt;/error.json</code>.</p>",
                  failed.to_html(index=False)]
    if len(results):
        mod = load_experiment(meta["experiment"])
        n_points = len(results[axes].drop_duplicates()) if axes else 1
        note = (f"<p>Figures show the first {max_points} of {n_points} grid points.</p>"
                if n_points > max_points else "")
        if is_information_plane_table(results):
            unit = results["unit"].iloc[0] if "unit" in results.columns else ""
            bands = trajectory_bands(results, axes)
            figs = [plot_information_plane_bands(bands, d / "sweep_infoplane.png", axes, max_points=max_points),
                    plot_trajectory_bands(bands, d / "sweep_trajectories.png", axes, max_points=max_points)]
            parts += ["<h2>Trajectories (mean and 95% interval over seeds)</h2>",
                      f"<p>Information in <b>{html.escape(str(unit))}</b>; each seed's trajectory is put on "
                      "the common epoch grid of its point (linear in log(1+epoch)); interval: Student t.</p>",
                      note, *[_img(p) for p in figs]]
            try:
                per_run, corr = tishby_compression_statistics(results, axes)
            except ValueError:
                per_run = corr = pd.DataFrame()
            if len(corr):
                fig = plot_compression_vs_gap(per_run, corr, d / "sweep_compression.png")
                per_point = per_run.groupby([*axes, "estimator", "layer"], sort=False)[
                    ["compression", "gap_acc", "gap_loss", "test_acc"]].mean().reset_index()
                parts += ["<h2>Compression vs generalization</h2>",
                          f"<p>compression = max over epochs of I(X;T) - final I(X;T) ({html.escape(str(unit))}); "
                          "gap_acc = train - test accuracy; gap_loss = test - train loss (nats), at the last "
                          "epoch. Spearman rank correlation over all runs (points x seeds).</p>",
                          _table(corr), _img(fig), "<h3>Per point (mean over seeds)</h3>", _table(per_point)]
        summary = summarize_points(results, mod, axes)
        if len(summary):
            parts += ["<h2>Summary per grid point (the experiment's own summary)</h2>", _table(summary)]
    parts += ["<h2>Configuration</h2>",
              f"<pre>{html.escape(json.dumps({k: meta[k] for k in ('experiment', 'profile', 'config', 'grid', 'seeds')}, indent=2, default=str))}</pre>",
              f"<p>Tidy results: <code>results.parquet</code> ({len(results)} rows, one column per grid axis).</p>",
              "</body></html>"]
    return atomic_write_text(d / "report.html", "\n".join(parts))
