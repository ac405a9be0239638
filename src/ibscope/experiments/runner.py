"""Run an experiment for several seeds into one run directory, resumably.

Layout of a run directory::

    .lock                held (fcntl.flock) while a run writes the directory
    config.json          experiment name, resolved config, its hash
    seed_<s>/            everything one seed writes (checkpoints, snapshots, partial tables)
    seed_<s>/result.parquet   the seed's finished rows
    seed_<s>/result.json      its sidecar (rows, sha256): the seed is done iff both match
    batches.json         the seed-batching plan: which seeds train together, in which batch_<hash>/
    batch_<hash>/        one batch's checkpoint and partial rows (experiments with run_seeds)
    results.parquet      all finished seeds, with run_id and config_hash columns first
    replaced_<hash>/     seed_*/ and batch_*/ of earlier settings (overwrite_config=True), kept, never resumed
    *.png, report.html   figures and the report

The runner owns the orchestration: it validates the config once, resolves
its ``device`` and sets ``torch_threads`` once (:func:`ibscope.experiments.execution`),
computes the config hash once (:func:`ibscope.experiments.settings_hash`: every
setting but the execution-only ones, :data:`ibscope.experiments.EXECUTION_KEYS`),
and keeps the one result cache: ``seed_<s>/result.parquet`` with its sidecar
(sha256, rows, config hash). An experiment only computes rows; it keeps no
final-result file and no hash column of its own. An experiment that declares
its seed's training (``build`` / ``rows``, :class:`ibscope.experiments.Setup`)
is trained by the runner itself (:func:`run_one_seed`): fit gets the runner's
checkpoint folder (``seed_<s>/``), device, progress bar and minibatch seed.

A finished seed is never recomputed; an unfinished one resumes from its own
checkpoint (under ``seed_<s>/``, the folder the runner gives it), or from its
batch's: the batches are planned once and recorded, so a resumed run trains
the same seeds together as the uninterrupted run would. A seed result that is
damaged (its sha256 or size does not match the sidecar, or the sidecar is
unreadable) is recomputed with a :class:`DamagedResultWarning` that names the
file; one of another configuration (after ``overwrite_config=True``) is
recomputed silently. Starting a run in a directory that holds a different config is
refused (pass ``overwrite_config=True`` to start over deliberately), and so is
a second process writing the same directory.

The pieces shared with :mod:`ibscope.sweep` live here: :func:`load_experiment`,
:func:`resolve_config`, :func:`config_record` and :func:`seed_result_done`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from .._interface import EXPERIMENT_CONTRACT, Experiment
from ..report import Section, flagged_estimates, render_report
from ..store import (
    DamagedFile,
    DirectoryLock,
    atomic_write_json,
    checked_parquet_ok,
    checked_parquet_state,
    concat_parquet_files,
    config_hash,
    read_json,
    safe_name,
    write_checked_parquet,
)
from . import (
    _MODULE_PATH,
    available,
    execution,
    has_build,
    is_allowed,
    resolve_execution,
    settings_hash,
    train_seed,
)
from . import allow_module as _allow_module
from . import get as get_experiment

__all__ = ["resolve_config", "run", "collect_results", "build_run_report", "RunConfigMismatch", "load_experiment",
           "experiment_key", "config_record", "seed_result_done", "write_seed_result", "DamagedResultWarning",
           "seed_result_state", "run_one_seed"]


log = logging.getLogger(__name__)


class RunConfigMismatch(ValueError):
    """The run directory already holds results of a different configuration."""


class DamagedResultWarning(UserWarning):
    """A finished seed's result file is damaged; the seed is recomputed (the message names the file)."""


