"""Sweeps: many seeds and settings of an experiment, resumable, on a process pool or Ray.

A sweep runs an experiment (see :mod:`ibscope.experiments`) for every
combination of grid values and every seed; each (grid point, seed) is one task
that calls the experiment's ``run_seed`` in its own directory. Results go to a
checked, atomically written store that a crash, a kill or a second process
cannot corrupt, and are compacted into one tidy Parquet table.

Quick start::

    from ibscope.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("configs/tishby_demo.yaml"), "runs/sweep-demo", workers=2)

or ``ibscope sweep configs/tishby_demo.yaml --workers 2`` (see docs/sweeps.md).
"""

from __future__ import annotations

from ..store import DirectoryLocked
from ._aggregate import (
    common_grid,
    is_information_plane_table,
    mean_interval,
    summarize_points,
    trajectory_bands,
)
from ._executors import RAY_MISSING, InlineExecutor, LocalExecutor, RayExecutor, make_executor
from ._report import build_sweep_report
from ._run import SweepResult, plan_sweep, run_sweep
from ._spec import SweepSpec, Task, grid_points, load_spec, parse_grid_args, task_id
from ._store import SweepConfigMismatch, SweepStore

__all__ = [
    "SweepSpec", "Task", "load_spec", "parse_grid_args", "grid_points", "task_id",
    "SweepStore", "SweepConfigMismatch", "DirectoryLocked", "SweepResult", "plan_sweep", "run_sweep",
    "InlineExecutor", "LocalExecutor", "RayExecutor", "make_executor", "RAY_MISSING",
    "mean_interval", "common_grid", "trajectory_bands", "summarize_points", "is_information_plane_table",
    "build_sweep_report",
]
