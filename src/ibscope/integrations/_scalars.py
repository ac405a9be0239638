"""What the integrations log: one naming scheme for Lightning loggers and TensorBoard.

Shared by :mod:`ibscope.integrations.lightning` and
:mod:`ibscope.integrations.tensorboard` (imports only pandas and numpy, so
either extra can use it without the other):

* :func:`plane_scalars`: ``<prefix>/<estimator>/<layer>/i_xt`` and ``i_ty``,
  ``i_xt_lo``, ``i_xt_hi``, ``i_ty_lo``, ``i_ty_hi`` where the table has
  finite interval bounds, and ``<prefix>/<estimator>/<layer>/n_flags`` (the
  number of diagnostic flags of that estimate, 0 when healthy) when the table
  has a ``flags`` column;
* :func:`weight_scalars`: ``<prefix>/weights/<quantity>/<layer>``;
* :func:`flags_markdown`: the flagged estimates as a Markdown table (for a
  logger's text panel);
* :func:`add_plane_figure`: the information-plane figure on a writer with
  ``add_figure`` (TensorBoard's ``SummaryWriter``).

Values are in the unit of the table's ``unit`` column (:func:`table_unit`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

PREFIX = "ibscope"
PLANE_COLUMNS = ("epoch", "layer", "estimator", "i_xt", "i_ty")
WEIGHT_COLUMNS = ("epoch", "quantity", "value")
_BOUNDS = ("i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi")


def check_columns(results: Any, required: tuple[str, ...], what: str) -> None:
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"'results' must be a pandas DataFrame (the {what} table), got {type(results).__name__}.")
    for col in required:
        if col not in results.columns:
            raise ValueError(f"'results' lacks the column {col!r} of the {what} table.")


def _flag_list(v: Any) -> list[str]:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return []
    return [f for f in str(v).split(";") if f]


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def plane_scalars(rows: pd.DataFrame, prefix: str = PREFIX) -> dict[str, float]:
    """The scalars of information-plane rows (one epoch's rows; keys in the module docstring)."""
    out: dict[str, float] = {}
    columns = [c for c in ("i_xt", "i_ty", *_BOUNDS) if c in rows.columns]
    has_flags = "flags" in rows.columns
    for r in rows.to_dict("records"):
        base = f"{prefix}/{r['estimator']}/{r['layer']}"
        for c in columns:
            v = _finite(r[c])
            if v is not None:
                out[f"{base}/{c}"] = v
        if has_flags:
            out[f"{base}/n_flags"] = float(len(_flag_list(r["flags"])))
    return out


def weight_scalars(rows: pd.DataFrame, prefix: str = PREFIX) -> dict[str, float]:
    """The scalars ``<prefix>/weights/<quantity>/<layer>`` of weight-information rows."""
    out: dict[str, float] = {}
    for r in rows.to_dict("records"):
        v = _finite(r["value"])
        if v is not None:
            out[f"{prefix}/weights/{r['quantity']}/{r.get('layer', 'total')}"] = v
    return out


def table_unit(rows: pd.DataFrame) -> str:
    """The unit(s) of a table's ``unit`` column, ','-joined ('' when it has none)."""
    if "unit" not in rows.columns:
        return ""
    return ",".join(sorted(rows["unit"].dropna().astype(str).unique()))


def flags_markdown(rows: pd.DataFrame) -> str:
    """A Markdown table of the flagged estimates among ``rows`` ('' when none is flagged)."""
    if "flags" not in rows.columns:
        return ""
    lines = []
    for r in rows.to_dict("records"):
        flags = _flag_list(r["flags"])
        if flags:
            lines.append(f"| {r['epoch']} | {r['estimator']} | {r['layer']} | {', '.join(flags)} |")
    if not lines:
        return ""
    return "\n".join(["| epoch | estimator | layer | flags |", "|---|---|---|---|", *lines])


def add_plane_figure(writer: Any, results: pd.DataFrame, tag: str, step: int) -> None:
    """:func:`ibscope.plots.plot_information_plane` of ``results`` as the figure ``tag`` at ``step``."""
    from .. import plots
    from ..tracking._plane import for_plot

    fig = plots._plane_figure(for_plot(results))
    writer.add_figure(tag, fig, global_step=int(step), close=True)
