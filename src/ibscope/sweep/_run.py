"""The sweep driver: plan the tasks, guard the directory, run, retry, compact, report."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..experiments import available
from ..experiments.runner import config_record, experiment_key, load_experiment, resolve_config
from ..store import DirectoryLock, config_hash
from ._executors import make_executor
from ._report import build_sweep_report
from ._spec import SweepSpec, Task, grid_points, task_id
from ._store import SweepConfigMismatch, SweepStore, last_line
from ._task import store_returned_result

__all__ = ["SweepResult", "plan_sweep", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """What a call of :func:`run_sweep` left in the sweep directory."""

    directory: Path
    tasks: int
    done: list[str]
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    ran: int = 0
    results: Path | None = None
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending


@dataclass
class _Plan:
    meta: dict[str, Any]
    tasks: list[Task]
    overrides: dict[str, dict[str, Any]]  # task_id -> settings given to resolve_config


def _identity(key: str, base_cfg: dict[str, Any], grid_keys: list[str]) -> dict[str, Any]:
    # What may not change under a sweep directory (growing the grid's values or the seeds may).
    # The base value of a grid axis reaches no task, so it is not part of it.
    return {"experiment": key, "base": {k: v for k, v in base_cfg.items() if k not in grid_keys},
            "grid_keys": sorted(grid_keys)}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    if old.get("experiment") != new.get("experiment"):
        out.append(f"experiment {old.get('experiment')!r} -> {new.get('experiment')!r}")
    ob, nb = old.get("base", {}), new.get("base", {})
    for k in sorted(set(ob) | set(nb)):
        if ob.get(k) != nb.get(k):
            out.append(f"{k}: {ob.get(k)!r} -> {nb.get(k)!r}")
    if old.get("grid_keys") != new.get("grid_keys"):
        out.append(f"grid axes {old.get('grid_keys')} -> {new.get('grid_keys')}")
    return out


def plan_sweep(spec: SweepSpec, out_dir: str | Path, *, force_config: bool = False,
               allow_module: str | None = None) -> _Plan:
    """Resolve and validate every task of ``spec`` against what ``out_dir`` already holds.

    Every grid point's settings are validated (through the experiment's
    Config) before anything runs. Tasks already in the directory's manifest are
    kept (a sweep grows, it never forgets); a different base configuration is
    refused with :class:`SweepConfigMismatch` unless ``force_config``, in which
    case the tasks are re-resolved under the new base and every task whose
    config changed is recomputed. ``allow_module`` is the opt-in for a user
    experiment module (it must equal ``spec.experiment``; see
    :func:`ibscope.experiments.runner.load_experiment`).
    """
    mod = load_experiment(spec.experiment, allow_module=allow_module)
    key = experiment_key(mod)
    base = config_record(mod, resolve_config(mod, profile=spec.profile, overrides=spec.config))["config"]
    for axis in spec.grid:
        if axis not in base:
            raise ValueError(f"Grid axis {axis!r} is not a setting of experiment '{mod.NAME}'. Known: {sorted(base)}.")
    identity = _identity(key, base, list(spec.grid))
    sweep_hash = config_hash(identity)
    store = SweepStore(out_dir)
    old_meta = store.read_meta()
    points = grid_points(spec.grid)
    seeds = list(spec.seeds)
    old_tasks: list[Task] = []
    if old_meta is not None:
        if old_meta.get("sweep_hash") != sweep_hash:
            if not force_config:
                changes = "; ".join(_diff(old_meta.get("identity", {}), identity)) or "unknown change"
                raise SweepConfigMismatch(
                    f"'{store.directory}' holds a sweep of another configuration ({changes}). Use a new "
                    f"output directory, or force_config=True (CLI: --force-config) to rerun every task "
                    f"whose settings changed.")
        old_tasks = store.read_manifest()
        if old_meta.get("identity", {}).get("grid_keys") != identity["grid_keys"]:
            old_tasks = []  # forced with other axes: the old points cannot be mapped
    # the union of the old tasks and the new product, in a stable order
    wanted: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}
    for t in old_tasks:
        wanted[(config_hash(t.point), t.seed)] = (t.point, t.seed)
    for p in points:
        for s in seeds:
            wanted.setdefault((config_hash(p), s), (p, s))
    order = list(spec.grid)
    resolved: dict[str, tuple[str, dict[str, Any]]] = {}
    tasks, overrides = [], {}
    for point, seed in wanted.values():
        point = {k: point[k] for k in order}
        pkey = config_hash(point)
        if pkey not in resolved:
            settings = {**spec.config, **point}
            cfg = resolve_config(mod, profile=spec.profile, overrides=settings)
            resolved[pkey] = (config_record(mod, cfg)["config_hash"], settings)
        chash, settings = resolved[pkey]
        t = Task(task_id(point, seed), point, int(seed), chash)
        tasks.append(t)
        overrides[t.task_id] = settings
    ids = [t.task_id for t in tasks]
    if len(set(ids)) != len(ids):  # pragma: no cover - task_id hashes lossy points
        raise ValueError("Two tasks got the same id; rename the grid values.")
    grid_union: dict[str, list[Any]] = {k: [] for k in order}
    seen: dict[str, set[str]] = {k: set() for k in order}  # canonical JSON: linear, not a list scan per task
    for t in tasks:
        for k, v in t.point.items():
            c = json.dumps(v, sort_keys=True, default=str)
            if c not in seen[k]:
                seen[k].add(c)
                grid_union[k].append(v)
    meta = {
        "experiment": key, "profile": spec.profile, "config": spec.config, "identity": identity,
        "sweep_hash": sweep_hash, "grid": grid_union, "seeds": sorted({t.seed for t in tasks}),
        "tasks": len(tasks), "ibscope_version": __version__,
        "created": (old_meta or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return _Plan(meta, tasks, overrides)


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, executor: str = "local", workers: int | None = None,
              address: str | None = None, num_cpus: float = 1.0, retries: int = 1,
              force_config: bool = False, progress: bool = True, report: bool = True,
              mp_context: str = "spawn", results: str = "workers",
              allow_module: str | None = None, batch_seeds: bool = True) -> SweepResult:
    """Run every (grid point, seed) task of ``spec`` into the sweep directory ``out_dir``.

    Parameters
    ----------
    spec : SweepSpec
        Experiment, base settings, grid and seeds (see :func:`load_spec`).
    out_dir : path-like
        The sweep directory (created if needed; see :mod:`ibscope.sweep._store`
        for its layout). Running again resumes: finished tasks are skipped,
        unfinished ones continue from their checkpoints, new grid values and
        seeds are added.
    executor : {'local', 'ray'}
        'local': a process pool of ``workers`` processes (default: all cores;
        ``workers=0`` runs the tasks one after another in this process).
        'ray': Ray remote functions of ``num_cpus`` CPUs each, on the cluster
        at ``address`` or on a local Ray of ``workers`` CPUs.
    results : {'workers', 'driver'}
        Who writes each task's result into ``out_dir``: 'workers' (they must
        see ``out_dir``, e.g. on a shared filesystem; a task resumes from its
        checkpoints there) or 'driver' (each task runs in a temporary
        directory of its worker and sends its rows back; for clusters without
        a shared filesystem; an interrupted task starts over).
    retries : int
        Extra attempts for a task that raised; after them the task is
        reported failed, its tracebacks kept in ``tasks/<id>/error.json``.
    force_config : bool
        Accept a base configuration that differs from the one in ``out_dir``.
    progress, report : bool
        A progress bar over tasks; build ``report.html`` at the end.
    allow_module : str, optional
        The explicit opt-in to run a user experiment module: its dotted path,
        equal to ``spec.experiment`` (a sweep file alone never imports a
        module; registered experiments need no opt-in). The workers get the
        same opt-in with their tasks.
    batch_seeds : bool, default True
        For an experiment that offers ``run_seeds`` (tishby, iiw, lagrangian:
        the seeds as one :class:`~ibscope.models.BatchedMLP`), the unfinished seeds of each
        grid point run as one task through it, split into enough batches to
        keep every worker busy (when the sweep has fewer grid points than
        workers, each point's seeds are split over several batches). Each seed's rows land in its own task
        directory as with one-seed tasks, so results, resuming and adding
        seeds are unchanged; a batch that fails is retried seed by seed. The
        batches are recorded in ``batches.json`` before they run, and a
        resumed sweep runs an unfinished recorded batch again as a whole (same
        seeds, same order, from its own checkpoint), whatever ``workers`` is
        then: the table after an interruption equals the uninterrupted one
        (docs/sweeps.md, "What resume guarantees").
        Ignored with ``results='driver'``. False: one task per seed.

    Returns
    -------
    SweepResult

    Raises
    ------
    ibscope.store.DirectoryLocked
        Another process is running a sweep in ``out_dir``.
    SweepConfigMismatch
        ``out_dir`` holds another configuration and ``force_config`` is False.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"'retries' must be an int >= 0, got {retries!r}.")
    if results not in ("workers", "driver"):
        raise ValueError(f"'results' must be 'workers' or 'driver', got {results!r}.")
    store = SweepStore(out_dir)
    with DirectoryLock(store.directory, what="sweep"):
        plan = plan_sweep(spec, store.directory, force_config=force_config, allow_module=allow_module)
        store.write_meta(plan.meta)
        store.write_manifest(plan.tasks)
        todo = [t for t in plan.tasks if not store.is_done(t)]
        ran = 0
        if todo:
            ex = make_executor(executor, workers=workers, address=address, num_cpus=num_cpus,
                               mp_context=mp_context)
            batchable = (batch_seeds and results == "workers"
                         and callable(getattr(load_experiment(spec.experiment, allow_module=allow_module),
                                              "run_seeds", None)))
            ran = _drive(ex, store, plan, todo, retries, progress, len(plan.tasks), results == "driver",
                         batchable)
        status = store.write_status(plan.tasks)
        rows = store.compact(plan.tasks, plan.meta["sweep_hash"])
        report_path = None
        if report and rows:
            report_path = build_sweep_report(store.directory)
    return SweepResult(store.directory, len(plan.tasks), status["done"], status["errors"], status["pending"], ran,
                       store.results_path if rows else None, report_path)


