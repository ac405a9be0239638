"""What runs inside a worker: one task, in its own directory, never raising."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["execute_task", "init_worker", "limit_threads", "store_returned_result"]

RESULT = "result.parquet"
TASK_RECORD = "task.json"


def limit_threads(n: int = 1) -> None:
    """One compute thread for torch, OpenMP and BLAS in this process (one task per core)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or parallel work already ran in this process
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def init_worker(parent_pid: int) -> None:
    """Process-pool initializer: one thread, ignore Ctrl-C (the driver stops us), die with the driver."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(1)

    def watch() -> None:  # an orphaned worker (driver killed) stops instead of running on
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="ibscope-parent-watch", daemon=True).start()


def _prepare(task_dir: Path, spec: dict[str, Any]) -> None:
    """Start the task directory afresh if it holds work of another configuration."""
    record_path = task_dir / TASK_RECORD
    if record_path.exists():
        from ..store import read_json

        try:
            old = read_json(record_path, what="task record")
        except ValueError:  # damaged: the directory is started afresh below
            old = {}
        if old.get("config_hash") == spec["config_hash"]:
            return
        for child in task_dir.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    from ..store import atomic_write_json

    atomic_write_json(record_path, {k: spec[k] for k in ("task_id", "experiment", "point", "seed", "config_hash")})


def _resolve(spec: dict[str, Any]):
    """The task's experiment module and config, the config checked against the driver's hash."""
    from ..experiments.runner import config_record, load_experiment, resolve_config

    mod = load_experiment(spec["experiment"], allow_module=spec.get("allow_module"))
    config = resolve_config(mod, profile=spec["profile"], overrides=spec["overrides"])
    got = config_record(mod, config)["config_hash"]
    if got != spec["config_hash"]:
        raise RuntimeError(
            f"This worker resolves task {spec['task_id']} to config hash {got}, the driver to "
            f"{spec['config_hash']}: driver and worker run different ibscope code or defaults.")
    return mod, config


def _run_experiment(spec: dict[str, Any], directory: Path):
    """Resolve the task's config (checked against the driver's hash) and run its seed in ``directory``."""
    mod, config = _resolve(spec)
    df = mod.run_seed(config, int(spec["seed"]), directory, progress=False)
    if df is None or not hasattr(df, "to_parquet"):
        raise TypeError(f"{mod.__name__}.run_seed must return a pandas DataFrame, got {type(df).__name__}.")
    return df


def _result_meta(spec: dict[str, Any], seconds: float, host: str) -> dict[str, Any]:
    return {"config_hash": spec["config_hash"], "task_id": spec["task_id"], "seed": int(spec["seed"]),
            "point": spec["point"], "attempt": spec.get("attempt", 1), "seconds": seconds, "host": host,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def execute_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one (grid point, seed) task; write its result into its directory; return an outcome.

    ``spec`` holds task_id, task_dir (absolute), experiment, profile,
    overrides, point, seed, config_hash, attempt and optionally
    return_result and allow_module (the driver's opt-in for a user
    experiment module). The experiment's ``run_seed`` writes its own side files
    there and resumes from them; the finished rows go to ``result.parquet``
    with a checked sidecar ``result.json``. A task already finished (e.g. by
    an orphaned worker of a killed driver) is not run again: the task
    directory is locked while a task runs in it.

    With ``return_result`` (workers that cannot see the sweep directory) the
    task runs in a private temporary directory instead, and the rows travel
    back in the outcome (``result``: Parquet bytes, ``result_meta``) for the
    driver to store with :func:`store_returned_result`. Its checkpoints are
    lost with the worker, so an interrupted task starts over.

    Returns
    -------
    dict
        ``status`` ('done' | 'error'), ``task_id``, ``seconds``, ``rows`` or
        ``traceback``, ``host``, ``pid``, ``skipped``. It never raises for an
        error of the experiment: the driver decides about retries.
    """
    from ..experiments.runner import seed_result_done, write_seed_result
    from ..store import DirectoryLock

    if "batch" in spec:
        return _execute_batch(spec)
    t0 = time.perf_counter()
    base = {"task_id": spec["task_id"], "host": socket.gethostname(), "pid": os.getpid()}
    try:
        if spec.get("return_result"):
            with tempfile.TemporaryDirectory(prefix="ibscope-task-") as scratch:
                df = _run_experiment(spec, Path(scratch))
            seconds = time.perf_counter() - t0
            buf = io.BytesIO()
            df.to_parquet(buf, index=False)
            return {**base, "status": "done", "skipped": False, "rows": int(len(df)), "seconds": seconds,
                    "result": buf.getvalue(), "result_meta": _result_meta(spec, seconds, base["host"])}
        task_dir = Path(spec["task_dir"])
        with DirectoryLock(task_dir, what="task", blocking=True):
            expect = {"config_hash": spec["config_hash"], "task_id": spec["task_id"]}
            if seed_result_done(task_dir, expect=expect):
                return {**base, "status": "done", "skipped": True, "seconds": 0.0}
            _prepare(task_dir, spec)
            df = _run_experiment(spec, task_dir)
            seconds = time.perf_counter() - t0
            write_seed_result(task_dir, df, _result_meta(spec, seconds, base["host"]))
            return {**base, "status": "done", "skipped": False, "rows": int(len(df)), "seconds": seconds}
    except Exception:
        return {**base, "status": "error", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}


