"""Run an experiment for several seeds into one run directory, resumably.

Layout of a run directory::

    config.json          experiment name, resolved config, its hash
    seed_<s>/            everything one seed writes (checkpoints, snapshots, partial tables)
    seed_<s>/result.parquet   the seed's finished rows (present = the seed is done)
    results.parquet      all finished seeds, with run_id and config_hash columns
    *.png, report.html   figures and the report

A finished seed is never recomputed; an unfinished one resumes from its own
checkpoint. Starting a run in a directory that holds a different config is
refused (pass ``overwrite_config=True`` to start over deliberately).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from ..store import atomic_write_json, atomic_write_parquet, config_hash, read_parquet_files
from . import get as get_experiment

__all__ = ["resolve_config", "run", "collect_results", "RunConfigMismatch"]

log = logging.getLogger(__name__)


class RunConfigMismatch(ValueError):
    """The run directory already holds results of a different configuration."""


def resolve_config(experiment: str | ModuleType, *, profile: str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> Any:
    """Build the experiment's Config from its defaults, a named profile and overrides."""
    mod = get_experiment(experiment) if isinstance(experiment, str) else experiment
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


def _config_record(mod: ModuleType, config: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {"experiment": mod.NAME, "config": cfg, "config_hash": config_hash({"experiment": mod.NAME, **cfg})}


def run(experiment: str, *, seeds: Iterable[int], out_dir: str | Path, profile: str | None = None,
        overrides: Mapping[str, Any] | None = None, progress: bool = True, report: bool = True,
        overwrite_config: bool = False) -> Path:
    """Run ``experiment`` for every seed into ``out_dir``; returns the run directory.

    Every setting is validated before any training starts. Finished seeds are
    skipped (resume); unfinished ones continue from their checkpoints.
    """
    mod = get_experiment(experiment)
    config = resolve_config(mod, profile=profile, overrides=overrides)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("'seeds' is empty: give at least one seed.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = _config_record(mod, config)
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

    todo = [s for s in seeds if not (out / f"seed_{s}" / "result.parquet").exists()]
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=f"{mod.NAME} seeds",
               unit="seed", disable=not progress, dynamic_ncols=True)
    try:
        for seed in todo:
            seed_dir = out / f"seed_{seed}"
            df = mod.run_seed(config, seed, seed_dir, progress=progress)
            atomic_write_parquet(seed_dir / "result.parquet", df)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        log.warning("Interrupted: finished seeds and every snapshot so far are kept in %s; "
                    "run the same command again to resume.", out)
        raise
    bar.close()
    results = collect_results(out)
    if report:
        from ..report import build_report

        build_report(out)
    return out


def collect_results(run_dir: str | Path) -> pd.DataFrame:
    """Concatenate the finished seeds of a run into ``results.parquet`` (atomically) and return it."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    results = read_parquet_files(run_dir.glob("seed_*/result.parquet"))
    if len(results):
        results.insert(0, "run_id", run_dir.resolve().name)
        results.insert(1, "config_hash", cfg["config_hash"])
        atomic_write_parquet(run_dir / "results.parquet", results)
    return results