def load_experiment(experiment: str | ModuleType, *, allow_module: str | None = None) -> Experiment:
    """An experiment module: a registry name (``tishby``), or an opted-in user module.

    Parameters
    ----------
    experiment : str or module
        A registry name (:func:`ibscope.experiments.available`), a module
        object (passing it opts in to its name), or the dotted path of your
        own module following the contract of :mod:`ibscope.experiments`
        (``NAME``, ``Config`` with ``validate()``, ``run_seed``, ``plot``).
    allow_module : str, optional
        The explicit opt-in for a dotted path: it must equal ``experiment``
        (it is then remembered for this process, see
        :func:`ibscope.experiments.allow_module`). Without it a path that is
        neither registered nor opted in is refused before anything is
        imported, so a config file cannot run code by naming a module.
    """
    if allow_module is not None:
        if not isinstance(experiment, str) or allow_module != experiment:
            raise ValueError(f"'allow_module' must name the experiment module exactly: it is {allow_module!r}, "
                             f"the experiment is {experiment if isinstance(experiment, str) else experiment.__name__!r}.")
        _allow_module(allow_module)
    if isinstance(experiment, ModuleType):
        mod = experiment
    elif not isinstance(experiment, str):
        raise TypeError(f"'experiment' must be an experiment name or module, got {type(experiment).__name__}.")
    elif experiment in available() or not _MODULE_PATH.match(experiment):
        return get_experiment(experiment)
    elif not is_allowed(experiment):
        raise ValueError(
            f"Unknown experiment {experiment!r}. Registered experiments: {', '.join(available())}. To run your "
            f"own experiment module, opt in by naming it: CLI --allow-module {experiment}, or "
            f"allow_module={experiment!r} (run, run_sweep, load_experiment). A module named only in a "
            f"config file is never imported.")
    else:
        mod = _import_user_module(experiment)
    missing = [a for a in EXPERIMENT_CONTRACT if not hasattr(mod, a)]
    if not missing and not callable(getattr(mod.Config, "validate", None)):
        missing = ["Config.validate"]
    if missing or not isinstance(mod, Experiment):
        raise ValueError(f"Module {mod.__name__!r} is not an experiment: it lacks {missing} "
                         f"(see ibscope.experiments for the contract).")
    if isinstance(experiment, ModuleType) and experiment_key(mod) not in available():
        _allow_module(mod.__name__)  # passing the module object is the opt-in (e.g. for the report)
    return mod


def _import_user_module(name: str) -> ModuleType:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as e:
        raise ImportError(f"Cannot find the experiment module {name!r} ({e}).") from None
    if spec is None:
        raise ImportError(f"No module named {name!r} (the experiment module opted in with --allow-module / "
                          f"allow_module); is its directory on PYTHONPATH?")
    log.info("Loading user experiment module %s from %s", name, spec.origin)
    return importlib.import_module(name)


def experiment_key(mod: Experiment) -> str:
    """The name that loads ``mod`` again (registry name, or its dotted module path)."""
    inside = mod.__name__.rpartition(".")[0] == __package__
    return mod.NAME if inside and mod.NAME in available() else mod.__name__


