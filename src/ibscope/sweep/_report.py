"""The sweep report: task counts and failures, trajectories over seeds, the experiment's own summaries.

It collects what the sweep directory holds, computes the generic aggregates
(:mod:`ibscope._intervals`), calls the experiment's hooks (``summarize`` per
grid point and, if it has one, ``sweep_sections``; see
:mod:`ibscope.experiments`) and hands everything to the renderer
(:func:`ibscope.report.render_report`).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .._intervals import is_information_plane_table, trajectory_bands
from ..experiments.runner import load_experiment
from ..report import Section, render_report
from ._aggregate import summarize_points
from ._store import SweepStore

__all__ = ["build_sweep_report"]


def build_sweep_report(sweep_dir: str | Path, *, max_points: int = 8) -> Path:
    """(Re)build the figures and ``report.html`` of a sweep directory; returns the report path.

    Contents: task counts and failures (last traceback line); for
    information-plane results the mean trajectories with 95% Student-t
    intervals over seeds (information plane and over epochs); the sections of
    the experiment's ``sweep_sections`` hook (e.g. the tishby experiment's
    compression vs generalization); the experiment's own summary per grid
    point; the sweep's settings.
    """
    from ..plots import plot_information_plane_bands, plot_trajectory_bands

    store = SweepStore(sweep_dir)
    meta = store.read_meta()
    if meta is None:
        raise FileNotFoundError(f"'{sweep_dir}' is not a sweep directory (no sweep.json); argument 'sweep_dir'.")
    tasks = store.read_manifest()
    if not store.results_current(tasks):  # figures never come from a stale table: rebuild it from the tasks
        store.compact(tasks, meta["sweep_hash"])
    results = store.results()
    status = store.write_status(tasks)
    damaged = store.damaged(tasks)
    axes = [a for a in meta["grid"] if a in results.columns]
    d = store.directory
    counts = status["counts"]
    intro = [f"{counts['done']} of {len(tasks)} task(s) finished, {counts['failed']} failed, {counts['pending']} "
             f"pending; seeds {meta['seeds']}; sweep hash {meta['sweep_hash']}."]
    if meta["grid"]:
        intro.append("Grid: " + "; ".join(f"{k} = {v}" for k, v in meta["grid"].items()) + ".")
    sections: list[Section] = []
    if damaged:
        intro.append(f"{len(damaged)} task result(s) are damaged and left out of every table and figure (counted "
                     "as pending); run the sweep again to recompute them.")
        table = pd.DataFrame({"task": list(damaged), "why": list(damaged.values())})
        sections.append(Section("Damaged task results", "Each file was truncated or edited after ibscope wrote it; "
                                "running the same sweep again into this directory recomputes these tasks (the "
                                "finished ones are kept).", tables=[table]))
    if status["errors"]:
        failed = pd.DataFrame({"task": list(status["errors"]), "last error": list(status["errors"].values())})
        sections.append(Section("Failed tasks", "Full tracebacks: tasks/<task>/error.json.", tables=[failed]))
    if len(results):
        mod = load_experiment(meta["experiment"])
        n_points = len(results[axes].drop_duplicates()) if axes else 1
        note = f"Figures show the first {max_points} of {n_points} grid points." if n_points > max_points else ""
        if is_information_plane_table(results):
            unit = results["unit"].iloc[0] if "unit" in results.columns else "unit not recorded"
            bands = trajectory_bands(results, axes)
            figs = [plot_information_plane_bands(bands, d / "sweep_infoplane.png", axes, max_points=max_points),
                    plot_trajectory_bands(bands, d / "sweep_trajectories.png", axes, max_points=max_points)]
            sections.append(Section(
                "Trajectories (mean and 95% interval over seeds)",
                f"Information in {unit}; each seed's trajectory is put on the common epoch grid of its point "
                f"(linear in log(1+epoch)); interval: two-sided Student t of the mean over seeds.\n\n{note}",
                figures=figs))
        hook = getattr(mod, "sweep_sections", None)
        if hook is not None:
            sections += [Section.coerce(s) for s in hook(results, axes, d)]
        summary = summarize_points(results, mod, axes)
        if len(summary):
            sections.append(Section("Summary per grid point (the experiment's own summary)", tables=[summary]))
    sections.append(Section("Results", f"Tidy results: results.parquet ({len(results)} rows, one column per grid "
                                       "axis)."))
    settings = {k: meta[k] for k in ("experiment", "profile", "config", "grid", "seeds")}
    return render_report(
        d / "report.html", title=f"ibscope sweep: {d.name}",
        heading_html=(f"<h1>ibscope: {html.escape(str(meta['experiment']))} sweep "
                      f"<code>{html.escape(d.name)}</code></h1>"),
        intro="\n\n".join(intro), sections=sections, settings=settings)
