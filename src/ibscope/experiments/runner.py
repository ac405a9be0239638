"""Run an experiment for several seeds into one run directory, resumably.

Layout of a run directory::

    config.json          experiment name, resolved config, its hash
    seed_<s>/            everything one seed writes (checkpoints, snapshots, partial tables)
    seed_<s>/result.parquet   the seed's finished rows
    seed_<s>/result.json      its sidecar (rows, sha256): the seed is done iff both match
    results.parquet      all finished seeds, with run_id and config_hash columns
    *.png, report.html   figures and the report

A finished seed is never recomputed; an unfinished one resumes from its own
checkpoint. Starting a run in a directory that holds a different config is
refused (pass ``overwrite_config=True`` to start over deliberately).

The pieces shared with :mod:`ibscope.sweep` live here: :func:`load_experiment`,
:func:`resolve_config`, :func:`config_record` and :func:`seed_result_done`.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from ..report import Section, flagged_estimates, render_report
from ..store import (
    atomic_write_json,
    atomic_write_parquet,
    checked_parquet_ok,
    config_hash,
    read_parquet_files,
    write_checked_parquet,
)
from . import available
from . import get as get_experiment

__all__ = ["resolve_config", "run", "collect_results", "build_run_report", "RunConfigMismatch", "load_experiment",
           "experiment_key", "config_record", "seed_result_done", "write_seed_result"]

_CONTRACT = ("NAME", "Config", "run_seed")

log = logging.getLogger(__name__)


class RunConfigMismatch(ValueError):
    """The run directory already holds results of a different configuration."""


def load_experiment(experiment: str | ModuleType) -> ModuleType:
    """An experiment module: a registry name (``tishby``), or an importable module path.

    A module path (``mypackage.my_experiment``) loads a user's own module; it
    must follow the contract of :mod:`ibscope.experiments` (``NAME``,
    ``Config``, ``run_seed``, ``plot``).
    """
    if isinstance(experiment, ModuleType):
        mod = experiment
    elif isinstance(experiment, str) and experiment not in available() and _importable(experiment):
        mod = importlib.import_module(experiment)
    else:
        return get_experiment(experiment)
    missing = [a for a in _CONTRACT if not hasattr(mod, a)]
    if missing:
        raise ValueError(f"Module {mod.__name__!r} is not an experiment: it lacks {missing} "
                         f"(see ibscope.experiments for the contract).")
    return mod


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def experiment_key(mod: ModuleType) -> str:
    """The name that loads ``mod`` again (registry name, or its dotted module path)."""
    inside = mod.__name__.rpartition(".")[0] == __package__
    return mod.NAME if inside and mod.NAME in available() else mod.__name__


def resolve_config(experiment: str | ModuleType, *, profile: str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """Build the experiment's Config from its defaults, a named profile and overrides."""
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
    config = mod.Config(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def config_record(mod: ModuleType, config: Any) -> dict[str, Any]:
    """``{"experiment", "config" (plain JSON), "config_hash"}`` of a resolved config."""
    cfg = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    name = experiment_key(mod)
    return {"experiment": name, "config": cfg, "config_hash": config_hash({"experiment": name, **cfg})}


def seed_result_done(seed_dir: str | Path, *, expect: Mapping[str, Any] | None = None) -> bool:
    """True iff ``seed_dir/result.parquet`` is complete (checked against its sidecar)."""
    return checked_parquet_ok(Path(seed_dir) / "result.parquet", expect=expect)


def write_seed_result(seed_dir: str | Path, df: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a finished seed's rows (``result.parquet`` + sidecar ``result.json``) atomically."""
    return write_checked_parquet(Path(seed_dir) / "result.parquet", df, meta)


def run(experiment: str, *, seeds: Iterable[int], out_dir: str | Path, profile: str | None = None,
        overrides: Mapping[str, Any] | None = None, progress: bool = True, report: bool = True,
        overwrite_config: bool = False) -> Path:
    """Run ``experiment`` for every seed into ``out_dir``; returns the run directory.

    Every setting is validated before any training starts. Finished seeds are
    skipped (resume); unfinished ones continue from their checkpoints.
    """
    mod = load_experiment(experiment)
    config = resolve_config(mod, profile=profile, overrides=overrides)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("'seeds' is empty: give at least one seed.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = config_record(mod, config)
    cfg_path = out / "config.json"
    if cfg_path.exists() and not overwrite_config:
        old = json.loads(cfg_path.read_text())
        if old.get("config_hash") != record["config_hash"]:
            raise RunConfigMismatch(
                f"'{out}' holds a run of another configuration (hash {old.get('config_hash')} vs "
                f"{record['config_hash']}). Use a new --out directory, or overwrite_config=True "
                f"(CLI: --overwrite-config) to start over deliberately."
            )
    atomic_write_json(cfg_path, record)

    from tqdm.auto import tqdm

    todo = [s for s in seeds if not seed_result_done(out / f"seed_{s}")]
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=f"{mod.NAME} seeds",
               unit="seed", disable=not progress, dynamic_ncols=True)
    try:
        for seed in todo:
            seed_dir = out / f"seed_{seed}"
            df = mod.run_seed(config, seed, seed_dir, progress=progress)
            write_seed_result(seed_dir, df, {"seed": seed, "config_hash": record["config_hash"]})
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        log.warning("Interrupted: finished seeds and every snapshot so far are kept in %s; "
                    "run the same command again to resume.", out)
        raise
    bar.close()
    collect_results(out)
    if report:
        build_run_report(out)
    return out


def collect_results(run_dir: str | Path) -> pd.DataFrame:
    """Concatenate the finished seeds of a run into ``results.parquet`` (atomically) and return it."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    done = [p for p in run_dir.glob("seed_*/result.parquet") if seed_result_done(p.parent)]
    results = read_parquet_files(done)
    if len(results):
        results.insert(0, "run_id", run_dir.resolve().name)
        results.insert(1, "config_hash", cfg["config_hash"])
        atomic_write_parquet(run_dir / "results.parquet", results)
    return results


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
    record = json.loads(cfg_path.read_text())
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
