"""Which report a directory gets: :func:`build_report` (``ibscope report DIR``).

The layers, each importing only those before it (no import cycles)::

    ibscope.report            renders (DataFrames, figure files, settings -> report.html)
    ibscope.experiments.runner    runs an experiment; build_run_report(run_dir)
    ibscope.sweep             runs grids x seeds; build_sweep_report(sweep_dir)
    ibscope.reporting         this module: looks at a directory and calls the right one
    ibscope.cli

A directory is, in this order of precedence:

* a sweep directory (``sweep.json``) -> :func:`ibscope.sweep.build_sweep_report`;
* an experiment run directory (``config.json``) -> :func:`ibscope.experiments.runner.build_run_report`;
* a directory written by :class:`ibscope.InformationPlane` and/or
  :class:`ibscope.WeightInformation` (``information_plane.parquet``,
  ``weight_information.parquet``, each with its JSON sidecar) ->
  :func:`build_tracker_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .experiments.runner import build_run_report
from .report import render_tracker_report
from .store import PartedTable
from .sweep import build_sweep_report

__all__ = ["build_report", "build_sweep_report", "build_run_report", "build_tracker_report", "directory_kind",
           "read_tracker_dir", "TRACKER_TABLES"]

#: table file -> (its JSON sidecar, the sidecar's format name)
TRACKER_TABLES = {
    "information_plane.parquet": ("information_plane.json", "ibscope.information_plane"),
    "weight_information.parquet": ("weight_information.json", "ibscope.weight_information"),
}
_LOOKED_FOR = ("sweep.json (a sweep)", "config.json (an experiment run)",
               "information_plane.parquet and/or weight_information.parquet (a run recorded by "
               "InformationPlane / WeightInformation)")


def directory_kind(directory: str | Path) -> str:
    """'sweep', 'run' or 'tracker' (see the module docstring); a clear FileNotFoundError otherwise."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"'{d}' is not a directory (argument 'directory').")
    if (d / "sweep.json").is_file():
        return "sweep"
    if (d / "config.json").is_file():
        return "run"
    if any((d / name).is_file() for name in TRACKER_TABLES) or (d / "information_plane.parts").is_dir():
        return "tracker"  # (a plane not yet compacted has only its per-snapshot parts)
    raise FileNotFoundError(f"'{d}' holds nothing to report: looked for " + "; ".join(_LOOKED_FOR) + ".")


def build_report(directory: str | Path) -> Path:
    """(Re)build the figures and ``report.html`` of a sweep, run or tracker directory; returns the report path."""
    kind = directory_kind(directory)
    if kind == "sweep":
        return build_sweep_report(directory)
    if kind == "run":
        return build_run_report(directory)
    return build_tracker_report(directory)


def _read_sidecar(path: Path, fmt: str) -> dict[str, Any]:
    if not path.is_file():
        return {}
    from .store import read_json

    meta = read_json(path, what="the table's sidecar", hint="Rerun the measurement (overwrite=True) to rewrite it.")
    got = meta.get("format")
    if got is not None and not str(got).startswith(fmt + "/"):
        raise ValueError(f"'{path}' has format {got!r}; expected '{fmt}/<version>'.")
    return meta


def read_tracker_dir(directory: str | Path) -> dict[str, Any]:
    """The tables and settings of a tracker directory.

    Returns ``{"plane": DataFrame | None, "plane_settings": dict,
    "weights": DataFrame | None, "weight_settings": dict}`` (a missing
    sidecar gives ``{}``).
    """
    d = Path(directory)
    out: dict[str, Any] = {}
    for (table, (sidecar, fmt)), key in zip(TRACKER_TABLES.items(), ("plane", "weight"), strict=True):
        path = d / table
        df = None
        parted = PartedTable(path)
        if key == "plane" and parted.parts_dir.is_dir():  # the compacted table plus the parts its json lists
            df = parted.read()
        elif path.is_file():
            try:
                df = pd.read_parquet(path)
            except Exception as e:  # pyarrow raises its own types for a damaged file
                raise ValueError(f"'{path}' is not a readable Parquet table ({type(e).__name__}: {e}).") from None
        out["plane" if key == "plane" else "weights"] = df
        out[f"{key}_settings"] = _read_sidecar(d / sidecar, fmt) if df is not None else {}
    return out


def build_tracker_report(directory: str | Path) -> Path:
    """Figures and ``report.html`` of a directory written by InformationPlane / WeightInformation."""
    d = Path(directory)
    if not any((d / name).is_file() for name in TRACKER_TABLES) and not (d / "information_plane.parts").is_dir():
        raise FileNotFoundError(f"'{d}' has neither {' nor '.join(TRACKER_TABLES)} (argument 'directory').")
    return render_tracker_report(d, **read_tracker_dir(d))
