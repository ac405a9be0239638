"""Self-contained HTML reports (figures embedded as base64): the renderer.

This module only renders: it turns DataFrames, figure files and settings
into one ``report.html``, with the page helpers of :mod:`ibscope._html`
(shared with the claims' catalogue page: every value from data escaped). It reads no run directory and imports none of the
code that orchestrates runs (:mod:`ibscope.experiments.runner`,
:mod:`ibscope.sweep`); those collect their results, call the experiment's
figures and summaries, and hand the pieces to :func:`render_report`. Which
report a directory gets is decided by :func:`ibscope.reporting.build_report`
(``ibscope report DIR``), also reachable as ``ibscope.report.build_report``.

Pieces:

* :func:`render_report`: title, intro, :class:`Section` s (text, figures,
  tables) and the settings, written atomically;
* :func:`render_tracker_report`: the report of any run recorded by
  :class:`ibscope.InformationPlane` / :class:`ibscope.WeightInformation`
  (figures, a final-epoch table with the confidence intervals and the
  diagnostic flags, the recorded settings);
* :func:`plane_summary`, :func:`weight_summary`, :func:`flagged_estimates`,
  :func:`flag_legend` (what each flag in a table means):
  the tables those reports show.

Intervals: one run shows the estimators' own confidence intervals (columns
``i_xt_lo`` ... ``i_ty_hi`` at level ``ci_level``); several seeds show the
two-sided Student-t interval of the mean over seeds
(:func:`ibscope._intervals.mean_interval`), never mean +- std.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import _html
from ._intervals import mean_interval
from .store import atomic_write_text

__all__ = ["Section", "render_report", "render_tracker_report", "plane_summary", "weight_summary",
           "flagged_estimates", "flag_legend", "html_table", "html_figure"]

_PLANE_CI = ("i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi")


def __getattr__(name: str) -> Any:
    # ``ibscope.report.build_report`` / ``build_sweep_report`` are the dispatching entry points of
    # ibscope.reporting (which sits above the runner and the sweep). They are resolved on first use, so
    # that this module never imports the orchestration it is rendered by.
    if name in ("build_report", "build_sweep_report"):
        from . import reporting

        return getattr(reporting, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Section:
    """One section of a report.

    Attributes
    ----------
    title : str
        Its heading (plain text).
    text : str
        Plain text (escaped); blank lines separate paragraphs.
    figures : sequence of path-like
        PNG files, embedded (missing files are skipped).
    tables : sequence of DataFrame or (caption, DataFrame)
        Tables, each rendered in full.
    html : str
        Extra HTML, inserted as is (for ibscope's own, trusted fragments).
    """

    title: str
    text: str = ""
    figures: Sequence[str | Path] = field(default_factory=tuple)
    tables: Sequence[pd.DataFrame | tuple[str, pd.DataFrame]] = field(default_factory=tuple)
    html: str = ""

    @classmethod
    def coerce(cls, obj: Section | Mapping[str, Any]) -> Section:
        """A Section from itself or from a mapping with the same keys (what experiment hooks may return)."""
        if isinstance(obj, Section):
            return obj
        if isinstance(obj, Mapping):
            unknown = sorted(set(obj) - {"title", "text", "figures", "tables", "html"})
            if unknown or "title" not in obj:
                raise ValueError(f"A report section needs 'title' and only the keys title, text, figures, "
                                 f"tables, html; got {sorted(obj)}.")
            return cls(**obj)
        raise TypeError(f"A report section must be a Section or a mapping, got {type(obj).__name__}.")


def html_table(df: pd.DataFrame, caption: str = "") -> str:
    """A DataFrame as an HTML table (4 significant digits, NaN as blank, every cell escaped)."""
    return _html.dataframe_table(df, caption)


def html_figure(path: str | Path) -> str:
    """A PNG file embedded as a figure with its file name as the caption ('' if the file is missing).

    Only a regular PNG file is embedded: a symbolic link (planted in a run
    directory, its target could be any file of the user) or a file that is
    not a PNG gives a note instead of its bytes (:func:`ibscope._html.figure`).
    """
    return _html.figure(path)


def _section(s: Section) -> list[str]:
    parts = [f"<h2>{_html.escape(s.title)}</h2>", *_html.paragraphs(s.text)]
    if s.html:
        parts.append(s.html)
    parts += [f for f in (html_figure(p) for p in s.figures) if f]
    for t in s.tables:
        caption, df = t if isinstance(t, tuple) else ("", t)
        if len(df):
            parts.append(html_table(df, caption))
    return parts


def render_report(path: str | Path, *, title: str, intro: str = "", sections: Iterable[Section | Mapping] = (),
                  settings: Mapping[str, Any] | None = None, heading_html: str | None = None) -> Path:
    """Write a self-contained HTML report to ``path`` (atomically) and return the path.

    Parameters
    ----------
    path : path-like
        The ``report.html`` to write.
    title : str
        Page title and (unless ``heading_html``) the top heading.
    intro : str
        Plain text under the heading.
    sections : iterable of Section (or mappings with its keys)
    settings : mapping, optional
        Shown as JSON under "Settings" (values that are not JSON are shown as text).
    heading_html : str, optional
        A trusted HTML top heading replacing the escaped ``title``.
    """
    parts = [*_html.paragraphs(intro)]
    for s in sections:
        parts += _section(Section.coerce(s))
    if settings is not None:
        parts += ["<h2>Settings</h2>",
                  f"<pre>{_html.escape(json.dumps(dict(settings), indent=2, default=str))}</pre>"]
    page = _html.page(title, parts, heading_html=heading_html or None, style=_html.REPORT_STYLE)
    return atomic_write_text(Path(path), page)


# --------------------------------------------------------------------------- tables


def _flags(df: pd.DataFrame) -> pd.Series:
    return df["flags"].fillna("").astype(str) if "flags" in df.columns else pd.Series("", index=df.index)


def _join_flags(values: Iterable[str]) -> str:
    return ";".join(sorted({f for v in values for f in str(v).split(";") if f}))


def _last_epoch_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows at the last epoch of each ``keys`` group."""
    last = df.groupby(keys, sort=False, dropna=False)["epoch"].transform("max")
    return df[df["epoch"] == last]


def plane_summary(results: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """The final-epoch estimate of every (estimator, layer), with its interval and flags.

    One run: the row itself: ``i_xt`` [``i_xt_lo``, ``i_xt_hi``], ``i_ty``
    [``i_ty_lo``, ``i_ty_hi``] (the estimator's own CI, NaN when none was
    asked), ``ci_level``, ``flags``, ``n`` when present. Several seeds
    (``seed`` with more than one value): the mean over seeds with the
    two-sided Student-t interval of the mean at ``level`` (``interval`` column
    says which), the number of seeds and the union of the seeds' flags.
    Requires ``epoch``, ``layer``, ``i_xt``, ``i_ty``.
    """
    need = ["epoch", "layer", "i_xt", "i_ty"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise ValueError(f"'results' lacks the column(s) {missing}; the table needs {need}.")
    df = results.assign(flags=_flags(results))
    if "estimator" not in df.columns:
        df = df.assign(estimator="estimate")
    keys = ["estimator", *(["layer_index"] if "layer_index" in df.columns else []), "layer"]
    seeds = int(df["seed"].nunique()) if "seed" in df.columns else 1
    unit = [c for c in ("unit",) if c in df.columns]
    if seeds > 1:
        last = _last_epoch_rows(df, keys)
        out = mean_interval(last, keys, ["i_xt", "i_ty"], level=level, sort=False).rename(columns={"n": "seeds"})
        g = last.groupby(keys, sort=False, dropna=False)
        out.insert(len(keys), "epoch", g["epoch"].max().to_numpy())
        out["ci_level"] = level
        out["interval"] = "Student t over seeds"
        if unit:
            out["unit"] = g["unit"].first().to_numpy()
        out["flags"] = g["flags"].agg(_join_flags).to_numpy()
    else:
        last = _last_epoch_rows(df, keys)
        cols = [*keys, "epoch", "i_xt", *[c for c in ("i_xt_lo", "i_xt_hi") if c in df.columns], "i_ty",
                *[c for c in ("i_ty_lo", "i_ty_hi", "ci_level") if c in df.columns], *unit,
                *[c for c in ("n",) if c in df.columns], "flags"]
        out = last[cols].copy()
        if any(c in df.columns for c in _PLANE_CI):
            out.insert(out.columns.get_loc("flags"), "interval", "estimator CI")
    if "layer_index" in out.columns:
        out = out.sort_values(["estimator", "layer_index"], kind="stable").drop(columns="layer_index")
    return out.reset_index(drop=True)


def weight_summary(results: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """The final-epoch value of every (quantity, layer[, method]); with several seeds the mean and t-interval.

    Requires ``epoch``, ``quantity``, ``value``.
    """
    need = ["epoch", "quantity", "value"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise ValueError(f"'results' lacks the column(s) {missing}; the table needs {need}.")
    df = results[np.isfinite(pd.to_numeric(results["epoch"], errors="coerce"))]
    keys = ["quantity", *[c for c in ("layer", "method") if c in df.columns]]
    last = _last_epoch_rows(df, keys)
    seeds = int(df["seed"].nunique()) if "seed" in df.columns else 1
    if seeds > 1:
        out = mean_interval(last, keys, ["value"], level=level, sort=False).rename(columns={"n": "seeds"})
        g = last.groupby(keys, sort=False, dropna=False)
        out.insert(len(keys), "epoch", g["epoch"].max().to_numpy())
        out["ci_level"] = level
        out["interval"] = "Student t over seeds"
        if "unit" in last.columns:
            out["unit"] = g["unit"].first().to_numpy()
        return out
    cols = [*keys, "epoch", "value", *[c for c in ("unit",) if c in df.columns]]
    return last[cols].reset_index(drop=True)


def flagged_estimates(results: pd.DataFrame, *, limit: int = 100) -> pd.DataFrame:
    """The rows whose ``flags`` are not empty (the first ``limit``; empty when there is no flags column)."""
    if "flags" not in results.columns:
        return pd.DataFrame()
    rows = results[_flags(results) != ""]
    cols = [c for c in ("seed", "epoch", "estimator", "layer", "i_xt", "i_ty", "n", "flags") if c in rows.columns]
    return rows[cols].head(limit).reset_index(drop=True)


def flag_legend(results: pd.DataFrame) -> pd.DataFrame:
    """One row per flag in ``results``: ``flag``, ``rows`` (how many carry it), ``meaning``.

    ``meaning`` is :data:`ibscope.estimators.FLAG_DESCRIPTIONS` (the likely
    cause; '' for a flag it does not describe).
    """
    counts: dict[str, int] = {}
    for v in _flags(results):
        for f in dict.fromkeys(s for s in str(v).split(";") if s):
            counts[f] = counts.get(f, 0) + 1
    if not counts:
        return pd.DataFrame(columns=["flag", "rows", "meaning"])
    from .estimators._diagnostics import FLAG_DESCRIPTIONS

    return pd.DataFrame({"flag": list(counts), "rows": list(counts.values()),
                         "meaning": [FLAG_DESCRIPTIONS.get(f, "") for f in counts]})


# --------------------------------------------------------------------------- any run (tracker directories)


def render_tracker_report(out_dir: str | Path, *, plane: pd.DataFrame | None = None,
                          plane_settings: Mapping[str, Any] | None = None, weights: pd.DataFrame | None = None,
                          weight_settings: Mapping[str, Any] | None = None, title: str | None = None,
                          level: float = 0.95) -> Path:
    """Figures and ``out_dir/report.html`` of a run recorded by InformationPlane and/or WeightInformation.

    Parameters
    ----------
    out_dir : path-like
        Where the figures (``information_plane.png``, ``information_curves.png``,
        ``training_curves.png`` when the table has metrics,
        ``weight_information.png``) and ``report.html`` go.
    plane, weights : DataFrame, optional
        The information-plane and weight-information tables (at least one).
    plane_settings, weight_settings : mapping, optional
        The settings recorded next to each table (their JSON sidecars).
    title : str, optional
        Defaults to the directory's name.
    level : float
        Coverage of the intervals over seeds.
    """
    from . import plots

    if plane is None and weights is None:
        raise ValueError("Give at least one of 'plane' and 'weights' (the tables to report).")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"ibscope report: {out.resolve().name}"
    sections: list[Section] = []
    settings: dict[str, Any] = {}
    intro = []
    if plane is not None:
        if plane.empty:
            sections.append(Section("Information plane", "The information-plane table has no rows yet."))
        else:
            seeds = int(plane["seed"].nunique()) if "seed" in plane.columns else 1
            unit = str(plane["unit"].iloc[0]) if "unit" in plane.columns else "unit not recorded"
            figs = [plots.plot_information_plane(plane, out / "information_plane.png", level=level),
                    plots.plot_information_curves(plane, out / "information_curves.png", level=level)]
            if any(c in plane.columns for c in ("train_loss", "eval_loss", "test_loss", "train_acc", "eval_acc",
                                                "test_acc")):
                figs.append(plots.plot_training_curves(plane, out / "training_curves.png", level=level))
            how = (f"mean over {seeds} seeds with the {level:.0%} Student-t interval of the mean" if seeds > 1
                   else "one run; intervals are the estimators' own confidence intervals (NaN: none asked)")
            intro.append(f"Information plane: {len(plane)} rows, {seeds} seed(s), information in {unit}.")
            flagged = flagged_estimates(plane)
            sections.append(Section(
                "Information plane",
                f"Final epoch of every estimator and layer ({how}). Hollow markers in the figures and the "
                "flags column mark estimates with diagnostic flags ('' = healthy).",
                figures=figs, tables=[plane_summary(plane, level=level)]))
            if len(flagged):
                sections.append(Section("Flagged estimates", f"{int((plane['flags'].fillna('') != '').sum())} "
                                        f"flagged row(s) (first {len(flagged)} shown); what each flag means "
                                        "in the second table.", tables=[flagged, flag_legend(plane)]))
        if plane_settings:
            settings["information_plane"] = dict(plane_settings)
    if weights is not None:
        if weights.empty:
            sections.append(Section("Information in the weights", "The weight-information table has no rows yet."))
        else:
            seeds = int(weights["seed"].nunique()) if "seed" in weights.columns else 1
            fig = plots.plot_weight_information(weights, out / "weight_information.png", level=level)
            how = f"mean over {seeds} seeds with the {level:.0%} Student-t interval" if seeds > 1 else "one run"
            intro.append(f"Information in the weights: {len(weights)} rows, quantities "
                         f"{', '.join(map(str, dict.fromkeys(weights['quantity'])))}.")
            sections.append(Section("Information in the weights", f"Final epoch of every quantity ({how}).",
                                    figures=[fig], tables=[weight_summary(weights, level=level)]))
        if weight_settings:
            settings["weight_information"] = dict(weight_settings)
    return render_report(out / "report.html", title=title, intro="\n\n".join(intro), sections=sections,
                         settings=settings or None)