def resolve_config(experiment: str | ModuleType | Experiment, *, profile: str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """Build the experiment's Config from its defaults, a named profile and overrides, and validate it.

    Every experiment's ``Config`` has a ``validate()`` method that raises a
    ValueError naming the bad setting; it runs here, before any work, so a
    bad value of a sweep's grid fails when the sweep is planned, not in a task.
    """
    mod = load_experiment(experiment)
    values: dict[str, Any] = {}
    if profile is not None:
        profiles = getattr(mod, "PROFILES", {})
        if profile not in profiles:
            raise ValueError(f"Unknown profile {profile!r} for experiment '{mod.NAME}'. Available: {sorted(profiles)}.")
        values.update(profiles[profile])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    names = {f.name for f in dataclasses.fields(mod.Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown setting(s) {unknown} for experiment '{mod.NAME}'. Known: {sorted(names)}.")
    _check_value_shapes(mod, values)
    config = mod.Config(**values)
    config.validate()
    return config


_SCALARS = (str, bool, int, float)


def _check_value_shapes(mod: Any, values: Mapping[str, Any]) -> None:
    """A setting whose default is one value (str, number, bool) may not be given a list or mapping.

    Without this, ``activation: [tanh]`` (or a sweep's ``--grid
    activation=[tanh]``, whose one value is the list ``[tanh]``) reached the
    experiment's ``validate()`` as a list and failed there with "unhashable
    type: 'list'".
    """
    for f in dataclasses.fields(mod.Config):
        if f.name not in values or not isinstance(values[f.name], (list, tuple, dict)):
            continue
        default = f.default
        if default is dataclasses.MISSING or not isinstance(default, _SCALARS):
            continue
        v = values[f.name]
        raise ValueError(
            f"Setting {f.name!r} of experiment '{mod.NAME}' takes one value (like {default!r}), got the "
            f"{type(v).__name__} {v!r}. In a sweep, a grid axis lists its values once: "
            f"grid: {{{f.name}: [a, b]}} (CLI --grid {f.name}=a,b); a list-valued setting is given as a "
            f"list of lists.")


def config_record(mod: Experiment, config: Any) -> dict[str, Any]:
    """``{"experiment", "config" (plain JSON), "config_hash"}`` of a resolved config.

    ``config`` holds every setting; the hash leaves out the execution-only
    ones (:data:`ibscope.experiments.EXECUTION_KEYS`: ``device``,
    ``torch_threads``, ``progress``), so running the same settings on another
    device or thread count reuses the finished seeds.
    """
    cfg = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    name = experiment_key(mod)
    return {"experiment": name, "config": cfg, "config_hash": settings_hash(config, experiment=name)}


def seed_result_done(seed_dir: str | Path, *, expect: Mapping[str, Any] | None = None) -> bool:
    """True iff ``seed_dir/result.parquet`` is complete (checked against its sidecar)."""
    return checked_parquet_ok(Path(seed_dir) / "result.parquet", expect=expect)


def seed_result_state(seed_dir: str | Path, *, expect: Mapping[str, Any] | None = None) -> str:
    """'ok' (reuse), 'absent' or 'other' (compute), 'damaged' (recompute, warned) for ``seed_dir``.

    The read side of the runner's result cache: a damaged result (size or
    sha256 unlike its sidecar, unreadable sidecar) gives a
    :class:`DamagedResultWarning` naming the file and counts as not done.
    """
    path = Path(seed_dir) / "result.parquet"
    state, reason = checked_parquet_state(path, expect=expect)
    if state == "damaged":
        import warnings

        msg = f"The seed result '{path}' is damaged ({reason}); recomputing that seed."
        log.warning(msg)
        warnings.warn(msg, DamagedResultWarning, stacklevel=2)
    return state


def write_seed_result(seed_dir: str | Path, df: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a finished seed's rows (``result.parquet`` + sidecar ``result.json``) atomically."""
    return write_checked_parquet(Path(seed_dir) / "result.parquet", df, meta)


def run(experiment: str | ModuleType, *, seeds: Iterable[int], out_dir: str | Path, profile: str | None = None,
        overrides: Mapping[str, Any] | None = None, progress: bool = True, report: bool = True,
        overwrite_config: bool = False, allow_module: str | None = None, batched: bool = True) -> Path:
    """Run ``experiment`` for every seed into ``out_dir``; returns the run directory.

    Every setting is validated before any training starts. Finished seeds are
    skipped (resume); unfinished ones continue from their checkpoints. The
    directory is locked while the run goes on: a second run on the same
    directory is refused with :class:`ibscope.store.DirectoryLocked`.
    ``allow_module`` is the opt-in for a user experiment module (see
    :func:`load_experiment`). With ``batched`` (default) an experiment that
    offers ``run_seeds(config, seeds, out_dir, *, progress)`` (tishby, iiw, lagrangian) trains
    all unfinished seeds as one batched network (``batch_<hash>/`` holds its
    checkpoint); each seed's result is written as by ``run_seed``. The batch
    is recorded in ``batches.json`` before it starts, and a resumed run trains
    the recorded batch again as a whole (same seeds, same order, from its own
    checkpoint), so the table after an interruption equals the uninterrupted
    run's (docs/sweeps.md, "What resume guarantees").
    """
    mod = load_experiment(experiment, allow_module=allow_module)
    config = resolve_config(mod, profile=profile, overrides=overrides)
    resolve_execution(config)  # an unavailable device fails here, before any work
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("'seeds' is empty: give at least one seed.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"'out_dir' must be a directory, but '{out}' is a file.")
    record = config_record(mod, config)
    with DirectoryLock(out, what="run"):
        _check_run_config(out, record, overwrite_config)
        atomic_write_json(out / "config.json", record)
        with execution(config) as resolved:  # the device resolved and the threads set, once
            _run_seeds(mod, resolved, seeds, out, record["config_hash"], progress, batched)
        collect_results(out)
        if report:
            build_run_report(out)
    return out


def _check_run_config(out: Path, record: Mapping[str, Any], overwrite_config: bool) -> None:
    cfg_path = out / "config.json"
    if not cfg_path.exists():
        return
    if overwrite_config:
        _set_aside(out, record)
        return
    old = read_json(cfg_path, what="the run's config", hint=_CONFIG_HINT)
    if old.get("config_hash") != record["config_hash"]:
        raise RunConfigMismatch(
            f"'{out}' holds a run of another configuration (hash {old.get('config_hash')} vs "
            f"{record['config_hash']}). Use a new --out directory, or overwrite_config=True "
            f"(CLI: --overwrite-config) to start over deliberately."
        )


def _set_aside(out: Path, record: Mapping[str, Any]) -> None:
    """Starting over with other settings: the old seeds' folders move to ``replaced_<old hash>/``.

    Their results and intermediate checkpoints are kept, but no checkpoint of
    the old settings can be resumed under the new ones. Nothing moves when the
    hash is unchanged or unknown (a damaged ``config.json``: then the result
    sidecars' hashes decide).
    """
    try:
        old = read_json(out / "config.json", what="the run's config").get("config_hash")
    except (OSError, ValueError):
        return
    if not isinstance(old, str) or old == record["config_hash"]:
        return
    dirs = [p for p in sorted(out.glob("seed_*")) + sorted(out.glob("batch_*")) if p.is_dir() and not p.is_symlink()]
    if not dirs:
        return
    dest, n = out / f"replaced_{safe_name(old, what='config hash')}", 1
    while dest.exists():
        dest, n = out / f"replaced_{safe_name(old, what='config hash')}_{n}", n + 1
    dest.mkdir()
    for p in dirs:
        p.rename(dest / p.name)
    log.info("Settings changed (overwrite_config): the folders of the old settings moved to %s", dest)


_CONFIG_KEYS = {"experiment": str, "config": dict, "config_hash": str}
_CONFIG_HINT = ("Restore it from a copy, or start over with overwrite_config=True (CLI: --overwrite-config), "
                "which rewrites it (seeds finished under another configuration are then recomputed).")


_BATCHES_HINT = ("Delete it and run again: the unfinished seeds are then planned afresh (an interrupted batch may "
                 "then start over instead of resuming from its checkpoint).")


def _read_run_batches(out: Path) -> list[dict[str, Any]]:
    """The run's persisted seed-batching plan (``batches.json``): ``[{"name", "seeds", "config_hash"}]``.

    ``name`` is the batch's directory (``batch_<hash>``), or None for a seed
    planned to run alone.
    """
    path = out / "batches.json"
    if not path.is_file():
        return []
    data = read_json(path, what="the run's batch plan", hint=_BATCHES_HINT, required={"batches": list})
    out_list = []
    for b in data["batches"]:
        name = b.get("name") if isinstance(b, dict) else None
        seeds = b.get("seeds") if isinstance(b, dict) else None
        if not (((isinstance(name, str) and name.startswith("batch_") and "/" not in name and "\\" not in name
                  and "\0" not in name and isinstance(seeds, list) and len(seeds) > 1)
                 or (name is None and isinstance(seeds, list) and len(seeds) == 1))
                and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
                and len(set(seeds)) == len(seeds) and isinstance(b.get("config_hash"), str)):
            raise DamagedFile(f"The run's batch plan '{path}' is damaged: the entry {b!r} is not a batch record. "
                              f"{_BATCHES_HINT}")
        out_list.append({"name": name, "seeds": list(seeds), "config_hash": b["config_hash"]})
    return out_list


def _plan_run_batches(out: Path, todo: list[int], chash: str) -> tuple[list[tuple[str, list[int]]], list[int]]:
    """(batches to run, seeds to run alone): recorded batches first, the rest as one new batch, recorded.

    A batch recorded in ``batches.json`` (for this config hash) that holds an
    unfinished seed runs again as a whole -- the same seeds in the same order
    in the same directory, so from its own checkpoint -- even if some of its
    seeds finished (a run killed between writing two seeds' results) or the
    run now asks for fewer or more seeds; a seed recorded to run alone runs
    alone (from its checkpoint in ``seed_<s>/``). The unfinished seeds no
    record holds form one new batch (two or more seeds) or run alone (one),
    recorded before they start.
    """
    everything = _read_run_batches(out)
    covered: set[int] = set()
    kept, runs, alone = [], [], []
    for b in everything:
        if b["config_hash"] != chash or covered.intersection(b["seeds"]):
            continue
        covered.update(b["seeds"])
        kept.append(b)
        if set(todo).intersection(b["seeds"]):
            if b["name"] is None:
                alone += b["seeds"]
            else:
                runs.append((b["name"], b["seeds"]))
    rest = [s for s in todo if s not in covered]
    if len(rest) > 1:
        # its directory is named by the seeds it holds (as before the plan was recorded)
        name = f"batch_{config_hash({'seeds': rest, 'config_hash': chash})}"
        kept.append({"name": name, "seeds": rest, "config_hash": chash})
        runs.append((name, rest))
    elif rest:
        kept.append({"name": None, "seeds": rest, "config_hash": chash})
        alone += rest
    if rest:
        others = [b for b in everything if b["config_hash"] != chash]  # other configs' plans stay
        atomic_write_json(out / "batches.json", {"batches": kept + others})
    return runs, alone


def _run_seeds(mod: Experiment, config: Any, seeds: list[int], out: Path, chash: str, progress: bool,
               batched: bool = True) -> None:
    from tqdm.auto import tqdm

    expect = {"config_hash": chash}
    todo = [s for s in seeds if seed_result_state(out / f"seed_{s}", expect=expect) != "ok"]
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=f"{mod.NAME} seeds",
               unit="seed", disable=not progress, dynamic_ncols=True)
    try:
        if batched and callable(getattr(mod, "run_seeds", None)):
            # the batches are planned once (batches.json): a resumed run trains the same batches
            batches, todo = _plan_run_batches(out, todo, chash)
            for name, batch in batches:
                frames = mod.run_seeds(config, batch, out / name, progress=progress)
                for seed in batch:
                    if seed in seeds and not seed_result_done(out / f"seed_{seed}", expect=expect):
                        write_seed_result(out / f"seed_{seed}", frames[seed], {"seed": seed, "config_hash": chash})
                        bar.update(1)
        for seed in todo:
            seed_dir = out / f"seed_{seed}"
            df = run_one_seed(mod, config, seed, seed_dir, progress=progress)
            write_seed_result(seed_dir, df, {"seed": seed, "config_hash": chash})
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        log.warning("Interrupted: finished seeds and every snapshot so far are kept in %s; "
                    "run the same command again to resume.", out)
        raise
    bar.close()


def run_one_seed(mod: Experiment, config: Any, seed: int, seed_dir: str | Path, *, progress: bool = False
                 ) -> pd.DataFrame:
    """The rows of one seed, computed in ``seed_dir`` (the runner's per-seed path; no result cache).

    An experiment that declares its training (``build`` / ``rows``, see
    :class:`ibscope.experiments.Setup`) is trained here by
    :func:`ibscope.experiments.train_seed`: its ``build``, then
    :func:`ibscope.training.fit` with the runner's checkpoint folder
    (``seed_dir``), device, threads, progress bar and minibatch seed, then its
    ``rows``. Any other experiment computes the seed in its own ``run_seed``.
    """
    if has_build(mod):
        return train_seed(mod, config, seed, seed_dir, progress=progress)
    return mod.run_seed(config, seed, seed_dir, progress=progress)


def collect_results(run_dir: str | Path) -> pd.DataFrame:
    """Concatenate the finished seeds of a run into ``results.parquet`` (atomically) and return it.

    Every row gets the run's ``run_id`` (the directory name) and ``config_hash``
    as its first columns. A seed table that has a column of one of these names
    with other values (e.g. an experiment's own hash of its settings) keeps it
    as ``experiment_<name>``. Seeds finished under another configuration of
    the directory are left out.
    """
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json", what="the run's config", hint=_CONFIG_HINT, required=_CONFIG_KEYS)
    expect = {"config_hash": cfg["config_hash"]}
    done = []
    for seed_dir in sorted(run_dir.glob("seed_*"), key=lambda p: (len(p.name), p.name)):
        state, reason = checked_parquet_state(seed_dir / "result.parquet", expect=expect)
        if state == "damaged":  # never drop a finished seed's rows without a word
            raise DamagedFile(
                f"The result of {seed_dir.name} of the run '{run_dir}' is damaged: {reason}. Recompute that seed: "
                f"run the experiment into this directory again with the same settings (ibscope run ... --out "
                f"{run_dir}): a damaged seed is recomputed, the finished ones are kept.")
        if state == "ok":
            done.append(seed_dir / "result.parquet")
    cols = {"run_id": run_dir.resolve().name, "config_hash": cfg.get("config_hash")}
    path = run_dir / "results.parquet"
    rows = concat_parquet_files([(p, cols) for p in done], path, identity=cols)
    return pd.read_parquet(path) if rows else pd.DataFrame()


def build_run_report(run_dir: str | Path) -> Path:
    """(Re)build the figures and ``report.html`` of an experiment run directory; returns the report path.

    Collects the finished seeds (:func:`collect_results`), calls the
    experiment's ``plot(results, run_dir)`` and, if it has one,
    ``summarize(results)``, and renders them with the run's configuration
    (:func:`ibscope.report.render_report`). Rows with diagnostic flags (a
    non-empty ``flags`` column) are listed in their own table.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not an experiment run directory (no config.json); "
                                f"argument 'run_dir'.")
    record = read_json(cfg_path, what="the run's config", hint=_CONFIG_HINT, required=_CONFIG_KEYS)
    mod = load_experiment(record["experiment"])
    results = collect_results(run_dir)
    if results.empty:
        raise ValueError(f"'{run_dir}' has no finished seed yet; nothing to report.")
    figures = mod.plot(results, run_dir)
    summary = mod.summarize(results) if hasattr(mod, "summarize") else pd.DataFrame()
    n_seeds = results["seed"].nunique() if "seed" in results.columns else 1
    unit = results["unit"].iloc[0] if "unit" in results.columns else "unit not recorded"
    sections = [Section("Figures", figures=[Path(p) for p in figures])]
    if len(summary):
        sections.append(Section("Summary", f"The experiment's own summary over {n_seeds} seed(s) (see "
                                f"'{mod.__name__}.summarize' for its intervals).", tables=[summary]))
    flagged = flagged_estimates(results)
    if len(flagged):
        sections.append(Section("Flagged estimates", f"Rows with diagnostic flags (first {len(flagged)}).",
                                tables=[flagged]))
    sections.append(Section("Results", f"Tidy results: results.parquet ({len(results)} rows)."))
    name, rid = html.escape(str(record["experiment"])), html.escape(run_dir.name)
    return render_report(
        run_dir / "report.html", title=f"ibscope report: {run_dir.name}",
        heading_html=f"<h1>ibscope: {name} run <code>{rid}</code></h1>",
        intro=f"{n_seeds} seed(s); information in {unit}; config hash {record['config_hash']}.",
        sections=sections, settings=record["config"])
