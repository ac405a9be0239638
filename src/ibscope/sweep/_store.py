"""The on-disk layout of one sweep and the reading/writing of its pieces.

::

    <sweep>/
      .lock              held (fcntl.flock) by the driver while it runs
      sweep.json         experiment, profile, base settings, grid, seeds, sweep hash
      manifest.json      every task: task_id, grid point, seed, config hash
      batches.json       the seed-batching plan: which tasks run together, under which name
      batches/<name>/    one batch's run_seeds checkpoint and partial rows
      tasks/<task_id>/   the task's own directory (run_seed's checkpoints, side files)
        task.json          which task and config the directory holds
        result.parquet     the finished rows (atomic write)
        result.json        sidecar: rows, bytes, sha256, config hash, attempt, seconds
        error.json         every failed attempt with its traceback (absent if none failed)
      results.parquet    all finished tasks, compacted (task_id, config_hash, point columns)
      status.json        done / failed / pending task ids after the last run
      report.html, *.png the sweep report

A task is finished iff its result file matches its sidecar (size, sha256) and
the sidecar names the task's config hash: a partial, damaged or stale file is
never taken for a result, and the task is run again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..store import (
    DamagedFile,
    atomic_write_json,
    checked_parquet_ok,
    checked_parquet_state,
    concat_parquet_files,
    read_json,
)
from ._spec import Task

__all__ = ["SweepStore", "SweepConfigMismatch"]


_META_KEYS = {"experiment": str, "profile": (str, type(None)), "config": dict, "grid": dict, "seeds": list,
              "sweep_hash": str}


class SweepConfigMismatch(ValueError):
    """The sweep directory holds a sweep of another configuration."""


class SweepStore:
    """Paths and records of one sweep directory (no locking: the driver holds the lock)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).resolve()

    # paths ------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.directory / "sweep.json"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def results_path(self) -> Path:
        return self.directory / "results.parquet"

    @property
    def status_path(self) -> Path:
        return self.directory / "status.json"

    @property
    def batches_path(self) -> Path:
        return self.directory / "batches.json"

    def task_dir(self, task: Task | str) -> Path:
        return self.directory / "tasks" / (task if isinstance(task, str) else task.task_id)

    def is_sweep(self) -> bool:
        return self.meta_path.is_file()

    # records ----------------------------------------------------------------
    def read_meta(self) -> dict[str, Any] | None:
        """``sweep.json``, or None for a directory that holds no sweep yet."""
        if not self.meta_path.is_file():
            return None
        return read_json(self.meta_path, what="the sweep record", required=_META_KEYS, hint=(
            "Delete it and run the sweep again: it is rewritten from the sweep file, and finished "
            "tasks are kept (each result is checked against its config hash)."))

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        atomic_write_json(self.meta_path, dict(meta))

    def read_manifest(self) -> list[Task]:
        if not self.manifest_path.is_file():
            return []
        hint = ("Delete it and run the sweep again: it is rebuilt from the sweep file (tasks that only "
                "the old manifest listed are then left out of results.parquet, their directories are kept).")
        data = read_json(self.manifest_path, what="the sweep's task manifest", hint=hint)
        try:
            tasks = [Task(t["task_id"], dict(t["point"]), int(t["seed"]), t["config_hash"]) for t in data["tasks"]]
        except (KeyError, TypeError, ValueError) as e:
            raise DamagedFile(f"The sweep's task manifest '{self.manifest_path}' is damaged: an entry lacks or "
                              f"garbles {e}. {hint}") from None
        for t in tasks:  # a task id names a directory under tasks/: never a path
            tid = t.task_id
            if not _plain_name(tid):
                raise DamagedFile(f"The sweep's task manifest '{self.manifest_path}' is damaged: the task id {tid!r} "
                                  f"is not a directory name under tasks/. {hint}")
        return tasks

    def write_manifest(self, tasks: Iterable[Task]) -> None:
        atomic_write_json(self.manifest_path, {"tasks": [t.as_dict() for t in tasks]})

    def read_batches(self) -> list[dict[str, Any]]:
        """The persisted seed-batching plan (``batches.json``): one record per planned unit.

        Each record holds ``name`` (its directory under ``batches/``; None for
        a task that runs alone), ``config_hash``, ``task_ids`` (in the order
        their seeds are batched) and ``failed`` (the batch raised: its tasks
        run one by one from then on). An absent file is an empty plan.
        """
        if not self.batches_path.is_file():
            return []
        hint = ("Delete it and run the sweep again: the unfinished tasks are then planned afresh (an "
                "interrupted batch may then start over instead of resuming from its checkpoint).")
        data = read_json(self.batches_path, what="the sweep's batch plan", hint=hint, required={"batches": list})
        out = []
        for b in data["batches"]:
            ok = (isinstance(b, dict) and isinstance(b.get("task_ids"), list) and b["task_ids"]
                  and all(isinstance(t, str) for t in b["task_ids"]) and isinstance(b.get("config_hash"), str)
                  and isinstance(b.get("failed", False), bool)
                  and (b.get("name") is None or _plain_name(b.get("name"))))
            if not ok:
                raise DamagedFile(f"The sweep's batch plan '{self.batches_path}' is damaged: the entry {b!r} is "
                                  f"not a batch record. {hint}")
            out.append({"name": b.get("name"), "config_hash": b["config_hash"], "task_ids": list(b["task_ids"]),
                        "failed": bool(b.get("failed", False))})
        return out

    def write_batches(self, batches: Iterable[Mapping[str, Any]]) -> None:
        atomic_write_json(self.batches_path, {"batches": [dict(b) for b in batches]})

    # task state -------------------------------------------------------------
    def is_done(self, task: Task) -> bool:
        return checked_parquet_ok(self.task_dir(task) / "result.parquet",
                                  expect={"config_hash": task.config_hash, "task_id": task.task_id})

    def damaged(self, tasks: Iterable[Task]) -> dict[str, str]:
        """Task id -> reason, for each task whose result sidecar vouches for a file that does not match it.

        Such a task counts as pending (it is rerun by the next run of the
        sweep); the report lists it, so that its rows are never dropped silently.
        """
        out = {}
        for t in tasks:
            state, reason = checked_parquet_state(self.task_dir(t) / "result.parquet",
                                                  expect={"config_hash": t.config_hash, "task_id": t.task_id})
            if state == "damaged":
                out[t.task_id] = reason
        return out

    def results_current(self, tasks: Iterable[Task]) -> bool:
        """True iff ``results.parquet`` holds exactly the finished tasks, and none changed since it was written."""
        if not self.results_path.is_file():
            return False
        done = [t for t in tasks if self.is_done(t)]
        try:
            import pyarrow.parquet as pq

            ids = set(pq.read_table(self.results_path, columns=["task_id"]).column("task_id").to_pylist())
            written = self.results_path.stat().st_mtime_ns
        except Exception:  # an unreadable table is rebuilt
            return False
        if ids != {t.task_id for t in done}:
            return False
        return all((self.task_dir(t) / "result.parquet").stat().st_mtime_ns < written for t in done)

    def errors(self, task: Task | str) -> list[dict[str, Any]]:
        path = self.task_dir(task) / "error.json"
        if not path.is_file():
            return []
        try:  # a damaged error log is not a reason to stop: it only loses old tracebacks
            return list(read_json(path, what="task error log")["attempts"])
        except (ValueError, KeyError, TypeError):
            return []

    def record_error(self, task: Task, attempt: int, outcome: Mapping[str, Any]) -> None:
        """Append a failed attempt (with its traceback) to the task's ``error.json``."""
        attempts = self.errors(task)
        attempts.append({"attempt": attempt, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "host": outcome.get("host"), "pid": outcome.get("pid"),
                         "config_hash": task.config_hash, "traceback": outcome.get("traceback", "")})
        atomic_write_json(self.task_dir(task) / "error.json", {"task_id": task.task_id, "attempts": attempts})

    def status(self, tasks: Iterable[Task]) -> dict[str, list[str]]:
        """Task ids by state: done, failed (errors recorded, no result), pending."""
        out: dict[str, list[str]] = {"done": [], "failed": [], "pending": []}
        for t in tasks:
            if self.is_done(t):
                out["done"].append(t.task_id)
            elif any(e.get("config_hash") == t.config_hash for e in self.errors(t)):
                out["failed"].append(t.task_id)
            else:
                out["pending"].append(t.task_id)
        return out

    def write_status(self, tasks: list[Task]) -> dict[str, Any]:
        st = self.status(tasks)
        failed = {tid: last_line(self.errors(tid)[-1]["traceback"]) for tid in st["failed"]}
        record = {"updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "counts": {k: len(v) for k, v in st.items()}, **st, "errors": failed}
        atomic_write_json(self.status_path, record)
        return record

    # compaction -------------------------------------------------------------
    def compact(self, tasks: Iterable[Task], sweep_hash: str) -> int:
        """Write every finished task's rows into ``results.parquet`` (one task in memory at a time).

        Columns: task_id, sweep_hash, config_hash, one column per grid axis
        (lists/dicts as JSON text), seed, then the experiment's own columns.
        A grid axis whose name is already a result column with other values is
        stored as ``config_<axis>``; a result column named task_id, sweep_hash
        or config_hash with other values (e.g. an experiment's own hash of its
        settings) is kept as ``experiment_<name>``. Returns the number of rows.
        """
        tasks = [t for t in tasks if self.is_done(t)]
        axes = _axis_encoders(tasks)
        sources = []
        for t in tasks:
            cols = {"task_id": t.task_id, "sweep_hash": sweep_hash, "config_hash": t.config_hash}
            cols.update({k: axes[k](v) for k, v in t.point.items()})
            cols["seed"] = t.seed
            sources.append((self.task_dir(t) / "result.parquet", cols))
        rows = concat_parquet_files(sources, self.results_path, identity=("task_id", "sweep_hash", "config_hash"))
        if rows == 0 and self.results_path.exists():
            self.results_path.unlink()
        return rows

    def results(self) -> pd.DataFrame:
        return pd.read_parquet(self.results_path) if self.results_path.is_file() else pd.DataFrame()


def _plain_name(name: Any) -> bool:
    """True iff ``name`` can name one directory (no path, no hidden or special name)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and not name.startswith(".")
            and not any(c in name for c in "/\\\0") and len(name) <= 255)


def last_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _axis_encoders(tasks: list[Task]) -> dict[str, Any]:
    """One encoder per axis so each point column has one Parquet type."""
    values: dict[str, list[Any]] = {}
    for t in tasks:
        for k, v in t.point.items():
            values.setdefault(k, []).append(v)
    enc = {}
    for k, vs in values.items():
        if all(isinstance(v, bool) for v in vs) or all(isinstance(v, str) for v in vs):
            enc[k] = lambda v: v
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vs):
            enc[k] = float if any(isinstance(v, float) for v in vs) else int
        else:
            enc[k] = lambda v: json.dumps(v, sort_keys=True, default=str)
    return enc
