"""Where tasks run: in this process, in a local process pool, or on a Ray cluster.

Every executor offers the same four calls to the driver loop
(:func:`ibscope.sweep.run_sweep`): ``submit(spec) -> handle``,
``wait(handles, timeout) -> finished handles``, ``outcome(handle) -> dict``
(never raises: a lost worker becomes an 'error' outcome) and
``shutdown(cancel)``. By default results are written by the tasks
themselves into the sweep directory, so only small outcome dicts travel back
to the driver; with ``results='driver'`` (no shared filesystem) each outcome
carries its task's rows and the driver writes them.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
from pathlib import Path
from typing import Any

from ._task import execute_task, init_worker

__all__ = ["InlineExecutor", "LocalExecutor", "RayExecutor", "make_executor", "RAY_MISSING"]

RAY_MISSING = ("The 'ray' executor needs Ray, which is an optional extra: pip install 'ibscope[ray]' "
               "(or pip install ray).")


def _lost(handle_error: BaseException) -> dict[str, Any]:
    return {"status": "error", "traceback": f"{type(handle_error).__name__}: {handle_error}\n"
            "(the worker running this task was lost: killed, out of memory, or crashed)\n",
            "seconds": float("nan")}


class InlineExecutor:
    """Runs each task at once in this process (``--workers 0``): for debugging and baselines."""

    max_inflight = 1

    def submit(self, spec: dict[str, Any]) -> cf.Future:
        fut: cf.Future = cf.Future()
        fut.set_result(execute_task(spec))
        return fut

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        return list(handles)

    def outcome(self, handle: cf.Future) -> dict[str, Any]:
        return handle.result()

    def shutdown(self, cancel: bool = False, handles: list[Any] = ()) -> None:
        pass


class LocalExecutor:
    """A process pool on this machine, one task per worker, one thread per worker.

    Workers are started with ``mp_context`` ('spawn' by default: safe with
    torch and on every OS; 'forkserver' starts faster on Linux). Each worker
    sets torch/OpenMP/BLAS to one thread, ignores Ctrl-C (the driver stops
    it) and exits if the driver dies. A worker that dies (OOM killer, segfault)
    breaks the pool: the tasks it held become failed attempts and a new pool is
    started for the rest.
    """

    def __init__(self, workers: int | None = None, mp_context: str = "spawn"):
        import multiprocessing as mp

        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"'workers' must be >= 1 for the local pool, got {workers}.")
        self._ctx = mp.get_context(mp_context)
        self.max_inflight = 2 * self.workers
        self._pool: cf.ProcessPoolExecutor | None = None

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=self._ctx,
                                                initializer=init_worker, initargs=(os.getpid(),))
        return self._pool

    def submit(self, spec: dict[str, Any]) -> cf.Future:
        try:
            return self._get_pool().submit(execute_task, spec)
        except cf.process.BrokenProcessPool:
            self._discard_pool()
            return self._get_pool().submit(execute_task, spec)

    def wait(self, handles: list[cf.Future], timeout: float) -> list[cf.Future]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def outcome(self, handle: cf.Future) -> dict[str, Any]:
        try:
            return handle.result()
        except cf.process.BrokenProcessPool as e:
            self._discard_pool()
            return _lost(e)
        except cf.CancelledError as e:  # pragma: no cover - only after shutdown
            return _lost(e)

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def shutdown(self, cancel: bool = False, handles: list[Any] = ()) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not cancel:
            pool.shutdown(wait=True)
            return
        # Ctrl-C: drop queued tasks, stop running ones (they resume from their checkpoints).
        terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
        if terminate is not None:
            terminate()
        else:
            for proc in list(getattr(pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Tasks as Ray remote functions (``num_cpus`` each) on a cluster or a local Ray.

    With ``address`` (e.g. ``"auto"`` or ``"ray://head:10001"``) it joins that
    cluster: every node must have ibscope installed and either see the sweep
    directory at the same path (shared filesystem; the workers write the
    results there) or the sweep runs with ``results='driver'``. Without it,
    a local Ray is started with ``workers`` CPUs (all cores by default) and
    workers import this very ibscope.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, num_cpus: float = 1.0):
        try:
            import ray
        except ImportError:
            raise ImportError(RAY_MISSING) from None
        self._ray = ray
        if not (isinstance(num_cpus, (int, float)) and num_cpus > 0):
            raise ValueError(f"'num_cpus' per task must be > 0, got {num_cpus!r}.")
        self._started = False
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if address:
                kwargs["address"] = address
                kwargs["runtime_env"] = {"env_vars": env}
            else:
                path = os.pathsep.join(_user_paths())
                kwargs.update(num_cpus=int(workers or os.cpu_count() or 1), include_dashboard=False,
                              runtime_env={"env_vars": {**env, "PYTHONPATH": path}})
            ray.init(**kwargs)
            self._started = True
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.max_inflight = max(1, int(2 * cpus / num_cpus))
        self._remote = ray.remote(num_cpus=num_cpus, max_retries=0)(_ray_task)

    def submit(self, spec: dict[str, Any]) -> Any:
        return self._remote.remote(spec)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        return list(done)

    def outcome(self, handle: Any) -> dict[str, Any]:
        try:
            return self._ray.get(handle)
        except Exception as e:  # WorkerCrashedError, NodeDiedError, ...
            return _lost(e)

    def shutdown(self, cancel: bool = False, handles: list[Any] = ()) -> None:
        if cancel:
            for ref in handles:
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
        if self._started:
            self._ray.shutdown()
            self._started = False


def _user_paths() -> list[str]:
    """This ibscope's source root, then the driver's own import paths (not the interpreter's)."""
    src = str(Path(__file__).resolve().parents[2])
    system = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    out = [src]
    for p in sys.path:
        if not p or not Path(p).is_dir():
            continue
        rp = Path(p).resolve()
        if any(rp == s or s in rp.parents for s in system) or str(rp) in out:
            continue
        out.append(str(rp))
    return out


def _ray_task(spec: dict[str, Any]) -> dict[str, Any]:
    from ._task import limit_threads

    limit_threads(1)
    return execute_task(spec)


def make_executor(kind: str, *, workers: int | None = None, address: str | None = None,
                  num_cpus: float = 1.0, mp_context: str = "spawn"):
    """``'local'`` (process pool; ``workers=0`` runs in this process) or ``'ray'``."""
    if kind == "local":
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ValueError(f"'workers' must be an int >= 0 (0: run in this process), got {workers!r}.")
        return InlineExecutor() if workers == 0 else LocalExecutor(workers, mp_context)
    if kind == "ray":
        return RayExecutor(address, workers, num_cpus)
    raise ValueError(f"Unknown executor {kind!r} (argument 'executor'). Choose 'local' or 'ray'.")