def _batches(todo: list[Task], parallel: int) -> list[list[Task]]:
    """The unfinished tasks grouped by grid point, each group split so that ``parallel`` workers stay busy."""
    groups: dict[str, list[Task]] = {}
    for t in todo:
        groups.setdefault(config_hash(t.point), []).append(t)
    pieces = max(1, -(-parallel // max(1, len(groups))))  # ceil(parallel / groups)
    units = []
    for tasks in groups.values():
        tasks = sorted(tasks, key=lambda t: t.seed)
        k = min(pieces, len(tasks))
        size = -(-len(tasks) // k)
        units += [tasks[i:i + size] for i in range(0, len(tasks), size)]
    return units


def _batch_name(unit: list[Task]) -> str | None:
    """The directory name (under ``batches/``) of a batch: config hash, first seed, size, hash of the seeds."""
    if len(unit) < 2:
        return None
    seeds = [t.seed for t in unit]
    return f"{unit[0].config_hash[:12]}-s{seeds[0]}-{len(seeds)}-{config_hash({'seeds': seeds})[:8]}"


@dataclass
class _Unit:
    tasks: list[Task]
    name: str | None = None  # the batch directory; None: the tasks run one by one
    record: dict[str, Any] | None = None  # its entry of batches.json


def _plan_units(store: SweepStore, plan: _Plan, todo: list[Task], parallel: int) -> tuple[list[_Unit], list[dict]]:
    """The units to run, planned once and kept in ``batches.json`` so that a resumed sweep runs the same batches.

    A recorded batch still stands if its tasks are all in the plan with the
    config hash it was planned for: it runs again, as a whole (same seeds,
    same order, same directory, so from its own checkpoint), as long as one of
    its tasks is unfinished; a batch that failed runs its unfinished tasks one
    by one. Only tasks no standing record covers (a new sweep, new seeds or
    grid values, a changed config) are planned afresh with :func:`_batches`.
    Returns the units and every standing record (the new file's content).
    """
    by_id = {t.task_id: t for t in plan.tasks}
    want = {t.task_id for t in todo}
    covered: set[str] = set()
    records: list[dict[str, Any]] = []
    units: list[_Unit] = []
    for rec in store.read_batches():
        tasks = [by_id.get(tid) for tid in rec["task_ids"]]
        if any(t is None or t.config_hash != rec["config_hash"] or t.task_id in covered for t in tasks) \
                or len(set(rec["task_ids"])) != len(tasks):
            continue  # planned for tasks that are gone or changed: the tasks are planned afresh
        covered.update(rec["task_ids"])
        records.append(rec)
        if not want.intersection(rec["task_ids"]):
            continue
        if rec["failed"] or rec["name"] is None:
            units += [_Unit([t]) for t in tasks if t.task_id in want]  # type: ignore[list-item]
        else:
            units.append(_Unit(list(tasks), rec["name"], rec))  # type: ignore[arg-type]
    for tasks in _batches([t for t in todo if t.task_id not in covered], parallel):
        name = _batch_name(tasks)
        rec = {"name": name, "config_hash": tasks[0].config_hash, "task_ids": [t.task_id for t in tasks],
               "failed": False}
        records.append(rec)
        units.append(_Unit(tasks, name, rec if name else None))
    return units, records


def _drive(ex: Any, store: SweepStore, plan: _Plan, todo: list[Task], retries: int, progress: bool,
           total: int, return_results: bool = False, batch_seeds: bool = False) -> int:
    """Submit tasks (a bounded number in flight), collect outcomes, retry failures.

    With ``batch_seeds`` the first attempt of each grid point's unfinished
    seeds is one batch unit (see :func:`_batches`), planned once and kept in
    ``batches.json`` (see :func:`_plan_units`); a failed batch records its
    error on each of its tasks, is marked failed in the plan and retries its
    tasks one by one.
    """
    from tqdm.auto import tqdm

    # the driver's opt-in travels with the tasks (a registered experiment needs none)
    user_module = None if plan.meta["experiment"] in available() else plan.meta["experiment"]

    def spec_of(t: Task, attempt: int) -> dict[str, Any]:
        return {"task_id": t.task_id, "task_dir": str(store.task_dir(t)), "experiment": plan.meta["experiment"],
                "profile": plan.meta["profile"], "overrides": plan.overrides[t.task_id], "point": t.point,
                "seed": t.seed, "config_hash": t.config_hash, "attempt": attempt,
                "return_result": return_results, "allow_module": user_module}

    def unit_spec(unit: _Unit, attempt: int) -> dict[str, Any]:
        if unit.name is None:
            return spec_of(unit.tasks[0], attempt)
        return {"task_id": f"{unit.tasks[0].task_id} (+{len(unit.tasks) - 1} seeds)",
                "batch": [spec_of(t, attempt) for t in unit.tasks],
                "batch_dir": str(store.directory / "batches" / unit.name)}

    parallel = int(getattr(ex, "workers", 0) or max(1, ex.max_inflight // 2))
    if batch_seeds:
        units, records = _plan_units(store, plan, todo, parallel)
        store.write_batches(records)  # before anything runs: a resumed sweep finds the same batches
    else:
        units, records = [_Unit([t]) for t in todo], []
    wanted = {t.task_id for t in todo}
    queue = deque((u, 1) for u in units)
    inflight: dict[Any, tuple[_Unit, int]] = {}
    failed = 0
    ran = 0
    bar = tqdm(total=total, initial=total - len(todo), desc="sweep", unit="task", disable=not progress,
               dynamic_ncols=True)
    try:
        while queue or inflight:
            while queue and len(inflight) < ex.max_inflight:
                unit, attempt = queue.popleft()
                inflight[ex.submit(unit_spec(unit, attempt))] = (unit, attempt)
            for handle in ex.wait(list(inflight), timeout=1.0):
                unit, attempt = inflight.pop(handle)
                outcome = ex.outcome(handle)
                pending = [t for t in unit.tasks if t.task_id in wanted]  # a batch may hold finished tasks
                ran += len(pending)
                if outcome.get("status") == "done":
                    if "result" in outcome:  # rows sent back by the worker: the driver stores them
                        store_returned_result(spec_of(unit.tasks[0], attempt), outcome)
                    bar.update(len(pending))
                    continue
                if unit.record is not None:  # from now on (and after a resume) its tasks run one by one
                    unit.record["failed"] = True
                    store.write_batches(records)
                for t in pending:
                    store.record_error(t, attempt, outcome)
                    if attempt <= retries:
                        log.warning("Task %s failed (attempt %d of %d): %s", t.task_id, attempt, retries + 1,
                                    last_line(outcome.get("traceback", "")))
                        queue.append((_Unit([t]), attempt + 1))
                    else:
                        failed += 1
                        bar.set_postfix(failed=failed)
                        log.error("Task %s failed after %d attempt(s): %s", t.task_id, attempt,
                                  last_line(outcome.get("traceback", "")))
    except KeyboardInterrupt:
        bar.close()
        ex.shutdown(cancel=True, handles=list(inflight))
        store.write_status(plan.tasks)
        log.warning("Interrupted: finished tasks are kept in %s; run the same command again to resume.",
                    store.directory)
        raise
    bar.close()
    ex.shutdown()
    return ran