def _execute_batch(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the seeds of one planned batch together through the experiment's ``run_seeds``.

    ``spec`` holds ``batch`` (the task specs, all of one grid point: same
    experiment, profile, overrides and config hash; different seeds),
    ``batch_dir`` (where ``run_seeds`` keeps its checkpoint and partial rows,
    so an interrupted batch resumes) and ``task_id`` (a label). Every task
    directory is locked while the batch runs. While one of its tasks is
    unfinished the batch runs as planned, with all its seeds in their order
    (its finished seeds included), so that a batch interrupted anywhere --
    in training, or between writing two of its seeds' results -- resumes from
    its own checkpoint and gives the rows of the uninterrupted batch; each
    unfinished seed's rows are written into its own task directory exactly
    as a one-seed task writes them. An experiment without ``run_seeds`` runs
    the unfinished seeds one by one. Never raises: an error is an outcome
    (the driver retries the batch's tasks one by one).
    """
    import contextlib

    from ..experiments.runner import seed_result_done, write_seed_result
    from ..store import DirectoryLock

    t0 = time.perf_counter()
    tasks = list(spec["batch"])
    base = {"task_id": spec["task_id"], "task_ids": [t["task_id"] for t in tasks], "host": socket.gethostname(),
            "pid": os.getpid()}
    try:
        with contextlib.ExitStack() as stack:
            for t in sorted(tasks, key=lambda t: t["task_dir"]):  # one order everywhere: no deadlock
                stack.enter_context(DirectoryLock(Path(t["task_dir"]), what="task", blocking=True))
            todo = [t for t in tasks if not seed_result_done(
                Path(t["task_dir"]), expect={"config_hash": t["config_hash"], "task_id": t["task_id"]})]
            rows = 0
            mod = config = None
            if todo and len(tasks) > 1:
                first = tasks[0]
                if any(t["config_hash"] != first["config_hash"] or t["overrides"] != first["overrides"]
                       for t in tasks):
                    raise ValueError("A batch must hold the seeds of one grid point (one config hash).")
                mod, config = _resolve(first)
            if mod is not None and callable(getattr(mod, "run_seeds", None)):
                seeds = [int(t["seed"]) for t in tasks]
                frames = _checked(mod.run_seeds(config, seeds, Path(spec["batch_dir"]), progress=False), seeds, mod)
                seconds = (time.perf_counter() - t0) / len(todo)
                for t in todo:
                    task_dir = Path(t["task_dir"])
                    _prepare(task_dir, t)
                    write_seed_result(task_dir, frames[int(t["seed"])], _result_meta(t, seconds, base["host"]))
                    rows += len(frames[int(t["seed"])])
            else:
                for t in todo:
                    t1 = time.perf_counter()
                    task_dir = Path(t["task_dir"])
                    _prepare(task_dir, t)
                    df = _run_experiment(t, task_dir)
                    write_seed_result(task_dir, df, _result_meta(t, time.perf_counter() - t1, base["host"]))
                    rows += len(df)
        return {**base, "status": "done", "skipped": not todo, "rows": rows, "seconds": time.perf_counter() - t0}
    except Exception:
        return {**base, "status": "error", "traceback": traceback.format_exc(), "seconds": time.perf_counter() - t0}


def _checked(frames: Any, seeds: list[int], mod: Any) -> dict[int, Any]:
    if not isinstance(frames, dict) or sorted(frames) != sorted(seeds) \
            or not all(hasattr(f, "to_parquet") for f in frames.values()):
        raise TypeError(f"{mod.__name__}.run_seeds must return {{seed: DataFrame}} for the seeds {seeds}.")
    return frames


def store_returned_result(spec: dict[str, Any], outcome: dict[str, Any]) -> None:
    """Driver side of ``return_result``: write the rows a worker sent back into the task directory."""
    import pandas as pd

    from ..experiments.runner import write_seed_result
    from ..store import DirectoryLock

    task_dir = Path(spec["task_dir"])
    df = pd.read_parquet(io.BytesIO(outcome["result"]))
    with DirectoryLock(task_dir, what="task", blocking=True):
        _prepare(task_dir, spec)
        write_seed_result(task_dir, df, outcome["result_meta"])
